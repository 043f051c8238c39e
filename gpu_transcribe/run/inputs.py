"""Find the audio files a user named (files as given, directories searched for audio inside), and check the
transcription options and formats asked for them.

Problems with one path do not stop the others: :func:`collect_audio` returns the usable files and one
:class:`~gpu_transcribe.errors.InputError` per unusable path, so a batch goes on and the CLI reports each.
Whether a file really decodes is decided by the engine (a text file named ``.mp3`` passes here).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gpu_transcribe.errors import InputError, SettingsError
from gpu_transcribe_engine.options import TranscribeOptions, parse_formats

#: File name endings searched for inside directories (what FFmpeg, through PyAV, decodes for us).
AUDIO_SUFFIXES: frozenset[str] = frozenset(
    {
        ".wav",
        ".flac",
        ".mp3",
        ".ogg",
        ".oga",
        ".opus",
        ".m4a",
        ".aac",
        ".mp4",
        ".webm",
        ".wma",
        ".aif",
        ".aiff",
    }
)


@dataclass(frozen=True)
class AudioInput:
    """One audio file to transcribe.

    Attributes:
        path: the file's path, absolute.
        size_bytes: its size in bytes (> 0).
        given_as: the command-line path it came from (the file itself or a directory holding it).
    """

    path: Path
    size_bytes: int
    given_as: str


@dataclass(frozen=True)
class CollectedInputs:
    """What :func:`collect_audio` found.

    Attributes:
        files: usable files, in command-line order, a directory's files sorted by path, no duplicates.
        problems: one error per unusable path, in command-line order.
    """

    files: tuple[AudioInput, ...]
    problems: tuple[InputError, ...]


def _check_file(path: Path, given_as: str) -> AudioInput:
    try:
        size_bytes = path.stat().st_size
    except OSError as exc:
        raise InputError(path, f"{given_as}: cannot read it ({exc.strerror}); check the permissions") from exc
    if size_bytes == 0:
        raise InputError(path, f"{given_as}: the file is empty (0 bytes); give a file that holds audio")
    if not os.access(path, os.R_OK):
        raise InputError(path, f"{given_as}: permission denied; make the file readable")
    return AudioInput(path=path.resolve(), size_bytes=size_bytes, given_as=given_as)


def _audio_in_directory(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def collect_audio(paths: Sequence[str | Path]) -> CollectedInputs:
    """Expand files and directories into the audio files to transcribe.

    A directory contributes every file below it (recursively) whose suffix is in :data:`AUDIO_SUFFIXES`;
    a file named explicitly is taken whatever its suffix.

    Args:
        paths: paths as the user typed them.

    Returns:
        The usable files and the problems. Never raises for a bad path: each becomes an ``InputError`` in
        ``problems`` whose message names the path and says what to do.
    """
    files: list[AudioInput] = []
    problems: list[InputError] = []
    seen: set[Path] = set()

    def add(candidates: Iterable[Path], given_as: str) -> None:
        for candidate in candidates:
            try:
                item = _check_file(candidate, given_as if candidate == Path(given_as) else str(candidate))
            except InputError as exc:
                problems.append(exc)
                continue
            if item.path not in seen:
                seen.add(item.path)
                files.append(item)

    for raw in paths:
        path = Path(raw)
        given_as = str(raw)
        if path.is_dir():
            found = _audio_in_directory(path)
            if not found:
                problems.append(
                    InputError(
                        path,
                        f"{given_as}: no audio files in this directory "
                        f"(looked for {', '.join(sorted(AUDIO_SUFFIXES))}); give a file or another directory",
                    )
                )
            add(found, given_as)
        elif path.exists():
            add([path], given_as)
        else:
            problems.append(InputError(path, f"{given_as}: no such file or directory; check the path"))
    return CollectedInputs(files=tuple(files), problems=tuple(problems))


def validate_options(
    options: TranscribeOptions, formats: Sequence[str] | str
) -> tuple[TranscribeOptions, tuple[str, ...]]:
    """Validate options and formats before anything heavy happens.

    Returns:
        The normalised options (language as a code) and the format tuple.

    Raises:
        SettingsError: naming the option (``--language``, ``--format``...) and what is allowed.
    """
    try:
        checked = options.validated()
        fmts = parse_formats(formats if isinstance(formats, str) else list(formats))
    except ValueError as exc:
        setting = str(exc).split(":", 1)[0]
        raise SettingsError(setting.lstrip("-"), "command line", str(exc)) from None
    return checked, fmts
