"""Find speech with Silero VAD and group it into windows for Whisper, cut at pauses.

The front half of the ``batched`` algorithm: :func:`speech_timestamps` runs Silero VAD (the ``silero-vad``
package's ONNX model) over 16 kHz samples; :func:`merge_into_windows` groups the speech into contiguous
stretches of the recording no longer than a Whisper window, each starting and ending in a pause, so a time
inside a window maps to the file by adding the window's start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from gpu_transcribe_engine.audio import SAMPLE_RATE_HZ

MAX_WINDOW_S = 30.0
"""Whisper's input length: one encoder pass covers 30 s (3000 log-mel frames of 10 ms)."""
LONG_PAUSE_S = 0.5
"""A gap this long between padded stretches of speech (400 ms of padding on each side, so about 1.3 s
of silence) is a good place to end a window; among such gaps the latest is taken."""
MIN_WINDOW_FILL = 0.5
"""A window is cut at its longest pause among those leaving it at least this fraction of 30 s long."""


@dataclass(frozen=True)
class VadParameters:
    """Silero VAD settings; the defaults are faster-whisper 1.2.1's for its batched pipeline.

    Attributes:
        threshold: speech probability above which a 32 ms frame counts as speech (Silero's default 0.5).
        min_speech_duration_ms: speech shorter than this is dropped (faster-whisper: 0).
        min_silence_duration_ms: a pause must last this long to end a stretch of speech (faster-whisper
            batched: 160 ms).
        speech_pad_ms: padding added on both sides of each stretch of speech, so word onsets and endings
            are not clipped (faster-whisper: 400 ms).
        max_speech_duration_s: a longer stretch is split at its longest pause (or hard-cut if it has
            none); 30 s so that every stretch, padding included, fits one Whisper window.
    """

    threshold: float = 0.5
    min_speech_duration_ms: int = 0
    min_silence_duration_ms: int = 160
    speech_pad_ms: int = 400
    max_speech_duration_s: float = MAX_WINDOW_S


WORD_VAD = VadParameters(min_silence_duration_ms=0, speech_pad_ms=20)
"""Settings for finding the pauses between words (:func:`gpu_transcribe_engine.words.snap_starts_to_speech`):
every pause
Silero sees (no minimum) and 20 ms of padding. On the built speech of ``bench/word_timing.py`` these put
the speech onsets within 15 ms of the true word starts (median; with a 60 ms minimum pause 22 ms, 100 ms
37 ms)."""


@dataclass(frozen=True)
class SpeechWindow:
    """A contiguous stretch of the recording handed to Whisper as one input.

    Attributes:
        start_sample: first sample (16 kHz) of the window, inclusive.
        end_sample: last sample, exclusive; ``end_sample - start_sample <= 30 s * 16000``.
    """

    start_sample: int
    end_sample: int

    @property
    def start_s(self) -> float:
        """Start time in seconds from the beginning of the audio."""
        return self.start_sample / SAMPLE_RATE_HZ

    @property
    def end_s(self) -> float:
        """End time in seconds from the beginning of the audio."""
        return self.end_sample / SAMPLE_RATE_HZ

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return (self.end_sample - self.start_sample) / SAMPLE_RATE_HZ


def _silero() -> Any:
    """The ``silero_vad`` module, imported without its side effect on PyTorch's thread count.

    ``silero_vad/model.py`` calls ``torch.set_num_threads(1)`` when it is imported (silero-vad 6.2), which
    left every later encoder and decoder pass of the process on one core: on 2 cores the encoder took
    0.74 s per window instead of 0.40 s. The count in force before the import is put back.
    """
    import sys

    if "silero_vad" in sys.modules:
        return sys.modules["silero_vad"]
    import torch

    threads = torch.get_num_threads()
    try:
        import silero_vad
    finally:
        torch.set_num_threads(threads)
    return silero_vad


@lru_cache(maxsize=1)
def load_vad_model() -> Any:
    """Load (once per process) Silero VAD's sequence ONNX model, shipped inside the ``silero-vad`` wheel.

    The sequence model takes one ONNX Runtime call per ~16 s block instead of one per 32 ms frame, with the
    same probabilities, several times faster on CPU than the TorchScript model stepped frame by frame.
    """
    import warnings

    load_silero_vad = _silero().load_silero_vad
    with warnings.catch_warnings():  # silero-vad 6.2 still calls importlib.resources.path (deprecated)
        warnings.simplefilter("ignore", DeprecationWarning)
        return load_silero_vad(sequence=True)


def speech_probabilities(audio: np.ndarray) -> np.ndarray:
    """Silero VAD's speech probability for every 32 ms frame (512 samples) of ``audio``.

    Args:
        audio: 1-D float32 samples at 16 kHz, shape ``(num_samples,)``.

    Returns:
        float32 ``(ceil(num_samples / 512),)``, each in 0..1: what :func:`speech_timestamps` reads, so one
        pass of the model serves several :class:`VadParameters` (the windows, and the pauses word
        timestamps are moved out of).
    """
    model = load_vad_model()
    probabilities: np.ndarray = model.audio_forward(
        np.ascontiguousarray(audio, dtype=np.float32), sampling_rate=SAMPLE_RATE_HZ
    )
    return probabilities


def speech_timestamps(
    audio: np.ndarray, parameters: VadParameters | None = None, probabilities: np.ndarray | None = None
) -> list[tuple[int, int]]:
    """Find the stretches of speech in ``audio``.

    Args:
        audio: 1-D float32 samples at 16 kHz, shape ``(num_samples,)``.
        parameters: VAD settings; ``None`` uses :class:`VadParameters`' defaults.
        probabilities: :func:`speech_probabilities` of ``audio`` when already computed; ``None`` runs the
            model. silero-vad's ``get_speech_timestamps_sequence`` is this model pass followed by its
            ``get_speech_timestamps_from_probs``, which turns them into stretches here.

    Returns:
        ``(start_sample, end_sample)`` pairs (end exclusive), in time order, not overlapping, each at most
        ``parameters.max_speech_duration_s`` long. Empty when the audio holds no speech.
    """
    params = parameters or VadParameters()
    if audio.shape[0] == 0:
        return []
    if probabilities is None:
        probabilities = speech_probabilities(audio)
    found = _silero().get_speech_timestamps_from_probs(
        probabilities,
        sampling_rate=SAMPLE_RATE_HZ,
        threshold=params.threshold,
        min_speech_duration_ms=params.min_speech_duration_ms,
        max_speech_duration_s=params.max_speech_duration_s,
        min_silence_duration_ms=params.min_silence_duration_ms,
        speech_pad_ms=params.speech_pad_ms,
        audio_length_samples=audio.shape[0],
    )
    return [(int(s["start"]), int(s["end"])) for s in found if int(s["end"]) > int(s["start"])]


def merge_into_windows(
    speech: Sequence[tuple[int, int]],
    max_window_s: float = MAX_WINDOW_S,
    min_fill: float = MIN_WINDOW_FILL,
) -> list[SpeechWindow]:
    """Group consecutive stretches of speech into windows of at most ``max_window_s``, cut at long pauses.

    A window runs from the start of its first stretch to the end of its last, the pauses between them
    included (as WhisperX's ``merge_chunks``), so a time inside it maps to the file by adding its start.
    Where a window must end, it ends at the latest *long* pause (a gap of at least
    :data:`LONG_PAUSE_S` between padded stretches, i.e. about 1.3 s of silence) that leaves it at least
    ``min_fill`` full, or failing that at the longest pause there; not simply at the last pause that
    fits: with Silero's 160 ms minimum silence, counting "en, två, tre" already has pauses, and cutting
    there split a sentence across two windows and made Whisper finish the count on both sides
    (measured on the 3-minute test file: "1, 2, ... 8." then "3, 4, ... 8."). A stretch longer than
    ``max_window_s`` (possible only with other VAD settings) is split evenly.

    Args:
        speech: ``(start_sample, end_sample)`` pairs in time order, as :func:`speech_timestamps` returns.
        max_window_s: the longest window in seconds; Whisper's 30 s.
        min_fill: a cut must leave the window at least this fraction of ``max_window_s`` long, when such
            a cut exists (so the longest-pause rule cannot make many short windows).

    Returns:
        Windows in time order, not overlapping; empty if ``speech`` is empty.
    """
    max_samples = int(max_window_s * SAMPLE_RATE_HZ)
    min_samples = int(min_fill * max_samples)
    cap = int(LONG_PAUSE_S * SAMPLE_RATE_HZ)
    pieces: list[tuple[int, int]] = []
    for start, end in speech:
        while end - start > max_samples:
            pieces.append((start, start + max_samples))
            start += max_samples
        pieces.append((start, end))

    windows: list[SpeechWindow] = []
    first = 0
    while first < len(pieces):
        window_start = pieces[first][0]
        last = first  # the furthest piece that still fits
        while last + 1 < len(pieces) and pieces[last + 1][1] - window_start <= max_samples:
            last += 1
        if last == len(pieces) - 1:
            windows.append(SpeechWindow(window_start, pieces[last][1]))
            break
        candidates = [k for k in range(first, last + 1) if pieces[k][1] - window_start >= min_samples]
        cut = max(candidates or [last], key=lambda k: (min(pieces[k + 1][0] - pieces[k][1], cap), k))
        windows.append(SpeechWindow(window_start, pieces[cut][1]))
        first = cut + 1
    return windows
