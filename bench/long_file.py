"""Benchmark: how much accuracy a long file costs against transcribing its clips one by one, per engine.

    python bench/long_file.py --model models/whisper-base [--language sv|en] [--beam-size N]
        [--batch-size N] [--cut-at-pause-s S] [--skip ours|fw]

The target: a file of at least 3 minutes built from the clips with pauses between them has a word error
rate within 2 points of transcribing the clips one by one. This script measures that gap, in one run on
the same audio and the same weights, for

- ours: the default (``batched``, Silero VAD windows of at most 30 s) on the long file, against the same
  engine on each clip alone (as ``tests/test_engine.py`` does);
- faster-whisper 1.2.1 ``BatchedInferencePipeline`` (CTranslate2 int8, the same OpenAI whisper-base
  weights; :func:`bench.fixtures.faster_whisper_model_dir`) on the long file, against the same pipeline
  on each clip alone,

and says where the extra errors come from: the file's reference (clip references in order) is aligned
to each hypothesis (jiwer), every error is charged to the clip whose reference words it touches (an
insertion to the word before it), and each clip's errors in the file are printed beside its errors alone,
with the words the engine wrote there whenever they differ from its clip-alone transcript.

With ``--cut-at-pause-s S`` (default 1.0) both engines also run with one more windowing rule: a gap of at
least ``S`` seconds between Silero's padded stretches of speech (400 ms of padding each side, so about
``S + 0.8`` s of silence) always starts a new window, so separate utterances are decoded without each other's
context. Ours gets it by wrapping :func:`gpu_transcribe_engine.vad.merge_into_windows` for that run only (the
engine's code
is left as it is); faster-whisper gets the same windows as ``clip_timestamps``.
Every run's wall seconds are printed with its throughput relative to faster-whisper's default batched
run (the target for ours on CPU: at least 0.5x), and the Whisper encoder's seconds per 30 s window,
the fixed cost every extra window adds.

The long file is :func:`bench.fixtures.build_long_audio` (the builder the tests use): the three Swedish
NST clips (or the three English clips with ``--language en``) in a fresh random order per round, 1-3 s
pauses of -60 dBFS noise, at least 180 s.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fixtures import (
    ENGLISH_CLIPS,
    SAMPLE_RATE_HZ,
    SWEDISH_CLIPS,
    LongAudio,
    build_long_audio,
    clip_path,
    faster_whisper_model_dir,
    find_test_model,
    normalize_text,
)


@dataclass(frozen=True)
class ClipScore:
    """One placed clip's share of an alignment.

    Attributes:
        errors: substitutions + deletions + insertions charged to the clip.
        words: the clip's reference words (normalised).
        hypothesis: the normalised hypothesis words aligned to the clip, joined by spaces.
    """

    errors: int
    words: int
    hypothesis: str


def per_clip_scores(long: LongAudio, hypothesis: str, language: str) -> list[ClipScore]:
    """Align the whole file's reference to ``hypothesis`` and charge each error to a placed clip.

    A substitution or deletion belongs to the clip of its reference word; an insertion to the clip of the
    reference word before it (the first clip at the very start). The alignment is monotonic, so a word
    written at another clip's place counts as an error there and here.

    Returns:
        One score per placed clip, in order; their ``errors`` sum to the file's S + D + I.
    """
    import jiwer

    ref_words: list[str] = []
    owner: list[int] = []
    for index, clip in enumerate(long.clips):
        words = normalize_text(clip.reference, language).split()
        ref_words += words
        owner += [index] * len(words)
    hyp_words = normalize_text(hypothesis, language).split()
    out = jiwer.process_words(" ".join(ref_words), " ".join(hyp_words))
    errors = [0] * len(long.clips)
    hyp_of: list[list[str]] = [[] for _ in long.clips]
    for chunk in out.alignments[0]:
        if chunk.type == "insert":
            at = owner[max(chunk.ref_start_idx - 1, 0)]
            errors[at] += chunk.hyp_end_idx - chunk.hyp_start_idx
            hyp_of[at] += hyp_words[chunk.hyp_start_idx : chunk.hyp_end_idx]
            continue
        for k in range(chunk.ref_end_idx - chunk.ref_start_idx):
            ref_index = chunk.ref_start_idx + k
            if chunk.type != "equal":
                errors[owner[ref_index]] += 1
            if chunk.type != "delete":
                hyp_of[owner[ref_index]].append(hyp_words[chunk.hyp_start_idx + k])
    return [
        ClipScore(errors=errors[i], words=owner.count(i), hypothesis=" ".join(hyp_of[i]))
        for i in range(len(long.clips))
    ]


def clip_alone_errors(reference: str, hypothesis: str, language: str) -> int:
    """S + D + I of one clip transcribed alone."""
    import jiwer

    out = jiwer.process_words(normalize_text(reference, language), normalize_text(hypothesis, language))
    return int(out.substitutions + out.deletions + out.insertions)


def report(
    label: str,
    long: LongAudio,
    long_text: str,
    alone: dict[str, str],
    language: str,
) -> tuple[float, float]:
    """Print the long-file vs clip-by-clip comparison of one engine; return both word error rates."""
    scores = per_clip_scores(long, long_text, language)
    total_words = sum(s.words for s in scores)
    long_errors = sum(s.errors for s in scores)
    alone_errors = {n: clip_alone_errors(_reference(long, n), t, language) for n, t in alone.items()}
    alone_total = sum(alone_errors[c.name] for c in long.clips)
    long_wer = long_errors / total_words
    alone_wer = alone_total / total_words
    print(f"\n== {label}")
    print(
        f"long file WER {long_wer:.3f} ({long_errors}/{total_words}), clip by clip {alone_wer:.3f} "
        f"({alone_total}/{total_words}), gap {100 * (long_wer - alone_wer):+.1f} points"
    )
    for name in sorted(alone):
        print(f"  alone {name}: {alone_errors[name]} errors: {normalize_text(alone[name], language)}")
    extra: Counter[str] = Counter()
    for index, (clip, score) in enumerate(zip(long.clips, scores, strict=True)):
        delta = score.errors - alone_errors[clip.name]
        extra[clip.name] += delta
        differs = score.hypothesis != normalize_text(alone[clip.name], language)
        print(
            f"  clip {index:2d} {clip.name} at {clip.start_s:6.1f} s: {score.errors} errors "
            f"({delta:+d} vs alone)" + (f": {score.hypothesis}" if differs else "")
        )
    print("  extra errors per clip name: " + ", ".join(f"{n} {d:+d}" for n, d in sorted(extra.items())))
    return long_wer, alone_wer


def _reference(long: LongAudio, name: str) -> str:
    return next(c.reference for c in long.clips if c.name == name)


def timed(fn: Callable[[], str]) -> tuple[str, float]:
    """``fn()`` and its wall seconds."""
    started = time.perf_counter()
    text = fn()
    return text, time.perf_counter() - started


def cut_at_pauses(speech: list[tuple[int, int]], min_gap_s: float) -> list[list[tuple[int, int]]]:
    """Split Silero's stretches of speech into groups wherever the gap between two is ``>= min_gap_s``."""
    groups: list[list[tuple[int, int]]] = []
    for start, end in speech:
        if not groups or start - groups[-1][-1][1] >= min_gap_s * SAMPLE_RATE_HZ:
            groups.append([])
        groups[-1].append((start, end))
    return groups


@contextmanager
def windows_cut_at_pauses(min_gap_s: float) -> Iterator[None]:
    """While inside, the engine's windows never span a gap of ``min_gap_s`` or more (``--cut-at-pause-s``).

    Each group of :func:`cut_at_pauses` is merged into windows by the engine's own
    :func:`gpu_transcribe_engine.vad.merge_into_windows`, which the engine's ``batched`` path imports at call
    time.
    """
    import gpu_transcribe_engine.vad as vad

    original = vad.merge_into_windows

    def merge(speech: Sequence[tuple[int, int]], *args: Any, **kwargs: Any) -> list[Any]:
        return [w for g in cut_at_pauses(list(speech), min_gap_s) for w in original(g, *args, **kwargs)]

    vad.merge_into_windows = merge
    try:
        yield
    finally:
        vad.merge_into_windows = original


def encoder_seconds_per_window(engine: Any, repeats: int = 3) -> float:
    """Fastest wall seconds of one Whisper encoder pass over one 30 s window (3000 log-mel frames)."""
    import numpy as np
    import torch

    features = engine._features([np.zeros(30 * SAMPLE_RATE_HZ, dtype=np.float32)])["input_features"]
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats):
            started = time.perf_counter()
            engine.model.model.encoder(features)
            best = min(best, time.perf_counter() - started)
    return best


@dataclass(frozen=True)
class Run:
    """One engine configuration on the long file."""

    label: str
    windows: int
    wall_s: float
    long_wer: float
    alone_wer: float


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run both engines on the long file and on each clip, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(find_test_model() or "models/whisper-base"))
    parser.add_argument("--language", choices=("sv", "en"), default="sv")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--cut-at-pause-s", type=float, default=1.0)
    parser.add_argument("--skip", action="append", default=[], choices=("ours", "fw"))
    args = parser.parse_args(argv)

    import torch

    from gpu_transcribe_engine.vad import merge_into_windows, speech_timestamps

    language: str = args.language
    gap_s: float = args.cut_at_pause_s
    clips = SWEDISH_CLIPS if language == "sv" else ENGLISH_CLIPS
    long = build_long_audio(clips)
    print(
        f"long file: {long.duration_s:.1f} s, {len(long.clips)} clips ({language}); "
        f"torch threads {torch.get_num_threads()}",
        flush=True,
    )
    speech = speech_timestamps(long.samples)
    default_windows = merge_into_windows(speech)
    cut_windows = [w for g in cut_at_pauses(speech, gap_s) for w in merge_into_windows(g)]
    for label, windows in (("default", default_windows), (f"cut at pauses >= {gap_s} s", cut_windows)):
        print(
            f"windows, {label}: {len(windows)}: "
            + ", ".join(f"{w.start_s:.1f}-{w.end_s:.1f}" for w in windows)
        )
    runs: list[Run] = []

    def record(label: str, windows: int, wall_s: float, text: str, alone: dict[str, str]) -> None:
        long_wer, alone_wer = report(f"{label}: {wall_s:.1f} s", long, text, alone, language)
        runs.append(Run(label, windows, wall_s, long_wer, alone_wer))

    if "fw" not in args.skip:
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        fw_model = WhisperModel(
            str(faster_whisper_model_dir()), device="cpu", compute_type="int8", cpu_threads=2
        )
        pipeline = BatchedInferencePipeline(fw_model)

        def fw(audio: Any, clip_timestamps: list[dict[str, float]] | None = None) -> str:
            segments, _ = pipeline.transcribe(
                audio,
                language=language,
                beam_size=args.beam_size,
                batch_size=args.batch_size,
                clip_timestamps=clip_timestamps,
            )
            return " ".join(s.text.strip() for s in segments)

        fw(str(clip_path(clips[0])))  # warm-up
        fw_alone = {n: fw(str(clip_path(n))) for n in clips}
        text, wall_s = timed(lambda: fw(long.samples))
        record("faster-whisper batched int8, default", len(default_windows), wall_s, text, fw_alone)
        stamps = [{"start": w.start_s, "end": w.end_s} for w in cut_windows]
        text, wall_s = timed(lambda: fw(long.samples, stamps))
        record(
            f"faster-whisper batched int8, cut at pauses >= {gap_s} s",
            len(cut_windows),
            wall_s,
            text,
            fw_alone,
        )

    if "ours" not in args.skip:
        from gpu_transcribe_engine.engine import WhisperEngine
        from gpu_transcribe_engine.options import TranscribeOptions

        engine = WhisperEngine.load(args.model, device="cpu")
        print(f"ours: Whisper encoder {encoder_seconds_per_window(engine):.2f} s per 30 s window", flush=True)
        options = TranscribeOptions(language=language, beam_size=args.beam_size, batch_size=args.batch_size)
        ours_alone = {n: engine.transcribe_file(clip_path(n), options).text for n in clips}
        text, wall_s = timed(lambda: engine.transcribe_audio(long.samples, options).text)
        record("ours batched fp32, default", len(default_windows), wall_s, text, ours_alone)
        with windows_cut_at_pauses(gap_s):
            text, wall_s = timed(lambda: engine.transcribe_audio(long.samples, options).text)
        record(f"ours batched fp32, cut at pauses >= {gap_s} s", len(cut_windows), wall_s, text, ours_alone)

    fw_default = runs[0].wall_s if runs and runs[0].label.startswith("faster-whisper") else None
    print("\nsummary: word error rate on the long file vs the same engine clip by clip; wall seconds")
    for run in runs:
        ratio = f"{fw_default / run.wall_s:.2f}x fw default" if fw_default else "-"
        verdict = "within 2 points" if run.long_wer <= run.alone_wer + 0.02 else "NOT within 2 points"
        print(
            f"  {run.label:48s} {run.windows:3d} windows {run.wall_s:6.1f} s ({ratio})  "
            f"long {run.long_wer:.3f}  clip by clip {run.alone_wer:.3f}  "
            f"gap {100 * (run.long_wer - run.alone_wer):+.1f} points, {verdict}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
