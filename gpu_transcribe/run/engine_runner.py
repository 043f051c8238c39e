"""Run the engine (``python -m gpu_transcribe_engine transcribe``) and turn its JSON-lines events into a
result.

The same :class:`EventCollector` serves a local run (a subprocess here, :func:`run_engine_locally`) and a
cloud run (the same command over SSH on the instance): both read the engine's stdout line by line. No
printing here: each event goes to the caller's ``on_event`` callback, which the CLI turns into progress.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gpu_transcribe_engine as remote
from gpu_transcribe.errors import EngineError
from gpu_transcribe_engine.options import TranscribeOptions
from gpu_transcribe_engine.protocol import EXIT_FATAL, EXIT_OK, EXIT_SOME_FAILED, parse_line

EventCallback = Callable[[dict[str, Any]], None]

#: Sent to ``on_event`` by the runner itself (not the engine) once the engine process has started, so a
#: display can start then: errors found before it (bad options, unwritable output) print alone.
ENGINE_STARTED = "engine_started"

#: Lines of the engine's stderr kept to explain a failure.
STDERR_TAIL_LINES = 30


@dataclass(frozen=True)
class EngineRequest:
    """One invocation of the engine over a batch of files (one model load).

    Attributes:
        audio: audio paths as the engine will see them (local paths, or paths on the instance).
        formats: output formats, e.g. ``("txt", "json")``.
        options: transcription options (validated).
        model: Hugging Face id or a model directory as the engine will see it.
        revision: model revision, or ``None`` for the default branch.
        out_dir: directory for every output, or ``None`` to write each output beside its input.
        device: ``auto``, ``cpu`` or ``cuda``.
    """

    audio: tuple[str, ...]
    formats: tuple[str, ...]
    options: TranscribeOptions
    model: str
    revision: str | None = None
    out_dir: str | None = None
    device: str = "auto"

    def argv(self, python: str) -> list[str]:
        """The engine's command line, one argument per item (quote each for a remote shell)."""
        argv = [python, "-m", "gpu_transcribe_engine", "transcribe", *self.audio]
        argv += ["--out", self.out_dir] if self.out_dir is not None else ["--beside-input"]
        argv += ["--format", ",".join(self.formats)]
        argv += ["--language", self.options.language, "--task", self.options.task]
        argv += ["--beam-size", str(self.options.beam_size), "--algorithm", self.options.algorithm]
        if self.options.batch_size is not None:
            argv += ["--batch-size", str(self.options.batch_size)]
        argv += ["--word-timestamps"] if self.options.word_timestamps else []
        argv += ["--prompt", self.options.prompt] if self.options.prompt else []
        for flag, value in (
            ("--max-line-width", self.options.max_line_width),
            ("--max-line-count", self.options.max_line_count),
            ("--max-cue-duration", self.options.max_cue_s),
        ):
            argv += [flag, str(value)] if value is not None else []
        argv += ["--model", self.model, "--device", self.device]
        if self.revision:
            argv += ["--revision", self.revision]
        return argv


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one file.

    Attributes:
        audio: the path as the engine saw it.
        ok: ``True`` if every output was written.
        duration_s: audio duration in seconds (``None`` if the file failed).
        decode_s: seconds spent decoding the audio.
        transcribe_s: seconds spent transcribing it.
        language: the language used or detected.
        segment_count: number of segments.
        outputs: format -> path written (as the engine saw it).
        error_code: the engine's error code when ``ok`` is ``False`` (see ``gpu_transcribe_engine.errors``).
        message: the engine's one-line reason when ``ok`` is ``False``.
    """

    audio: str
    ok: bool
    duration_s: float | None = None
    decode_s: float | None = None
    transcribe_s: float | None = None
    language: str = ""
    segment_count: int = 0
    outputs: dict[str, str] = field(default_factory=dict)
    error_code: str = ""
    message: str = ""

    @property
    def real_time_factor(self) -> float | None:
        """Transcription seconds / audio seconds, or ``None`` if unknown."""
        if self.duration_s and self.transcribe_s is not None:
            return self.transcribe_s / self.duration_s
        return None


@dataclass(frozen=True)
class EngineRun:
    """The result of one engine invocation.

    Attributes:
        model, revision, device, dtype: what the engine loaded and where.
        load_s: model load seconds.
        algorithm: the algorithm that ran (``auto`` resolved).
        batch_size: the batch size that ran (resolved).
        files: one outcome per requested file, in request order.
        elapsed_s: wall seconds of the whole invocation, process start included.
    """

    model: str
    revision: str | None
    device: str
    dtype: str
    load_s: float
    algorithm: str
    batch_size: int | None
    files: tuple[FileOutcome, ...]
    elapsed_s: float

    @property
    def failed(self) -> tuple[FileOutcome, ...]:
        """The outcomes that are not ``ok``."""
        return tuple(f for f in self.files if not f.ok)


class EventCollector:
    """Builds an :class:`EngineRun` from the engine's stdout lines.

    Feed every stdout line to :meth:`feed_line`; call :meth:`finish` with the exit status when the engine
    has ended. Lines that are not protocol events are ignored (a library may print to stdout).
    """

    def __init__(self, audio: Sequence[str], on_event: EventCallback | None = None) -> None:
        self._audio = list(audio)
        self._on_event = on_event
        self._loaded: dict[str, Any] = {}
        self._outcomes: dict[int, FileOutcome] = {}
        self._fatal: dict[str, Any] | None = None
        self._all_done = False
        self._started = time.monotonic()

    def feed_line(self, line: str) -> None:
        """Take one stdout line of the engine; forward its event to ``on_event``."""
        event = parse_line(line)
        if event is None:
            return
        kind = event["event"]
        if kind == "model_loaded":
            self._loaded = event
        elif kind == "file_done":
            self._outcomes[int(event["index"])] = FileOutcome(
                audio=str(event["audio"]),
                ok=True,
                duration_s=float(event["duration_s"]),
                decode_s=float(event.get("decode_s", 0.0)),
                transcribe_s=float(event["transcribe_s"]),
                language=str(event.get("language", "")),
                segment_count=int(event.get("segments", 0)),
                outputs={str(k): str(v) for k, v in event.get("outputs", {}).items()},
            )
        elif kind == "file_failed":
            self._outcomes[int(event["index"])] = FileOutcome(
                audio=str(event["audio"]),
                ok=False,
                error_code=str(event.get("code", "engine_error")),
                message=str(event.get("message", "failed")),
            )
        elif kind == "fatal":
            self._fatal = event
        elif kind == "all_done":
            self._all_done = True
        if self._on_event is not None:
            self._on_event(event)

    @property
    def completed(self) -> dict[int, FileOutcome]:
        """The outcomes received so far (``file_done``/``file_failed``), by request index: what is known
        when the engine cannot finish (the instance was lost)."""
        return dict(self._outcomes)

    @property
    def loaded(self) -> dict[str, Any]:
        """The ``model_loaded`` event, or ``{}`` before it."""
        return dict(self._loaded)

    def finish(self, returncode: int, stderr_tail: str = "") -> EngineRun:
        """Conclude after the engine exited with ``returncode``.

        Raises:
            EngineError: the engine reported a fatal error (code from the engine, e.g. ``model_not_found``,
                ``bad_option``), or it ended without ``all_done`` (code ``crashed``; the message carries the
                exit status and the stderr tail holds the engine's last words).
        """
        if self._fatal is not None:
            raise EngineError(
                str(self._fatal.get("code", "engine_error")),
                str(self._fatal.get("message", "the engine failed")),
                stderr_tail,
            )
        if not self._all_done or returncode not in (EXIT_OK, EXIT_SOME_FAILED):
            last = stderr_tail.strip().splitlines()[-1] if stderr_tail.strip() else "no message"
            raise EngineError(
                "crashed",
                f"the engine stopped unexpectedly (exit status {returncode}): {last}",
                stderr_tail,
            )
        files = tuple(
            self._outcomes.get(i, FileOutcome(audio=a, ok=False, error_code="missing", message="no result"))
            for i, a in enumerate(self._audio)
        )
        return EngineRun(
            model=str(self._loaded.get("model", "")),
            revision=self._loaded.get("revision"),
            device=str(self._loaded.get("device", "")),
            dtype=str(self._loaded.get("dtype", "")),
            load_s=float(self._loaded.get("load_s", 0.0)),
            algorithm=str(self._loaded.get("algorithm", "")),
            batch_size=self._loaded.get("batch_size"),
            files=files,
            elapsed_s=time.monotonic() - self._started,
        )


def _engine_env() -> dict[str, str]:
    """Environment for the engine subprocess: ``remote`` importable even from a source checkout."""
    env = dict(os.environ)
    root = str(Path(remote.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def run_engine_locally(
    request: EngineRequest,
    on_event: EventCallback | None = None,
    python: str = sys.executable,
) -> EngineRun:
    """Run the engine as a subprocess of this Python and collect its result.

    Args:
        request: what to transcribe and how.
        on_event: called with each protocol event (a dict; see ``gpu_transcribe_engine.protocol``) as it
        arrives.
        python: the interpreter to run the engine with.

    Returns:
        The run's result; files that failed are in ``result.failed`` (the others were written).

    Raises:
        EngineError: the engine extra is not installed (code ``not_installed``), the engine reported a fatal
            error, or it crashed.
    """
    if python == sys.executable and importlib.util.find_spec("torch") is None:
        raise EngineError(
            "not_installed",
            "the local engine needs torch and transformers: pip install 'gpu-transcribe[engine]'",
        )
    collector = EventCollector(request.audio, on_event)
    stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    proc = subprocess.Popen(
        request.argv(python),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
        env=_engine_env(),
    )
    assert proc.stdout is not None and proc.stderr is not None
    if on_event is not None:
        on_event({"event": ENGINE_STARTED, "time": time.time(), "files": len(request.audio)})
    stderr_stream = proc.stderr
    reader = threading.Thread(target=lambda: stderr_tail.extend(stderr_stream), daemon=True)
    reader.start()
    try:
        for line in proc.stdout:
            collector.feed_line(line)
        returncode = proc.wait()
    finally:
        if proc.poll() is None:  # interrupted: do not leave the engine running
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            _drain_events(proc.stdout, collector)
    reader.join(timeout=5)
    return collector.finish(returncode, "".join(stderr_tail))


def _drain_events(stdout: Any, collector: EventCollector) -> None:
    """After an interruption, the events the stopped engine printed but this process had not read yet
    (a ``file_done`` for a transcript already written, say), so the run's report lists every output on
    disk. Never raises: it runs while the interruption propagates."""
    try:
        for line in stdout:
            try:
                collector.feed_line(line)
            except (KeyError, TypeError, ValueError):  # a line cut short by the stop
                continue
    except (OSError, ValueError):
        return


__all__ = [
    "ENGINE_STARTED",
    "EXIT_FATAL",
    "EngineRequest",
    "EngineRun",
    "EventCollector",
    "FileOutcome",
    "run_engine_locally",
]
