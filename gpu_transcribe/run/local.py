"""``gpu-transcribe run --local``: transcribe on this machine with the same engine the instance runs.

Orchestration only: validates the request, finds the audio, checks the output directory, runs the engine
(:mod:`gpu_transcribe.run.engine_runner`) and returns a result. No printing; progress goes to a callback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpu_transcribe.errors import InputError, InterruptedRunError, LocalRunInterruptedError, SettingsError
from gpu_transcribe.run.engine_runner import EngineRequest, EngineRun, EventCallback, run_engine_locally
from gpu_transcribe.run.inputs import AudioInput, collect_audio, validate_options
from gpu_transcribe.run.outputs import (
    ExistingPolicy,
    check_existing,
    output_destinations,
    prepare_output_dir,
    problems_fail_run,
)
from gpu_transcribe_engine.options import TranscribeOptions

if TYPE_CHECKING:
    from gpu_transcribe.correct.config import CorrectionConfig, CorrectionResult


@dataclass(frozen=True)
class LocalRunRequest:
    """What to transcribe locally.

    Attributes:
        paths: files and directories as the user gave them.
        output_dir: where every output goes, or ``None`` to write each output beside its input.
        formats: format names (``txt``, ``json``, ``srt``, ``vtt``).
        options: transcription options (validated here).
        model: Hugging Face id or a local model directory.
        revision: model revision or ``None``.
        device: ``auto``, ``cpu`` or ``cuda``.
        existing: what to do with an input whose output exists (see :data:`ExistingPolicy`).
        correct: with ``--correct``, how to correct each finished transcript through Bedrock (the files
            ``<stem>.corrected.<fmt>`` are written beside the raw ones); ``None`` for no correction.
    """

    paths: tuple[str, ...]
    output_dir: Path | None
    formats: tuple[str, ...]
    options: TranscribeOptions
    model: str
    revision: str | None = None
    device: str = "auto"
    existing: ExistingPolicy = "refuse"
    correct: CorrectionConfig | None = None


@dataclass(frozen=True)
class LocalRunResult:
    """The outcome of a local run.

    Attributes:
        inputs: the files that were given to the engine.
        input_problems: paths that could not be used, and inputs passed over because an output exists, one
            error each (the other files went on).
        engine: the engine's result, or ``None`` if there was no file to transcribe.
        skipped: inputs passed over quietly because an output exists (``--skip-existing``).
        corrections: with ``--correct``, one result per transcribed file, in the engine's order (a failed
            correction never fails the run).
    """

    inputs: tuple[AudioInput, ...]
    input_problems: tuple[InputError, ...]
    engine: EngineRun | None
    skipped: tuple[AudioInput, ...] = ()
    corrections: tuple[CorrectionResult, ...] = ()

    @property
    def ok(self) -> bool:
        """``True`` if every file given to the engine was transcribed and no problem fails the run (see
        :func:`~gpu_transcribe.run.outputs.problems_fail_run`)."""
        if problems_fail_run(self.input_problems):
            return False
        return self.engine is None or not self.engine.failed


def resolve_model(model: str) -> str:
    """A model that names an existing local directory becomes its absolute path; else it is a hub id."""
    path = Path(os.path.expanduser(model))
    return str(path.resolve()) if path.is_dir() else model


def check_model(model: str, source: str) -> None:
    """Refuse a ``model`` that is written as a path (``/...``, ``./...``, ``~/...``, or more than one ``/``,
    which no Hugging Face id has) but is not a directory; anything else is left to the engine (a hub id).

    Raises:
        SettingsError: naming the model, where it came from and what to give instead (exit status 2).
    """
    looks_like_path = (
        model.startswith(("/", ".", "~")) or model.count("/") > 1 or os.sep in model.replace("/", "")
    )
    path = Path(os.path.expanduser(model))
    if (looks_like_path or path.exists()) and not path.is_dir():
        reason = "is not a directory" if path.exists() else "no such directory"
        raise SettingsError(
            "model",
            source,
            f"model (from {source}): {model}: {reason}; give a model directory (with config.json) or a "
            "Hugging Face id such as KBLab/kb-whisper-small",
            "a model directory or a Hugging Face id",
        )


def run_local(request: LocalRunRequest, on_event: EventCallback | None = None) -> LocalRunResult:
    """Transcribe ``request.paths`` on this machine.

    Returns:
        The result; check ``result.ok``. Unusable paths and files that failed are listed in it while the
        other files are transcribed and written.

    Raises:
        SettingsError: a bad option (before anything runs).
        InputError: two inputs would write the same output (before anything runs).
        OutputDirError: the output directory cannot be written (before anything runs; exit status 2).
        EngineError: the engine could not run at all (not installed, model not found, crashed).
        LocalRunInterruptedError: SIGINT, SIGTERM or SIGHUP; the engine was stopped, the transcripts
            finished before are kept and listed in the error (exit status 130/143/129).
    """
    options, formats = validate_options(request.options, request.formats)
    out_dir = prepare_output_dir(request.output_dir) if request.output_dir is not None else None
    collected = collect_audio(request.paths)
    destinations = output_destinations(collected.files, formats, request.output_dir)
    existing = check_existing(collected.files, destinations, request.existing)
    files = tuple(collected.files[i] for i in existing.todo)
    problems = collected.problems + existing.refused
    skipped = tuple(collected.files[i] for i in existing.skipped)
    if not files:
        return LocalRunResult(inputs=(), input_problems=problems, engine=None, skipped=skipped)
    engine_request = EngineRequest(
        audio=tuple(str(f.path) for f in files),
        formats=formats,
        options=options,
        model=resolve_model(request.model),
        revision=request.revision,
        out_dir=str(out_dir) if out_dir is not None else None,
        device=request.device,
    )
    engine = _run_engine_until_signal(engine_request, files, problems, on_event)
    corrections: tuple[CorrectionResult, ...] = ()
    if request.correct is not None:
        from gpu_transcribe.correct.correct import correct_outputs

        done = [f.outputs for f in engine.files if f.ok]
        corrections = correct_outputs(done, formats, request.correct)
    return LocalRunResult(
        inputs=files, input_problems=problems, engine=engine, skipped=skipped, corrections=corrections
    )


def _run_engine_until_signal(
    request: EngineRequest,
    files: tuple[AudioInput, ...],
    problems: tuple[InputError, ...],
    on_event: EventCallback | None,
) -> EngineRun:
    """:func:`run_engine_locally`, with SIGINT/SIGTERM/SIGHUP turned into a
    :class:`LocalRunInterruptedError` that lists the outputs written so far and the inputs not done."""
    from gpu_transcribe.instance.lifecycle import TeardownGuard

    written: dict[int, list[Path]] = {}

    def track(event: dict[str, Any]) -> None:
        if event.get("event") == "file_done":
            written[int(event["index"])] = [Path(str(p)) for p in event.get("outputs", {}).values()]
        if on_event is not None:
            on_event(event)

    try:
        with TeardownGuard(lambda: None):  # the engine subprocess is stopped by run_engine_locally itself
            return run_engine_locally(request, track)
    except InterruptedRunError as exc:
        raise LocalRunInterruptedError(
            exc.signal_name,
            exc.exit_code,
            outputs=[p for i in sorted(written) for p in written[i]],
            not_done=[f.path for i, f in enumerate(files) if i not in written],
            problems=problems,
        ) from exc
