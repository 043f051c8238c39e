"""Word-timestamp accuracy: our engine against known word boundaries and against faster-whisper.

- Built speech: espeak-ng speaks each word of a text to its own file, sox resamples it to 16 kHz mono and
  trims its leading and trailing silence, and the words are joined with silences of known, varied length
  (:func:`build_spoken_words`), so every word's true start and end are known to the sample. Both engines
  transcribe the file with word timestamps; each recognised word that matches a spoken one (same
  normalised text, in order: :func:`match_words`) gives a start error.
- Real speech: on the recordings, the start of every word both engines recognise alike is compared
  between our engine and faster-whisper's ``word_timestamps=True`` on the same whisper-base weights.
- Cost: seconds to transcribe the recordings with and without word timestamps (``batched``, CPU).

Run: ``PYTHONPATH=. GPU_TRANSCRIBE_TEST_MODEL=models/whisper-base python -m bench.word_timing`` (needs
espeak-ng and sox on the PATH). Prints one JSON object; the README's figures come from it.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.fixtures import (
    ENGLISH_CLIPS,
    SWEDISH_CLIPS,
    clip_language,
    clip_path,
    faster_whisper_model_dir,
    find_test_model,
)

SAMPLE_RATE_HZ = 16_000
BUILT_TEXT = (
    "The quick brown fox jumps over the lazy dog while seven children watch from the garden gate. "
    "Every morning the baker opens his small shop and sells fresh bread to the people of the village. "
    "Rain fell on the river all night and the water rose above the old stone bridge near the mill."
)
"""English sentences spoken word by word for :func:`build_spoken_words` (about 30 s with the pauses)."""
GAP_CHOICES_S: tuple[float, ...] = (0.08, 0.15, 0.25, 0.4, 0.6)
"""Silences put between words, cycled in a fixed shuffled order so the result is reproducible."""
MEDIAN_START_ERROR_TARGET_S = 0.1
"""Issue 22's target: median word start error against the built speech at most 0.1 s."""


@dataclass(frozen=True)
class SpokenWord:
    """A word of built speech and where it lies in the file (seconds)."""

    word: str
    start_s: float
    end_s: float


def tools_available() -> bool:
    """True when espeak-ng and sox are on the PATH."""
    return shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


def _read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as handle:
        frames = handle.readframes(handle.getnframes())
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0


def build_spoken_words(
    text: str, out: Path, gaps_s: Sequence[float] = GAP_CHOICES_S, seed: int = 0
) -> tuple[np.ndarray, list[SpokenWord]]:
    """Speak ``text`` word by word with espeak-ng and join the words with known silences.

    Each word is spoken alone (``espeak-ng -v en-us``), converted by sox to 16 kHz mono 16-bit with its
    leading and trailing silence trimmed (``silence 1 0.01 0.5%`` both ends), and the pieces are joined with
    0.3 s of silence first and a gap drawn from ``gaps_s`` after each word; the file ends with 0.5 s of
    silence. The words' times are sample-exact: a word starts where its trimmed audio starts.

    Args:
        text: words separated by spaces; punctuation is spoken as part of its word and dropped from
            the returned words.
        out: the WAV file to write (16 kHz mono 16-bit).
        gaps_s: the silences between words, drawn in a fixed order from ``seed``.
        seed: seed of the draw.

    Returns:
        ``(samples, words)``: the float32 samples written, and each word with its start and end.

    Raises:
        FileNotFoundError: espeak-ng or sox is missing.
        subprocess.CalledProcessError: one of them failed.
    """
    rng = np.random.default_rng(seed)
    pieces: list[np.ndarray] = [np.zeros(int(0.3 * SAMPLE_RATE_HZ), dtype=np.float32)]
    words: list[SpokenWord] = []
    position = pieces[0].shape[0]
    with tempfile.TemporaryDirectory() as tmp:
        for index, raw in enumerate(text.split()):
            spoken = Path(tmp) / f"{index}.wav"
            trimmed = Path(tmp) / f"{index}.16k.wav"
            subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(spoken), raw], check=True)
            subprocess.run(
                ["sox", str(spoken), "-r", "16000", "-c", "1", "-b", "16", str(trimmed),
                 "silence", "1", "0.01", "0.5%", "reverse", "silence", "1", "0.01", "0.5%", "reverse"],
                check=True,
            )  # fmt: skip
            audio = _read_wav(trimmed)
            words.append(
                SpokenWord(
                    word=re.sub(r"[^\w']", "", raw.lower()),
                    start_s=position / SAMPLE_RATE_HZ,
                    end_s=(position + audio.shape[0]) / SAMPLE_RATE_HZ,
                )
            )
            gap = np.zeros(int(float(rng.choice(gaps_s)) * SAMPLE_RATE_HZ), dtype=np.float32)
            pieces += [audio, gap]
            position += audio.shape[0] + gap.shape[0]
    pieces.append(np.zeros(int(0.5 * SAMPLE_RATE_HZ), dtype=np.float32))
    samples = np.concatenate(pieces)
    with wave.open(str(out), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLE_RATE_HZ)
        handle.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return samples, words


def _norm(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


def match_words(
    reference: Sequence[tuple[str, float]], hypothesis: Sequence[tuple[str, float]]
) -> list[tuple[float, float]]:
    """Pairs ``(reference start, hypothesis start)`` of the words both sequences share, in order.

    The normalised words (lower case, punctuation removed) are aligned with :class:`difflib.SequenceMatcher`;
    only words in equal runs pair up, so a misrecognised word gives no pair.

    Args:
        reference: ``(word, start_s)`` in order.
        hypothesis: ``(word, start_s)`` in order.
    """
    ref = [_norm(w) for w, _ in reference]
    hyp = [_norm(w) for w, _ in hypothesis]
    pairs: list[tuple[float, float]] = []
    matcher = difflib.SequenceMatcher(a=ref, b=hyp, autojunk=False)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            pairs.append((reference[block.a + k][1], hypothesis[block.b + k][1]))
    return pairs


def start_errors(pairs: Sequence[tuple[float, float]]) -> dict[str, float]:
    """Median and 95th percentile of ``|a - b|`` over ``pairs`` (seconds), and how many pairs."""
    errors = np.abs(np.array([a - b for a, b in pairs])) if pairs else np.array([np.nan])
    return {
        "pairs": len(pairs),
        "median_s": round(float(np.median(errors)), 3),
        "p95_s": round(float(np.percentile(errors, 95)), 3),
    }


def our_words(engine: Any, audio: Path | np.ndarray, language: str) -> list[tuple[str, float]]:
    """``(word, start_s)`` of every word our engine finds (``batched``, word timestamps on)."""
    from gpu_transcribe_engine.options import TranscribeOptions

    options = TranscribeOptions(language=language, word_timestamps=True, algorithm="batched")
    if isinstance(audio, Path):
        transcript = engine.transcribe_file(audio, options)
    else:
        transcript = engine.transcribe_audio(audio, options)
    return [(w.word, w.start_s) for s in transcript.segments for w in s.words]


def faster_whisper_words(model: Any, audio: Path | np.ndarray, language: str) -> list[tuple[str, float]]:
    """``(word, start_s)`` of every word faster-whisper finds with ``word_timestamps=True``, beam 5."""
    source = str(audio) if isinstance(audio, Path) else audio
    segments, _ = model.transcribe(source, language=language, beam_size=5, word_timestamps=True)
    return [(w.word, float(w.start)) for s in segments for w in (s.words or ())]


def load_faster_whisper() -> Any:
    """faster-whisper on the same whisper-base weights, float32 on the CPU."""
    from faster_whisper import WhisperModel

    return WhisperModel(str(faster_whisper_model_dir()), device="cpu", compute_type="float32", cpu_threads=2)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="timing runs per setting (best kept)")
    args = parser.parse_args(argv)
    if not tools_available():
        print("bench.word_timing: install espeak-ng and sox (apt-get install espeak-ng sox)", file=sys.stderr)
        return 2
    model_dir = find_test_model()
    if model_dir is None:
        print("bench.word_timing: set GPU_TRANSCRIBE_TEST_MODEL (make offline-model)", file=sys.stderr)
        return 2
    from gpu_transcribe_engine.engine import WhisperEngine
    from gpu_transcribe_engine.options import TranscribeOptions

    engine = WhisperEngine.load(str(model_dir), device="cpu")
    peer = load_faster_whisper()
    result: dict[str, Any] = {"model": str(model_dir), "dtype": engine.info.dtype}
    with tempfile.TemporaryDirectory() as tmp:
        built = Path(tmp) / "built.wav"
        samples, spoken = build_spoken_words(BUILT_TEXT, built)
        reference = [(w.word, w.start_s) for w in spoken]
        result["built"] = {
            "words": len(spoken),
            "duration_s": round(samples.shape[0] / SAMPLE_RATE_HZ, 2),
            "ours": start_errors(match_words(reference, our_words(engine, built, "en"))),
            "faster_whisper": start_errors(match_words(reference, faster_whisper_words(peer, built, "en"))),
        }
    pairs: list[tuple[float, float]] = []
    per_clip: dict[str, Any] = {}
    clips = (*ENGLISH_CLIPS, *SWEDISH_CLIPS)
    for clip in clips:
        language = clip_language(clip)
        clip_pairs = match_words(
            faster_whisper_words(peer, clip_path(clip), language),
            our_words(engine, clip_path(clip), language),
        )
        per_clip[clip] = start_errors(clip_pairs)
        pairs += clip_pairs
    result["vs_faster_whisper"] = {"all": start_errors(pairs), "clips": per_clip}
    timings: dict[str, float] = {}
    for words in (False, True):
        best = float("inf")
        for _ in range(args.repeats):
            started = time.perf_counter()
            for clip in clips:
                options = TranscribeOptions(language=clip_language(clip), word_timestamps=words)
                engine.transcribe_file(clip_path(clip), options)
            best = min(best, time.perf_counter() - started)
        timings["with_words_s" if words else "without_words_s"] = round(best, 2)
    timings["overhead"] = round(timings["with_words_s"] / timings["without_words_s"] - 1, 3)
    result["cost"] = timings
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
