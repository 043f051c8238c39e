"""The word-timing pieces without the model: DTW, punctuation merging, OpenAI's corrections, start snapping.

The vectorised :func:`gpu_transcribe_engine.words.dtw` must take exactly the path of the plain double loop it
replaces
(transformers' ``_dynamic_time_warping``, OpenAI's ``dtw_cpu`` rewritten), ties included.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpu_transcribe_engine.transcript import Segment, Word
from gpu_transcribe_engine.words import (
    WordTiming,
    add_words_to_segments,
    dtw,
    merge_punctuations,
    snap_starts_to_speech,
)


@pytest.mark.parametrize(
    ("rows", "cols", "seed"), [(1, 1, 0), (3, 40, 1), (25, 300, 2), (60, 60, 3), (40, 7, 4)]
)
def test_dtw_takes_the_reference_path(rows: int, cols: int, seed: int) -> None:
    from transformers.models.whisper.generation_whisper import _dynamic_time_warping

    rng = np.random.default_rng(seed)
    cost = rng.normal(size=(rows, cols))
    cost[rng.random(cost.shape) < 0.2] = 0.0  # ties between the three moves
    text, time = dtw(cost)
    ref_text, ref_time = _dynamic_time_warping(cost)
    assert text.tolist() == list(ref_text) and time.tolist() == list(ref_time)


def test_dtw_follows_a_clear_diagonal() -> None:
    cost = np.ones((4, 8))
    for token, frame in enumerate((0, 2, 4, 6)):
        cost[token, frame : frame + 2] = -5.0
    text, time = dtw(cost)
    jumps = np.pad(np.diff(text), (1, 0), constant_values=1).astype(bool)
    assert time[jumps].tolist() == [0, 2, 4, 6]


def timing(word: str, start_s: float, end_s: float, tokens: tuple[int, ...] = (1,)) -> WordTiming:
    return WordTiming(word=word, tokens=tokens, start_s=start_s, end_s=end_s, probability=0.5)


def test_punctuation_joins_its_neighbours_and_keeps_their_times() -> None:
    merged = merge_punctuations(
        [timing(' "', 0.0, 0.1), timing("Hello", 0.1, 0.5), timing(",", 0.5, 0.6), timing(" world", 0.6, 1.0)]
    )
    assert [(t.word, t.start_s, t.end_s) for t in merged] == [(' "Hello,', 0.1, 0.5), (" world", 0.6, 1.0)]
    assert [len(t.tokens) for t in merged] == [3, 1]


def test_segments_get_their_words_and_follow_them() -> None:
    segments = [Segment(10.0, 12.0, "Ask not"), Segment(12.0, 14.0, "what you")]
    timings = [
        timing(" Ask", 0.2, 0.6),
        timing(" not", 0.6, 1.0),
        timing(" what", 2.4, 2.8),
        timing(" you", 2.8, 3.3),
    ]
    out = add_words_to_segments(segments, [[1, 2], [3, 4]], timings, offset_s=10.0)
    assert [[w.word for w in s.words] for s in out] == [[" Ask", " not"], [" what", " you"]]
    assert [(s.start_s, s.end_s) for s in out] == [(10.2, 11.0), (12.4, 13.3)]
    assert out[1].words[0] == Word(" what", 12.4, 12.8, 0.5)


def words_segment(*spans: tuple[float, float]) -> Segment:
    words = tuple(Word(f" w{i}", start, end, 0.9) for i, (start, end) in enumerate(spans))
    return Segment(spans[0][0], spans[-1][1], " ".join(w.word.strip() for w in words), words=words)


def test_a_start_in_the_pause_before_a_word_moves_to_the_speech() -> None:
    # w1 starts where w0's speech ends (the attention path's habit); speech resumes at 1.6 s
    segment = words_segment((0.3, 1.0), (0.95, 2.0))
    out = snap_starts_to_speech([segment], [(0.28, 1.02), (1.6, 2.05)])
    assert [(w.start_s, w.end_s) for w in out[0].words] == [(0.3, 1.0), (1.6, 2.0)]


def test_a_first_word_moves_and_its_segment_with_it() -> None:
    out = snap_starts_to_speech([words_segment((0.0, 1.0), (1.0, 1.5))], [(0.4, 1.5)])
    assert out[0].words[0].start_s == 0.4 and out[0].start_s == 0.4


@pytest.mark.parametrize(
    "speech",
    [
        [(0.0, 1.3), (1.6, 2.05)],  # 0.35 s of speech after the start: the pause is inside the word
        [(0.0, 1.0), (1.02, 2.05)],  # a pause of 20 ms: too short to count
        [(0.0, 1.0), (1.99, 2.05)],  # speech resumes at the word's very end
    ],
)
def test_starts_stay_when_the_pause_is_not_before_the_word(speech: list[tuple[float, float]]) -> None:
    segment = words_segment((0.0, 0.95), (0.95, 2.0))
    assert snap_starts_to_speech([segment], speech) == [segment]


def test_a_window_s_text_followed_by_its_tail_ends_where_the_tail_starts() -> None:
    """A window whose tail is decoded again (``batched``): its own last segment and words end at most at
    the tail's start, where the tail's words begin, so times stay in order across the two."""
    from gpu_transcribe_engine.batched import _ended_by

    words = (Word(" in", 10.0, 12.0, 0.9), Word(" particular,", 14.1, 14.6, 0.8), Word(" x", 14.5, 14.9, 0.5))
    segment = Segment(10.0, 14.9, "in particular, x", words=words)
    ended = _ended_by(segment, 14.3)
    assert (ended.start_s, ended.end_s, ended.text) == (10.0, 14.3, "in particular, x")
    assert ended.words[0] == words[0]
    assert [(w.start_s, w.end_s) for w in ended.words[1:]] == [(14.1, 14.3), (14.3, 14.3)]
    assert _ended_by(segment, 15.0) is segment
    late = _ended_by(Segment(16.0, 17.0, "late"), 14.3)
    assert (late.start_s, late.end_s) == (14.3, 14.3)
