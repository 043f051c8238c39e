"""Speech finding and window building for the ``batched`` algorithm (Silero VAD on real recordings)."""

from __future__ import annotations

import itertools

import numpy as np

from bench.fixtures import SILENT_CLIP, SWEDISH_CLIPS, build_long_audio, clip_path
from gpu_transcribe_engine.audio import SAMPLE_RATE_HZ, decode_audio
from gpu_transcribe_engine.vad import MAX_WINDOW_S, SpeechWindow, merge_into_windows, speech_timestamps

S = SAMPLE_RATE_HZ


def test_silent_clip_and_digital_silence_have_no_speech() -> None:
    assert speech_timestamps(decode_audio(clip_path(SILENT_CLIP))) == []
    assert speech_timestamps(np.zeros(10 * S, np.float32)) == []
    assert speech_timestamps(np.zeros(0, np.float32)) == []


def test_speech_clip_has_speech_inside_it() -> None:
    audio = decode_audio(clip_path(SWEDISH_CLIPS[2]))
    found = speech_timestamps(audio)
    assert found
    assert all(0 <= s < e <= audio.shape[0] for s, e in found)
    assert sum(e - s for s, e in found) > 3 * S  # 7 s clip, mostly speech


def test_windows_of_the_long_file_cover_every_clip_and_cut_only_in_pauses() -> None:
    long = build_long_audio()
    windows = merge_into_windows(speech_timestamps(long.samples))
    assert all(w.duration_s <= MAX_WINDOW_S for w in windows)
    assert all(a.end_sample <= b.start_sample for a, b in itertools.pairwise(windows))
    for clip in long.clips:
        # The recordings start and end with some silence, so a window may begin inside a clip's span;
        # what must not happen is two windows sharing one clip.
        holders = [w for w in windows if w.start_s < clip.end_s and clip.start_s < w.end_s]
        assert len(holders) == 1, f"{clip.name} at {clip.start_s:.1f}-{clip.end_s:.1f} s is split: {windows}"
    # Windows are well filled: no more than one beyond the minimum count.
    assert len(windows) <= int(np.ceil(long.duration_s / MAX_WINDOW_S)) + 1


def test_merge_prefers_the_latest_long_pause() -> None:
    # Speech 0-10 s, 10.2-20 s (short pause), 22-27 s (long pause before), 27.1-35 s.
    speech = [(0, 10 * S), (int(10.2 * S), 20 * S), (22 * S, 27 * S), (int(27.1 * S), 35 * S)]
    windows = merge_into_windows(speech)
    assert windows[0] == SpeechWindow(0, 20 * S)  # cut at the 2 s pause, not at 27 s (a 0.1 s pause)
    assert windows[1] == SpeechWindow(22 * S, 35 * S)


def test_merge_falls_back_to_the_longest_pause_and_splits_overlong_speech() -> None:
    speech = [(0, 16 * S), (int(16.3 * S), 25 * S), (int(25.1 * S), 31 * S)]
    assert merge_into_windows(speech)[0] == SpeechWindow(0, 16 * S)
    overlong = merge_into_windows([(0, 70 * S)])
    assert [w.duration_s for w in overlong] == [30.0, 30.0, 10.0]
    assert merge_into_windows([]) == []


def test_finding_speech_leaves_pytorchs_thread_count_as_it_was() -> None:
    """Importing silero-vad sets PyTorch to one thread; the engine's encoder and decoder, which run after
    the VAD, must keep the cores they had. In a fresh process, so that silero-vad is imported there."""
    import subprocess
    import sys

    code = (
        "import numpy as np, torch\n"
        "torch.set_num_threads(3)\n"
        "from gpu_transcribe_engine.vad import speech_timestamps\n"
        "speech_timestamps(np.zeros(16000, np.float32))\n"
        "import silero_vad\n"
        "print(torch.get_num_threads())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "3", done.stderr
