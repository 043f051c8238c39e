"""Word timestamps from the decoder's cross-attention: OpenAI's ``whisper.timing`` method, on numpy and torch.

The decoder reads the window's text tokens once more, teacher-forced, in the batch that decoded them
(:meth:`gpu_transcribe_engine.whisper_model.WindowDecoder.align`); its alignment heads' cross-attention
weights, normalised
and median-filtered, are matched to the audio frames by dynamic time warping (:func:`dtw`), and each word's
start and end are the times where the path first reaches its first token and the token after its last
(:func:`word_timings`). :func:`add_words_to_segments` then applies OpenAI's corrections (over-long words
at sentence and segment boundaries) and hands the words to their segments; the rules and constants are
those of OpenAI's ``whisper/timing.py`` (``find_alignment``, ``merge_punctuations``,
``add_word_timestamps``), which faster-whisper follows too. Last, :func:`snap_starts_to_speech` moves each
word's start out of the silence before it.

This module imports numpy only; torch is imported by the functions that take tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from gpu_transcribe_engine.transcript import Segment

FRAMES_PER_SECOND = 50
"""Encoder frames (cross-attention columns) per second of audio: Whisper's encoder halves the 100 mel
frames per second."""
MEDIAN_FILTER_WIDTH = 7
"""Width of the median filter over time on the attention weights (OpenAI's ``medfilt_width``)."""
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
"""Punctuation that joins the following word (OpenAI's default)."""
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
"""Punctuation that joins the preceding word (OpenAI's default)."""
SENTENCE_END_MARKS = ".。!！?？"
MIN_WORD_S = 0.02
"""A word moved by :func:`snap_starts_to_speech` keeps at least this long (one timestamp step)."""
MAX_TAIL_S = 0.25
"""Speech between a word's start and the pause inside it that :func:`snap_starts_to_speech` counts as the
previous word's end; with more, the pause is inside the word and its start stays."""
MIN_PAUSE_S = 0.04
"""Shortest pause (between Silero's padded stretches) that :func:`snap_starts_to_speech` moves a start
over."""
NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})
"""Languages written without spaces between words: their words are split at Unicode characters."""


@dataclass(frozen=True)
class WordTiming:
    """One word as aligned in its window.

    Attributes:
        word: the word's text as decoded, with its leading space and merged punctuation.
        tokens: its token ids.
        start_s: start in seconds from the window's start.
        end_s: end in seconds from the window's start (>= ``start_s``).
        probability: mean probability of its tokens under the decoder (0..1).
    """

    word: str
    tokens: tuple[int, ...]
    start_s: float
    end_s: float
    probability: float


def median_filter(weights: torch.Tensor, width: int = MEDIAN_FILTER_WIDTH) -> torch.Tensor:
    """Median of each run of ``width`` values along the last axis, edges reflected (OpenAI's median filter).

    Args:
        weights: ``(..., frames)``, any leading shape.
        width: odd filter width.

    Returns:
        A tensor of the same shape; unchanged when ``frames <= width // 2`` (too short to reflect).
    """
    import torch.nn.functional as F

    pad = width // 2
    if weights.shape[-1] <= pad:
        return weights
    shape = weights.shape
    flat = weights.reshape(-1, 1, shape[-1])
    padded = F.pad(flat, (pad, pad), mode="reflect")
    return padded.unfold(-1, width, 1).sort(dim=-1).values[..., pad].reshape(shape)


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dynamic time warping through a cost matrix, OpenAI's ``dtw_cpu`` vectorised over anti-diagonals.

    The recursion ``D[i, j] = cost[i-1, j-1] + min(D[i-1, j-1], D[i-1, j], D[i, j-1])`` with OpenAI's tie
    rule (diagonal, then up, else left) is evaluated one anti-diagonal ``i + j`` at a time, so a window
    costs ``tokens + frames`` numpy steps instead of ``tokens * frames`` Python ones.

    Args:
        cost: ``(tokens, frames)`` float matrix.

    Returns:
        ``(text_indices, time_indices)``: the path's token and frame indices, from ``(0, 0)`` to the last
        cell, of equal length.
    """
    rows, cols = cost.shape
    total = np.full((rows + 1, cols + 1), np.inf)
    trace = np.full((rows + 1, cols + 1), -1, dtype=np.int8)
    total[0, 0] = 0.0
    for diagonal in range(2, rows + cols + 1):
        i = np.arange(max(1, diagonal - cols), min(rows, diagonal - 1) + 1)
        j = diagonal - i
        c0 = total[i - 1, j - 1]
        c1 = total[i - 1, j]
        c2 = total[i, j - 1]
        step = np.where((c0 < c1) & (c0 < c2), 0, np.where((c1 < c0) & (c1 < c2), 1, 2))
        best = np.where(step == 0, c0, np.where(step == 1, c1, c2))
        total[i, j] = cost[i - 1, j - 1] + best
        trace[i, j] = step
    trace[0, :] = 2
    trace[:, 0] = 1
    i, j = rows, cols
    text: list[int] = []
    time: list[int] = []
    while i > 0 or j > 0:
        text.append(i - 1)
        time.append(j - 1)
        move = trace[i, j]
        if move == 0:
            i, j = i - 1, j - 1
        elif move == 1:
            i -= 1
        else:
            j -= 1
    return np.array(text[::-1]), np.array(time[::-1])


def alignment_matrix(weights: torch.Tensor, sot_len: int) -> np.ndarray:
    """OpenAI's alignment cost input from one window's alignment-head weights.

    Args:
        weights: ``(heads, positions, frames)`` softmaxed cross-attention weights of the alignment heads at
            every decoder position of ``<|startoftranscript|>...<|notimestamps|> text <|endoftext|>``, over
            the frames of the window's audio.
        sot_len: positions before ``<|notimestamps|>`` (the start sequence: 3).

    Returns:
        ``(text tokens + 1, frames)`` float64: weights normalised per frame across positions, median-filtered
        over time and averaged over the heads (higher is more aligned), for the positions from
        ``<|notimestamps|>`` to the last text token.
    """
    std, mean = _std_mean(weights)
    normalised = (weights - mean) / std
    filtered = median_filter(normalised, MEDIAN_FILTER_WIDTH)
    matrix: np.ndarray = filtered.mean(dim=0)[sot_len:-1].double().cpu().numpy()
    return matrix


def _std_mean(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    std, mean = torch.std_mean(weights, dim=-2, keepdim=True, unbiased=False)
    return std, mean


def split_words(
    tokens: Sequence[int],
    language: str,
    decode: Callable[[list[int]], str],
    eot_id: int,
) -> tuple[list[str], list[list[int]]]:
    """Group ``tokens`` (text tokens plus the end token) into words, OpenAI's ``split_to_word_tokens``.

    Languages of :data:`NO_SPACE_LANGUAGES` split wherever the decoded text is whole Unicode characters;
    the others also join a piece to the previous word unless it starts with a space, is punctuation or a
    special token.

    Args:
        tokens: token ids; ids ``>= eot_id`` are special and stand alone.
        language: Whisper language code of the text.
        decode: the tokenizer's decode of a list of ids.
        eot_id: id of ``<|endoftext|>``.

    Returns:
        ``(words, word_tokens)``, in order; the tokens of all words are ``tokens``.
    """
    import string

    full = decode(list(tokens))
    words: list[str] = []
    pieces: list[list[int]] = []
    current: list[int] = []
    offset = 0
    for token in tokens:
        current.append(token)
        text = decode(current)
        bad = text.find("\ufffd")
        if bad < 0 or (offset + bad < len(full) and full[offset + bad] == "\ufffd"):
            words.append(text)
            pieces.append(current)
            current = []
            offset += len(text)
    if language in NO_SPACE_LANGUAGES:
        return words, pieces
    out_words: list[str] = []
    out_tokens: list[list[int]] = []
    for word, piece in zip(words, pieces, strict=True):
        special = piece[0] >= eot_id
        if special or word.startswith(" ") or word.strip() in string.punctuation or not out_words:
            out_words.append(word)
            out_tokens.append(list(piece))
        else:
            out_words[-1] += word
            out_tokens[-1].extend(piece)
    return out_words, out_tokens


def word_timings(
    matrix: np.ndarray,
    text_tokens: Sequence[int],
    token_probs: Sequence[float],
    language: str,
    decode: Callable[[list[int]], str],
    eot_id: int,
) -> list[WordTiming]:
    """Words with start, end and probability from a window's :func:`alignment_matrix` (``find_alignment``).

    Args:
        matrix: ``(len(text_tokens) + 1, frames)`` from :func:`alignment_matrix`.
        text_tokens: the window's text token ids (no timestamps, no special tokens).
        token_probs: the decoder's probability of each text token, same length.
        language: Whisper language code.
        decode: the tokenizer's decode of a list of ids.
        eot_id: id of ``<|endoftext|>``.

    Returns:
        One :class:`WordTiming` per word, punctuation merged into its neighbours (OpenAI's
        ``merge_punctuations``), times in seconds from the window's start; empty for no text.
    """
    if not text_tokens:
        return []
    words, word_tokens = split_words([*text_tokens, eot_id], language, decode, eot_id)
    if len(word_tokens) <= 1:
        return []
    text_indices, time_indices = dtw(-matrix)
    jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
    jump_times = time_indices[jumps] / FRAMES_PER_SECOND
    boundaries = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    probs = np.asarray(token_probs, dtype=np.float64)
    spans = zip(words[:-1], word_tokens[:-1], boundaries[:-1], boundaries[1:], strict=True)
    timings = [
        WordTiming(
            word=word,
            tokens=tuple(tokens),
            start_s=float(jump_times[start]),
            end_s=float(jump_times[end]),
            probability=float(np.mean(probs[start:end])) if end > start else 0.0,
        )
        for word, tokens, start, end in spans
    ]
    return merge_punctuations(timings)


def merge_punctuations(
    timings: list[WordTiming],
    prepended: str = PREPEND_PUNCTUATIONS,
    appended: str = APPEND_PUNCTUATIONS,
) -> list[WordTiming]:
    """Join leading punctuation to the next word and trailing punctuation to the previous one.

    OpenAI's ``merge_punctuations``: the merged word keeps its own times; the punctuation's entry becomes
    empty and is dropped here.
    """
    items = list(timings)
    i, j = len(items) - 2, len(items) - 1
    while i >= 0:
        previous, following = items[i], items[j]
        if previous.word.startswith(" ") and previous.word.strip() in prepended:
            items[j] = replace(
                following, word=previous.word + following.word, tokens=previous.tokens + following.tokens
            )
            items[i] = replace(previous, word="", tokens=())
        else:
            j = i
        i -= 1
    i, j = 0, 1
    while j < len(items):
        previous, following = items[i], items[j]
        if not previous.word.endswith(" ") and following.word in appended:
            items[i] = replace(
                previous, word=previous.word + following.word, tokens=previous.tokens + following.tokens
            )
            items[j] = replace(following, word="", tokens=())
        else:
            i = j
        j += 1
    return [item for item in items if item.word]


def add_words_to_segments(
    segments: Sequence[Segment],
    segment_tokens: Sequence[Sequence[int]],
    timings: Sequence[WordTiming],
    offset_s: float,
    last_speech_s: float = 0.0,
) -> list[Segment]:
    """Give each segment of one window its words, with OpenAI's corrections (``add_word_timestamps``).

    A word longer than twice the median word duration (the median capped at 0.7 s) next to a sentence end
    is shortened; the first word after a pause and the last word of a segment are kept within the segment's
    own times when they run more than 0.5 s past them, and otherwise the segment's start and end move to
    its first and last word.

    Args:
        segments: the window's segments, times absolute (seconds from the audio's start).
        segment_tokens: each segment's text token ids (their concatenation is the aligned text).
        timings: :func:`word_timings` of the window, times relative to the window's start.
        offset_s: the window's start in the audio.
        last_speech_s: where speech last ended before this window (for the first word after a pause).

    Returns:
        The segments with ``words`` (times absolute, rounded to 10 ms), and their ``start_s``/``end_s``
        moved to the words as described.
    """
    from gpu_transcribe_engine.transcript import Word

    items = list(timings)
    durations = np.array([t.end_s - t.start_s for t in items])
    durations = durations[durations.nonzero()]
    median = min(0.7, float(np.median(durations))) if len(durations) else 0.0
    longest = median * 2
    if len(durations):
        for i in range(1, len(items)):
            if items[i].end_s - items[i].start_s > longest:
                if items[i].word in SENTENCE_END_MARKS:
                    items[i] = replace(items[i], end_s=items[i].start_s + longest)
                elif items[i - 1].word in SENTENCE_END_MARKS:
                    items[i] = replace(items[i], start_s=items[i].end_s - longest)
    out: list[Segment] = []
    index = 0
    for segment, tokens in zip(segments, segment_tokens, strict=True):
        saved = 0
        words: list[dict[str, float | str]] = []
        while index < len(items) and saved < len(tokens):
            timing = items[index]
            words.append(
                {
                    "word": timing.word,
                    "start": round(offset_s + timing.start_s, 2),
                    "end": round(offset_s + timing.end_s, 2),
                    "probability": timing.probability,
                }
            )
            saved += len(timing.tokens)
            index += 1
        start_s, end_s = segment.start_s, segment.end_s
        if words:
            first, last = words[0], words[-1]
            second_end = float(words[1]["end"]) if len(words) > 1 else None
            if float(first["end"]) - last_speech_s > median * 4 and (
                float(first["end"]) - float(first["start"]) > longest
                or (second_end is not None and second_end - float(first["start"]) > longest * 2)
            ):
                if len(words) > 1 and float(words[1]["end"]) - float(words[1]["start"]) > longest:
                    boundary = max(float(words[1]["end"]) / 2, float(words[1]["end"]) - longest)
                    first["end"] = words[1]["start"] = boundary
                first["start"] = max(0.0, float(first["end"]) - longest)
            if start_s < float(first["end"]) and start_s - 0.5 > float(first["start"]):
                first["start"] = max(0.0, min(float(first["end"]) - median, start_s))
            else:
                start_s = float(first["start"])
            if end_s > float(last["start"]) and end_s + 0.5 < float(last["end"]):
                last["end"] = max(float(last["start"]) + median, end_s)
            else:
                end_s = float(last["end"])
            last_speech_s = end_s
        out.append(
            replace(
                segment,
                start_s=start_s,
                end_s=max(start_s, end_s),
                words=tuple(
                    Word(
                        word=str(w["word"]),
                        start_s=float(w["start"]),
                        end_s=max(float(w["start"]), float(w["end"])),
                        probability=round(float(w["probability"]), 4),
                    )
                    for w in words
                ),
            )
        )
    return out


def snap_starts_to_speech(
    segments: Sequence[Segment], speech: Sequence[tuple[float, float]]
) -> list[Segment]:
    """Move each word's start that lies in silence to where speech resumes, if that is inside the word.

    The attention path starts a word where the previous one ends, so a pause before a word counts as
    part of it: on speech built from single words with known pauses (``bench/word_timing.py``) the word
    starts were late by the pause's length (median 0.32 s, the same with faster-whisper). Silero VAD
    finds the pauses (:data:`gpu_transcribe_engine.vad.WORD_VAD`); a word in which speech resumes after a
    pause of at
    least :data:`MIN_PAUSE_S`, with at most :data:`MAX_TAIL_S` of speech (the previous word's end, which
    the path often cuts early) between its start and the pause, starts where speech resumes instead.
    Measured on that built speech: median start error 0.32 s before, 0.02 s after. The same correction as
    stable-ts's silence suppression. A segment's start follows its first word's when that moved later.

    Args:
        segments: segments with ``words``, times absolute in seconds.
        speech: ``(start_s, end_s)`` stretches of speech, in time order, not overlapping.

    Returns:
        The segments with the words' starts moved; segments without words unchanged.
    """
    import bisect

    starts = [start for start, _ in speech]
    out: list[Segment] = []
    for segment in segments:
        if not segment.words:
            out.append(segment)
            continue
        words = []
        for word in segment.words:
            index = bisect.bisect_right(starts, word.start_s)
            if index < len(speech) and speech[index][0] < word.end_s - MIN_WORD_S:
                onset = speech[index][0]
                pause_start = speech[index - 1][1] if index > 0 else 0.0
                before = max(0.0, min(onset, pause_start) - word.start_s)
                if before <= MAX_TAIL_S and onset - pause_start >= MIN_PAUSE_S:
                    word = replace(word, start_s=round(onset, 3))
            words.append(word)
        start_s = max(segment.start_s, words[0].start_s)
        out.append(replace(segment, words=tuple(words), start_s=min(start_s, segment.end_s)))
    return out
