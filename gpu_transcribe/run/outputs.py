"""Where transcripts are written on this machine: one destination per input and format, no two inputs
writing the same file, and every directory proven writable before anything runs (or is paid for).

Used alike by ``run --local``, ``run --host`` and cloud runs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gpu_transcribe.errors import InputError, OutputDirError, OutputError, OutputExistsError, SettingsError
from gpu_transcribe.run.inputs import AudioInput

#: One input's outputs: format (``txt``, ``json``, ``srt``, ``vtt``) -> local path.
Destinations = dict[str, Path]

#: What to do with an input whose output already exists: ``refuse`` (report it and pass over the input, the
#: default), ``overwrite`` (``--overwrite``) or ``skip`` (``--skip-existing``: pass over it quietly).
ExistingPolicy = Literal["refuse", "overwrite", "skip"]


def existing_policy(overwrite: bool, skip_existing: bool) -> ExistingPolicy:
    """The policy for ``--overwrite`` / ``--skip-existing``.

    Raises:
        SettingsError: both were given.
    """
    if overwrite and skip_existing:
        raise SettingsError(
            "overwrite",
            "command line",
            "--overwrite and --skip-existing cannot be combined: choose one",
            "one of --overwrite, --skip-existing",
        )
    return "overwrite" if overwrite else "skip" if skip_existing else "refuse"


@dataclass(frozen=True)
class ExistingOutputs:
    """Which inputs to transcribe, given the outputs already on disk.

    Attributes:
        todo: indices of the inputs to transcribe, in input order.
        refused: one error per input passed over because an output exists (policy ``refuse``).
        skipped: indices of the inputs passed over quietly (policy ``skip``).
    """

    todo: tuple[int, ...]
    refused: tuple[OutputExistsError, ...]
    skipped: tuple[int, ...]


def check_existing(
    files: Sequence[AudioInput], destinations: Sequence[Destinations], policy: ExistingPolicy
) -> ExistingOutputs:
    """Apply ``policy`` to the inputs with an output that exists already (any of their formats)."""
    todo: list[int] = []
    refused: list[OutputExistsError] = []
    skipped: list[int] = []
    for index, (audio, outputs) in enumerate(zip(files, destinations, strict=True)):
        existing = next((p for p in outputs.values() if p.exists()), None)
        if existing is None or policy == "overwrite":
            todo.append(index)
        elif policy == "skip":
            skipped.append(index)
        else:
            refused.append(OutputExistsError(audio.path, existing))
    return ExistingOutputs(tuple(todo), tuple(refused), tuple(skipped))


def problems_fail_run(problems: Sequence[InputError]) -> bool:
    """Whether a run's input problems make it fail (exit status 1): any unusable path does; an input passed
    over because its outputs exist (:class:`OutputExistsError`, reported as skipped) does not."""
    return any(not isinstance(p, OutputExistsError) for p in problems)


def prepare_output_dir(output_dir: Path) -> Path:
    """Create ``output_dir`` if needed and prove it is writable by writing and removing a temp file.

    Returns:
        The directory, absolute.

    Raises:
        OutputDirError: it cannot be created or written; the message names it and says what to do.
    """
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=".gpu-transcribe-probe-"):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OutputDirError(
            output_dir,
            f"--output-dir {output_dir}: cannot write there ({reason}); choose a writable directory",
        ) from exc
    return output_dir.resolve()


def output_destinations(
    files: Sequence[AudioInput], formats: Sequence[str], output_dir: Path | None
) -> list[Destinations]:
    """Where each file's outputs go locally: ``output_dir/<stem>.<format>``, or beside the input.

    Returns:
        One mapping per file, in input order.

    Raises:
        InputError: two inputs would write the same output (same stem into one directory); names both.
    """
    destinations: list[Destinations] = []
    owners: dict[Path, Path] = {}
    for audio in files:
        directory = output_dir if output_dir is not None else audio.path.parent
        outputs = {fmt: directory / f"{audio.path.stem}.{fmt}" for fmt in formats}
        for path in outputs.values():
            if path in owners:
                raise InputError(
                    audio.path,
                    f"{audio.path} and {owners[path]} would both write {path}; rename one, or run them "
                    "separately",
                )
            owners[path] = audio.path
        destinations.append(outputs)
    return destinations


def check_output_dirs(destinations: Sequence[Destinations], output_dir: Path | None) -> None:
    """Prove every output directory is writable (creating ``output_dir`` if needed).

    Raises:
        OutputDirError: ``output_dir`` cannot be written (a bad option, exit status 2).
        OutputError: a directory beside the inputs cannot be written; the message says to choose
            ``--output-dir``.
    """
    if output_dir is not None:
        prepare_output_dir(output_dir)
        return
    for directory in sorted({p.parent for d in destinations for p in d.values()}):
        try:
            prepare_output_dir(directory)
        except OutputError as exc:
            raise OutputError(
                directory,
                f"{directory}: cannot write the transcripts beside the audio ({exc.__cause__ or exc}); "
                "choose a writable directory with --output-dir",
            ) from None
