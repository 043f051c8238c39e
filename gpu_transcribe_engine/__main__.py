"""``python -m gpu_transcribe_engine transcribe AUDIO...``: the engine's command line, speaking JSON lines on
stdout.

    python -m gpu_transcribe_engine transcribe AUDIO... (--out DIR | --beside-input) [--format
    txt,json,srt,vtt]
        [--language sv] [--task transcribe] [--model ID_OR_DIR] [--revision REV] [--beam-size N]
        [--batch-size N] [--algorithm auto|sequential|batched] [--device auto|cpu|cuda]
        [--decode-loop auto|eager|compiled]
        [--word-timestamps] [--prompt TEXT] [--max-line-width N] [--max-line-count M]
        [--max-cue-duration S]

Loads the model once, transcribes the files in order and writes ``<stem>.<fmt>`` per file and format:
into ``DIR`` with ``--out``, or next to each input with ``--beside-input``. Stdout carries exactly the
events of :mod:`gpu_transcribe_engine.protocol` (one JSON object a line) and nothing else: the process's file
descriptor
1 is pointed at stderr while it runs, so library prints and warnings land on stderr; events go to a
private copy of the original stdout.

Checks before the model is loaded (each a ``fatal`` event and exit 3, nothing transcribed):
options (``bad_option``: unknown language, task, algorithm or format, beam/batch size out of range, an
unusable ``--device``, two inputs that would write the same output file) and ``--out`` (``output_error``:
the directory cannot be created or written). Then a model that cannot be loaded is ``fatal``
``model_not_found``, and word timestamps asked of a model without alignment heads ``bad_option``. After
that, a file that cannot be decoded (``decode_error``), whose outputs cannot be written (``output_error``;
with ``--beside-input`` each input's own directory) or that fails otherwise (``engine_error``) is a
``file_failed`` event; the other files are still transcribed, and the exit code is 1. Nothing follows a
``fatal`` event; ``all_done`` ends every run that got past the model load.

``python -m gpu_transcribe_engine --help`` imports no torch: the heavy modules load inside the command.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

from gpu_transcribe_engine.errors import BadOptionError, EngineFailure, OutputWriteError
from gpu_transcribe_engine.options import (
    ALGORITHMS,
    DECODE_LOOPS,
    DEFAULT_LANGUAGE,
    DEFAULT_MODEL,
    DEVICES,
    FORMATS,
    TASKS,
)
from gpu_transcribe_engine.protocol import EXIT_FATAL, EXIT_OK, EXIT_SOME_FAILED, emit


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m gpu_transcribe_engine``."""
    parser = argparse.ArgumentParser(
        prog="python -m gpu_transcribe_engine",
        description="The gpu-transcribe Whisper engine. Prints JSON-lines events on stdout.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "transcribe",
        help="transcribe audio files",
        description="Transcribe audio files with one model load; events as JSON lines on stdout.",
    )
    run.add_argument("audio", nargs="+", metavar="AUDIO", help="audio files (wav, flac, mp3, ogg/opus, m4a)")
    where = run.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", metavar="DIR", help="write DIR/<stem>.<format> (created if missing)")
    where.add_argument("--beside-input", action="store_true", help="write <stem>.<format> next to each input")
    run.add_argument(
        "--format",
        default="txt,json",
        help=f"comma-separated output formats among {','.join(FORMATS)} (default: txt,json)",
    )
    run.add_argument(
        "--language", default=DEFAULT_LANGUAGE, help="Whisper language code, or auto (default: sv)"
    )
    run.add_argument("--task", default="transcribe", choices=TASKS)
    run.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"hub id or local directory (default: {DEFAULT_MODEL})"
    )
    run.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")
    run.add_argument("--beam-size", type=int, default=None, help="beams per decoding step (default: 5)")
    run.add_argument("--batch-size", type=int, default=None, help="windows per batch (default: per device)")
    run.add_argument("--algorithm", default="auto", choices=ALGORITHMS)
    run.add_argument("--device", default="auto", choices=DEVICES)
    run.add_argument(
        "--decode-loop",
        default="auto",
        choices=DECODE_LOOPS,
        help="compiled: static cache and a compiled decoding step (CUDA; pays a compile first); auto: eager",
    )
    run.add_argument("--word-timestamps", action="store_true", help="time every word (JSON: words)")
    run.add_argument("--prompt", default=None, help="text that conditions the decoding (names, jargon)")
    run.add_argument("--max-line-width", type=int, default=None, help="subtitle characters per line")
    run.add_argument("--max-line-count", type=int, default=None, help="subtitle lines per cue")
    run.add_argument("--max-cue-duration", type=float, default=None, help="subtitle seconds per cue")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (see :mod:`gpu_transcribe_engine.protocol`)."""
    args = build_parser().parse_args(argv)
    events = _private_stdout()
    _quiet_libraries()
    try:
        return _transcribe(args, events)
    finally:
        events.flush()
        if events is not sys.stdout and events is not sys.__stdout__:
            events.close()


def _transcribe(args: argparse.Namespace, events: IO[str]) -> int:
    from gpu_transcribe_engine.options import TranscribeOptions, parse_formats

    started = time.perf_counter()
    try:
        formats = parse_formats(args.format)
        fields: dict[str, Any] = {
            "language": args.language,
            "task": args.task,
            "algorithm": args.algorithm,
            "word_timestamps": args.word_timestamps,
            "prompt": args.prompt,
            "max_line_width": args.max_line_width,
            "max_line_count": args.max_line_count,
            "max_cue_s": args.max_cue_duration,
        }
        if args.beam_size is not None:
            fields["beam_size"] = args.beam_size
        if args.batch_size is not None:
            fields["batch_size"] = args.batch_size
        options = TranscribeOptions(**fields).validated()
        stems = _output_stems(args.audio, Path(args.out) if args.out else None)
    except (ValueError, BadOptionError) as exc:
        emit("fatal", events, code=BadOptionError.code, message=str(exc))
        return EXIT_FATAL
    if args.out:
        try:
            _check_writable_dir(Path(args.out))
        except OutputWriteError as exc:
            emit("fatal", events, code=exc.code, message=str(exc))
            return EXIT_FATAL

    from gpu_transcribe_engine.device import resolve_device
    from gpu_transcribe_engine.engine import WhisperEngine

    try:
        resolve_device(args.device)
    except ValueError as exc:
        emit("fatal", events, code=BadOptionError.code, message=str(exc))
        return EXIT_FATAL
    try:
        engine = WhisperEngine.load(
            args.model, revision=args.revision, device=args.device, decode_loop=args.decode_loop
        )
    except EngineFailure as exc:
        emit("fatal", events, code=exc.code, message=str(exc))
        return EXIT_FATAL
    except ValueError as exc:  # --decode-loop compiled off the fast path
        emit("fatal", events, code=BadOptionError.code, message=str(exc))
        return EXIT_FATAL
    try:
        resolved = engine.resolve_options(options)
    except ValueError as exc:
        emit("fatal", events, code=BadOptionError.code, message=str(exc))
        return EXIT_FATAL
    info = engine.info
    emit(
        "model_loaded",
        events,
        model=info.model,
        revision=info.revision,
        device=info.device,
        dtype=info.dtype,
        decode_loop=info.decode_loop,
        load_s=round(info.load_s, 3),
        algorithm=resolved.algorithm,
        batch_size=resolved.batch_size,
    )

    from gpu_transcribe_engine.writers import write_outputs

    total = len(args.audio)
    ok = failed = 0
    for index, (audio, stem) in enumerate(zip(args.audio, stems, strict=True)):
        emit("file_started", events, index=index, total=total, audio=audio)

        def progress(done_s: float, duration_s: float, index: int = index, audio: str = audio) -> None:
            emit(
                "progress",
                events,
                index=index,
                audio=audio,
                done_s=round(done_s, 2),
                duration_s=round(duration_s, 2),
            )

        try:
            if args.beside_input:  # before spending minutes on a transcript that cannot be written
                _check_writable_dir(stem.parent)
            transcript = engine.transcribe_file(audio, resolved, progress=progress)
            outputs = write_outputs(transcript, stem, formats)
        except EngineFailure as exc:
            failed += 1
            emit("file_failed", events, index=index, audio=audio, code=exc.code, message=str(exc))
            continue
        except Exception as exc:  # one file's unexpected failure must not lose the others
            failed += 1
            message = f"{audio}: {type(exc).__name__}: {_one_line(exc)}"
            logging.getLogger("gpu_transcribe_engine").exception("transcribing %s failed", audio)
            emit("file_failed", events, index=index, audio=audio, code=EngineFailure.code, message=message)
            continue
        ok += 1
        emit(
            "file_done",
            events,
            index=index,
            audio=audio,
            duration_s=round(transcript.duration_s, 3),
            decode_s=round(transcript.timings.decode_s, 3),
            transcribe_s=round(transcript.timings.transcribe_s, 3),
            language=transcript.language,
            segments=len(transcript.segments),
            outputs={fmt: str(path) for fmt, path in outputs.items()},
        )
    emit(
        "all_done",
        events,
        files_ok=ok,
        files_failed=failed,
        elapsed_s=round(time.perf_counter() - started, 3),
    )
    return EXIT_OK if failed == 0 else EXIT_SOME_FAILED


def _output_stems(audio: Sequence[str], out_dir: Path | None) -> list[Path]:
    """Output path without extension per input: ``out_dir/<stem>`` or ``<input dir>/<stem>``.

    Raises:
        BadOptionError: two inputs would write the same files (same stem into one directory).
    """
    stems: list[Path] = []
    seen: dict[Path, str] = {}
    for item in audio:
        path = Path(item)
        stem = (out_dir if out_dir is not None else path.parent) / path.stem
        key = Path(os.path.abspath(stem))
        if key in seen:
            raise BadOptionError(
                f"{seen[key]} and {item} would both write {stem}.*; rename one, or transcribe them in "
                "separate runs"
            )
        seen[key] = item
        stems.append(stem)
    return stems


def _check_writable_dir(directory: Path) -> None:
    """Create ``directory`` if missing and prove a file can be created in it.

    Raises:
        OutputWriteError: it cannot be created or written; the message names it.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-", delete=True):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputWriteError(
            f"cannot write to output directory {directory} ({reason}); choose a writable directory"
        ) from exc


def _private_stdout() -> IO[str]:
    """A text stream on a copy of stdout for the events; file descriptor 1 then points at stderr.

    Whatever a library prints (Python ``print`` or C code writing to fd 1) then lands on stderr, and
    stdout carries only protocol events.
    """
    sys.stdout.flush()
    try:
        fd = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # no real stdout (an embedding host): keep the stream we have
        return sys.stdout
    sys.stdout = sys.stderr
    return os.fdopen(fd, "w", encoding="utf-8", buffering=1)


def _quiet_libraries() -> None:
    """Send Python warnings and library logging to stderr, without progress bars."""
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    warnings.simplefilter("default")
    from gpu_transcribe_engine.engine import quiet_library_output

    quiet_library_output()


def _one_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, at most 300 characters."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


EXIT_INTERRUPTED = 130
"""Exit code after Ctrl-C (128 + SIGINT, the shells' convention)."""


def run_as_process(entry: Callable[[], int]) -> NoReturn:
    """Run ``entry`` as the whole life of this process, then end the process with its exit code without
    the interpreter's teardown.

    Once torch and transformers are imported, the interpreter's finalization after the :mod:`atexit`
    handlers (freeing their modules and objects) takes about 1 s: measured on 2 CPU cores, 1.0-1.3 s
    between an engine run's last event and the process's end, 0.5 s after ``import torch`` alone, and
    nothing once this is used. That second is part of every ``run --local`` and every remote run.
    Nothing is left unfinished by skipping it: outputs are written atomically and closed, the event
    stream is closed by :func:`main`, and the :mod:`atexit` handlers still run, libraries' clean-ups
    and :mod:`tempfile`'s finalizers included, because this function registers its own handler before
    ``entry`` imports any library and :mod:`atexit` runs handlers last-registered first. That handler
    shuts :mod:`logging` down, flushes the standard streams and calls :func:`os._exit`.

    The exit code is ``entry``'s return value; a :class:`SystemExit` inside it (argparse's ``--help``
    or usage error) keeps its code, Ctrl-C gives :data:`EXIT_INTERRUPTED`, and any other exception
    prints its traceback (as Python does) and gives 1.
    """
    code = [1]

    def end_process() -> None:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError):  # closed, or the reader is gone
                pass
        os._exit(code[0])

    atexit.register(end_process)
    try:
        code[0] = entry()
    except SystemExit as exc:
        code[0] = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        raise
    except KeyboardInterrupt:
        code[0] = EXIT_INTERRUPTED
        raise
    sys.exit(code[0])


if __name__ == "__main__":
    run_as_process(main)
