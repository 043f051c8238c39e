"""Transcription options: one frozen data class that the result echoes, so every run can be reproduced."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from gpu_transcribe_engine.languages import normalize_language

Task = Literal["transcribe", "translate"]
Algorithm = Literal["auto", "sequential", "batched"]

TASKS: tuple[str, ...] = ("transcribe", "translate")
ALGORITHMS: tuple[str, ...] = ("auto", "sequential", "batched")
FORMATS: tuple[str, ...] = ("txt", "json", "srt", "vtt")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
DECODE_LOOPS: tuple[str, ...] = ("auto", "eager", "compiled")
"""The engine's decoding loops (:mod:`gpu_transcribe_engine.compiled_decoding`)."""
DEFAULT_FORMATS: tuple[str, ...] = ("txt", "json")
DEFAULT_MODEL = "KBLab/kb-whisper-small"
DEFAULT_LANGUAGE = "sv"
MAX_PROMPT_CHARS = 2000
"""Longest prompt accepted, in characters. Whisper keeps at most the last 223 of its tokens (half its text
context, as OpenAI's decoder does), so a longer text would be mostly dropped."""


@dataclass(frozen=True)
class TranscribeOptions:
    """How to transcribe. Immutable; :meth:`validated` returns a normalised copy or raises.

    Attributes:
        language: Whisper language code (``sv``), or ``auto`` to detect it per file.
        task: ``transcribe`` (same language) or ``translate`` (into English).
        beam_size: beams per decoding step; 1 is greedy search.
        batch_size: windows decoded together by the ``batched`` algorithm; ``None`` picks one per device.
        algorithm: ``sequential`` (OpenAI's long-form algorithm: 30 s windows in sequence, conditioned on the
            previous text, with temperature fallback), ``batched`` (silence-cut windows of at most 29 s
            decoded in batches, each once), or ``auto`` (``batched``, faster and more accurate in the README's
            measurements).
        word_timestamps: time every word too (:mod:`gpu_transcribe_engine.words`); each segment then has
        ``words``.
        prompt: text that conditions the decoding (names, jargon, spelling), given to Whisper as the previous
            text of the first window (``sequential``) or of every window (``batched``); ``None`` for none.
        max_line_width: subtitle lines (SubRip, WebVTT) of at most this many characters; with
            ``max_line_count`` or ``max_cue_s``, cues are laid out by
            :func:`gpu_transcribe_engine.writers.subtitle_cues`
            (the unset ones take their defaults: 42, 2, 7 s). All ``None``: one cue per segment.
        max_line_count: lines per subtitle cue at most.
        max_cue_s: seconds per subtitle cue at most.
    """

    language: str = DEFAULT_LANGUAGE
    task: Task = "transcribe"
    beam_size: int = 5
    batch_size: int | None = None
    algorithm: Algorithm = "auto"
    word_timestamps: bool = False
    prompt: str | None = None
    max_line_width: int | None = None
    max_line_count: int | None = None
    max_cue_s: float | None = None

    def validated(self) -> TranscribeOptions:
        """Return a copy with the language normalised to its code.

        Raises:
            ValueError: a field has a value outside what is allowed; the message names the option.
        """
        try:
            language = normalize_language(self.language)
        except ValueError as exc:
            raise ValueError(f"--language: {exc}") from None
        if self.task not in TASKS:
            raise ValueError(f"--task: {self.task!r} is not one of {', '.join(TASKS)}")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"--algorithm: {self.algorithm!r} is not one of {', '.join(ALGORITHMS)}")
        if not 1 <= self.beam_size <= 16:
            raise ValueError(f"--beam-size: {self.beam_size} is outside 1..16")
        if self.batch_size is not None and not 1 <= self.batch_size <= 256:
            raise ValueError(f"--batch-size: {self.batch_size} is outside 1..256")
        if self.max_line_width is not None and not 1 <= self.max_line_width <= 1000:
            raise ValueError(f"--max-line-width: {self.max_line_width} is outside 1..1000")
        if self.max_line_count is not None and not 1 <= self.max_line_count <= 20:
            raise ValueError(f"--max-line-count: {self.max_line_count} is outside 1..20")
        if self.max_cue_s is not None and not (
            math.isfinite(self.max_cue_s) and 0.5 <= self.max_cue_s <= 600
        ):
            raise ValueError(f"--max-cue-duration: {self.max_cue_s} s is outside 0.5..600")
        prompt = " ".join(self.prompt.split()) if self.prompt else None
        if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"--prompt: {len(prompt)} characters; give at most {MAX_PROMPT_CHARS}")
        return replace(self, language=language, prompt=prompt or None)

    @property
    def subtitle_layout(self) -> bool:
        """True when subtitle cues are laid out by line width, line count and duration (any limit set)."""
        return any(v is not None for v in (self.max_line_width, self.max_line_count, self.max_cue_s))

    def to_dict(self) -> dict[str, Any]:
        """The options as a JSON-ready dict (field name -> value)."""
        return asdict(self)


def parse_formats(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Parse ``"txt,json"`` (or a list of names) into a tuple of known formats, order kept, no repeats.

    Raises:
        ValueError: an unknown or empty format list; the message names ``--format``.
    """
    names = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for raw in names:
        name = raw.strip().lower().lstrip(".")
        if not name:
            continue
        if name not in FORMATS:
            raise ValueError(f"--format: {raw!r} is not one of {', '.join(FORMATS)}")
        if name not in out:
            out.append(name)
    if not out:
        raise ValueError(f"--format: give at least one of {', '.join(FORMATS)}")
    return tuple(out)


def looks_like_path(model: str) -> bool:
    """True for ``./x``, ``/x``, ``~/x``, ``x/y/z``: a model directory, not a ``owner/name`` hub id."""
    return model.startswith((".", "/", "~", os.sep)) or model.count("/") > 1 or "\\" in model
