"""``bench/engine.py``'s arithmetic: where a whole process's seconds went, and the targets."""

from __future__ import annotations

import pytest

from bench.engine import FileResult, breakdown


def test_breakdown_splits_the_wall_time_into_start_up_load_audio_and_stages() -> None:
    transcript = {
        "timings": {"load_s": 2.0, "decode_s": 0.5, "transcribe_s": 10.0},
        "extra": {"stages_s": {"vad": 0.5, "encoder": 4.0, "decoder": 5.0}},
    }
    parts = breakdown(15.0, transcript)
    assert parts["startup"] == pytest.approx(2.5)
    assert (parts["load"], parts["audio"], parts["encoder"], parts["fallback"]) == (2.0, 0.5, 4.0, 0.0)
    assert parts["other"] == pytest.approx(0.5)
    assert sum(parts.values()) == pytest.approx(15.0)


@pytest.mark.parametrize(
    ("ours_s", "ours_wer", "met"),
    [(20.0, 0.20, True), (20.1, 0.20, False), (10.0, 0.211, False), (10.0, 0.21, True)],
)
def test_targets_are_half_the_peers_throughput_and_one_point_of_word_error_rate(
    ours_s: float, ours_wer: float, met: bool
) -> None:
    result = FileResult("x", "sv", 100.0, ours_s, 10.0, ours_wer, 0.20, 4, 0)
    assert result.targets_met is met
