"""Transcript writers: plain text, JSON, SubRip (``.srt``) and WebVTT (``.vtt``), written atomically.

Every format is rendered from the same sanitized transcript (:func:`sanitize`), so the four files of one
audio file agree on segments and times. SubRip and WebVTT are written by pysubs2, a maintained subtitle
library, rather than by string formatting of our own. Each file is written to a temporary file in the same
directory, flushed to disk and moved into place with :func:`os.replace`: a reader sees the old file or the new
one, never a partial one.

This module imports neither torch nor the client (``gpu_transcribe``); pysubs2 is imported when SubRip or
WebVTT is rendered.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gpu_transcribe_engine import files
from gpu_transcribe_engine.errors import BadOptionError, OutputWriteError
from gpu_transcribe_engine.options import FORMATS, TranscribeOptions
from gpu_transcribe_engine.transcript import Segment, Transcript, Word

# SubRip and WebVTT times have millisecond precision; Whisper's timestamp tokens are 20 ms apart (Radford et
# al. 2022, section 2.3), so quantizing every format to 1 ms loses nothing and keeps them in agreement.
TIME_RESOLUTION_S = 0.001
DEFAULT_MAX_LINE_WIDTH = 42
"""Characters per subtitle line by default: the common broadcast rule (the BBC's and Netflix's 42 for Latin
scripts)."""
DEFAULT_MAX_LINE_COUNT = 2
"""Lines per cue by default (the same rules)."""
DEFAULT_MAX_CUE_S = 7.0
"""Longest cue by default, in seconds (Netflix's timed-text style guide: at most 7 s per subtitle)."""


@dataclass(frozen=True)
class SubtitleLayout:
    """How SubRip and WebVTT cues are laid out (:func:`subtitle_cues`).

    Attributes:
        max_line_width: characters per line at most (a single longer word stays whole on its line).
        max_line_count: lines per cue at most.
        max_cue_s: seconds per cue at most (a single longer word keeps its own time).
    """

    max_line_width: int = DEFAULT_MAX_LINE_WIDTH
    max_line_count: int = DEFAULT_MAX_LINE_COUNT
    max_cue_s: float = DEFAULT_MAX_CUE_S

    @classmethod
    def of(cls, options: TranscribeOptions) -> SubtitleLayout | None:
        """The layout ``options`` ask for (unset limits at their defaults), or ``None`` for one cue per
        segment (no limit set)."""
        if not options.subtitle_layout:
            return None
        return cls(
            max_line_width=options.max_line_width or DEFAULT_MAX_LINE_WIDTH,
            max_line_count=options.max_line_count or DEFAULT_MAX_LINE_COUNT,
            max_cue_s=options.max_cue_s or DEFAULT_MAX_CUE_S,
        )


# Mode of written files (rw-r--r--): mkstemp creates 0600, which would hide the output from other users.
OUTPUT_FILE_MODE = 0o644


def _to_ms(seconds: float, default_ms: int) -> int:
    """Seconds to whole milliseconds (rounded half to even); NaN gives ``default_ms``, infinities saturate."""
    if math.isnan(seconds):
        return default_ms
    if math.isinf(seconds):
        return 2**62 if seconds > 0 else -(2**62)
    return round(seconds * 1000)


def sanitize(transcript: Transcript) -> Transcript:
    """Return a copy of the transcript whose segments every format can represent faithfully.

    The rule, applied in this order:

    1. Text: runs of white space (new lines included) become one space, the ends are stripped, and segments
       whose text is then empty are dropped (a cue with no text shows nothing; a blank line inside an SRT cue
       would end it early).
    2. Times are rounded to whole milliseconds, then clamped into ``[0, limit]``, where ``limit`` is
       ``duration_s`` rounded down to the millisecond. If ``duration_s`` is not a finite positive number, the
       limit is the largest finite segment end instead (and ``duration_s`` is set to it), so no segment is
       lost. A NaN start becomes 0; a NaN end becomes the start.
    3. An end before its start becomes the start (``end_s >= start_s``).
    4. A zero-length segment gets 1 ms (WebVTT requires a cue's end after its start): its end moves 1 ms
       later, or, at the limit, its start 1 ms earlier. With a limit of 0 it stays zero-length.
    5. Segments are sorted by start time (stable: ties keep their order), so starts are non-decreasing.
       Overlaps are kept: both SubRip and WebVTT allow cues that overlap, and trimming would invent times.

    Args:
        transcript: any transcript; its ``segments`` may be unsorted, overlapping or out of range.

    Returns:
        A new transcript; every field other than ``segments`` (and an invalid ``duration_s``) is unchanged.
        Applying :func:`sanitize` again changes nothing.
    """
    duration_s = transcript.duration_s
    if not (math.isfinite(duration_s) and duration_s > 0):
        finite_ends = [s.end_s for s in transcript.segments if math.isfinite(s.end_s)]
        duration_s = max([0.0, *finite_ends])
    limit_ms = math.floor(duration_s * 1000 + 1e-6)  # + 1e-6: 7.0 * 1000 may be 6999.999...
    segments: list[Segment] = []
    for segment in transcript.segments:
        text = " ".join(segment.text.split())
        if not text:
            continue
        start_ms = min(max(_to_ms(segment.start_s, 0), 0), limit_ms)
        end_ms = min(max(_to_ms(segment.end_s, start_ms), 0), limit_ms)
        end_ms = max(end_ms, start_ms)
        if end_ms == start_ms:
            if end_ms < limit_ms:
                end_ms += 1
            elif start_ms > 0:
                start_ms -= 1
        segments.append(
            dataclasses.replace(
                segment, start_s=start_ms / 1000, end_s=end_ms / 1000, text=text, words=_clean_words(segment)
            )
        )
    segments.sort(key=lambda s: s.start_s)
    return dataclasses.replace(transcript, segments=tuple(segments), duration_s=duration_s)


def _clean_words(segment: Segment) -> tuple[Word, ...]:
    """A segment's words with finite times rounded to milliseconds, ends not before starts, text trimmed
    of white space runs (its leading space kept); words without text are dropped."""
    out: list[Word] = []
    for word in segment.words:
        text = " ".join(word.word.split())
        if not text:
            continue
        lead = " " if word.word[:1].isspace() else ""
        start_ms = max(_to_ms(word.start_s, 0), 0)
        end_ms = max(_to_ms(word.end_s, start_ms), start_ms)
        out.append(dataclasses.replace(word, word=lead + text, start_s=start_ms / 1000, end_s=end_ms / 1000))
    return tuple(out)


def _render_txt(transcript: Transcript) -> str:
    """One segment per line, in time order, ending with a new line; empty for a transcript with no speech.

    One line per segment (rather than joined paragraphs) keeps the text diffable and lines up with the
    subtitle cues; :attr:`Transcript.text` gives the single-line form.
    """
    return "".join(f"{segment.text}\n" for segment in transcript.segments)


def _render_json(transcript: Transcript) -> str:
    """:meth:`Transcript.to_dict` as UTF-8 JSON (Swedish letters kept as they are), indented by 2."""
    return json.dumps(transcript.to_dict(), ensure_ascii=False, indent=2, allow_nan=False) + "\n"


def _escape_vtt(text: str) -> str:
    """Escape ``&``, ``<`` and ``>`` as the WebVTT spec requires in cue text (W3C WebVTT, section 4.2.2)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _segment_words(segment: Segment) -> list[tuple[str, float, float]]:
    """``(text, start_s, end_s)`` of each word of ``segment``: its timed words, or, for a segment without
    them, its text split at spaces with the segment's time shared out in proportion to word length."""
    if segment.words:
        return [(w.word.strip(), w.start_s, w.end_s) for w in segment.words if w.word.strip()]
    texts = segment.text.split()
    total = sum(len(t) + 1 for t in texts) or 1
    span = segment.end_s - segment.start_s
    out: list[tuple[str, float, float]] = []
    done = 0
    for text in texts:
        start = segment.start_s + span * done / total
        done += len(text) + 1
        out.append((text, start, segment.start_s + span * done / total))
    return out


def subtitle_cues(
    segments: Sequence[Segment], layout: SubtitleLayout
) -> list[tuple[float, float, list[str]]]:
    """Lay segments out as cues of at most ``max_line_count`` lines of ``max_line_width`` characters.

    Words fill a line until the next would make it too wide, then the next line; a cue ends when it has
    no line left, when the next word would end more than ``max_cue_s`` after the cue's first word starts,
    and at every segment's end (a cue never joins two segments). A cue runs from its first word's start
    to its last word's end (at least 1 ms).

    Args:
        segments: sanitized segments (:func:`sanitize`), words timed or not (:func:`_segment_words`).
        layout: the limits.

    Returns:
        ``(start_s, end_s, lines)`` per cue, in order.
    """
    cues: list[tuple[float, float, list[str]]] = []
    for segment in segments:
        lines: list[str] = []
        cue_start = cue_end = 0.0
        for text, start, end in _segment_words(segment):
            if lines:
                wider = len(lines[-1]) + 1 + len(text) > layout.max_line_width
                longer = end - cue_start > layout.max_cue_s
                if not longer and not wider:
                    lines[-1] += " " + text
                    cue_end = max(cue_end, end)
                    continue
                if not longer and len(lines) < layout.max_line_count:
                    lines.append(text)
                    cue_end = max(cue_end, end)
                    continue
                cues.append((cue_start, cue_end, lines))
            lines, cue_start, cue_end = [text], start, end
        if lines:
            cues.append((cue_start, cue_end, lines))
    return [(start, max(end, start + TIME_RESOLUTION_S), lines) for start, end, lines in cues]


def _render_subtitles(transcript: Transcript, fmt: str, layout: SubtitleLayout | None = None) -> str:
    """SubRip or WebVTT through pysubs2, times in milliseconds: one cue per segment, or the cues of
    :func:`subtitle_cues` with a ``layout``.

    ``keep_ssa_tags=True`` makes pysubs2 write the text as given instead of reading ``{...}`` in it as
    SubStation override tags (which it would strip); ``\\N`` is its line break.
    """
    import pysubs2

    if layout is None:
        cues = [(s.start_s, s.end_s, [s.text]) for s in transcript.segments]
    else:
        cues = subtitle_cues(transcript.segments, layout)
    subs = pysubs2.SSAFile()
    for start_s, end_s, lines in cues:
        text = "\\N".join(_escape_vtt(line) if fmt == "vtt" else line for line in lines)
        subs.append(pysubs2.SSAEvent(start=round(start_s * 1000), end=round(end_s * 1000), text=text))
    return str(subs.to_string(fmt, keep_ssa_tags=True))


def render(transcript: Transcript, fmt: str, layout: SubtitleLayout | None = None) -> str:
    """Render the transcript, sanitized by :func:`sanitize`, in one format.

    Args:
        transcript: the transcript to render.
        fmt: one of :data:`gpu_transcribe_engine.options.FORMATS`: ``txt``, ``json``, ``srt`` or ``vtt``.
        layout: for ``srt`` and ``vtt``, cues of limited lines (:func:`subtitle_cues`); ``None`` for what
            the transcript's options ask for (:meth:`SubtitleLayout.of`: one cue per segment by default).

    Returns:
        The file's content as text (to be written as UTF-8). An empty transcript gives an empty ``txt``,
        ``json`` with ``"segments": []``, an empty ``srt`` and a ``vtt`` holding only its ``WEBVTT`` header.

    Raises:
        BadOptionError: ``fmt`` is not a known format.
    """
    if fmt not in FORMATS:
        raise BadOptionError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    clean = sanitize(transcript)
    if fmt == "txt":
        return _render_txt(clean)
    if fmt == "json":
        return _render_json(clean)
    return _render_subtitles(clean, fmt, layout or SubtitleLayout.of(transcript.options))


def write_atomic(path: Path, content: str) -> None:
    """Write ``content`` as UTF-8 to ``path`` so that ``path`` is either the old file or the whole new one,
    with mode 0644 (:func:`gpu_transcribe_engine.files.write_atomic`: a temporary file in the same
    directory, fsync'ed, moved into place with :func:`os.replace`, the directory fsync'ed).

    Raises:
        OutputWriteError: the file cannot be written (missing or read-only directory, disk full); the one-line
            message names ``path``.
    """
    try:
        files.write_atomic(path, content.encode("utf-8"), OUTPUT_FILE_MODE)
    except OSError as exc:
        raise OutputWriteError(f"cannot write {path}: {exc.strerror or exc}") from exc


def write_outputs(
    transcript: Transcript, stem: Path, formats: Sequence[str], layout: SubtitleLayout | None = None
) -> dict[str, Path]:
    """Write the transcript to ``f"{stem}.{fmt}"`` for each format, each file atomically.

    Every format is rendered before the first file is written, so a rendering error writes nothing. The
    directory of ``stem`` must exist.

    Args:
        transcript: the transcript; sanitized by :func:`sanitize` before rendering.
        stem: output path without the extension, e.g. ``out/interview`` for ``out/interview.srt``; a dot in
            the stem is kept (``out/talk.v2`` gives ``out/talk.v2.txt``).
        formats: format names from :data:`gpu_transcribe_engine.options.FORMATS`; repeats are written once.
        layout: subtitle layout for ``srt`` and ``vtt`` (see :func:`render`).

    Returns:
        ``{fmt: path}`` of the files written, in the order given.

    Raises:
        BadOptionError: an unknown format name.
        OutputWriteError: a file cannot be written; the one-line message names its path. Files written
            before it are complete; the failed one is left as it was (its old version, or absent).
    """
    clean = sanitize(transcript)
    contents = {fmt: render(clean, fmt, layout) for fmt in dict.fromkeys(formats)}
    written: dict[str, Path] = {}
    for fmt, content in contents.items():
        path = Path(f"{stem}.{fmt}")
        write_atomic(path, content)
        written[fmt] = path
    return written
