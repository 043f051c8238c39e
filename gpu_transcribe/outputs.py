"""Where transcripts are written on this machine: one destination per input and format, no two inputs
writing the same file, and every directory proven writable before anything runs (or is paid for).

Used alike by ``run --local``, ``run --host`` and cloud runs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from gpu_transcribe.errors import InputError, OutputDirError, OutputError
from gpu_transcribe.inputs import AudioInput

#: One input's outputs: format (``txt``, ``json``, ``srt``, ``vtt``) -> local path.
Destinations = dict[str, Path]


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
