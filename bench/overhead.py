"""The client's own time in a ``run``: everything but moving bytes, transcribing and waiting for the instance.

Runs ``gpu_transcribe.run.run_cloud`` in this process against moto in server mode and a loopback sshd
that plays the instance (``tests/fixtures/cloud.py``), with the real engine on CPU, and splits each run's
wall time into:

- instance wait: the ``ssh_ready`` phase (on EC2 the boot, 30-90 s; here the emulator's sshd start plus the
  client's polling granularity, ``gpu_transcribe.aws.ec2.instances.POLL_S``);
- transfer: the ``push`` and ``pull`` phases;
- engine: the ``transcribe`` phase (model load and decoding on the host);
- the client's own time: the rest (planning, preflight, launch calls, teardown, upload calls, process and
  thread coordination). Target: under 2 s per run.

The peer in the same run is the engine's own time: the ratio says how much of a run the client adds on top
of the work itself.

    python bench/overhead.py --model models/whisper-base --runs 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fixtures import clip_path
from tests.fixtures.cloud import REPO, make_bed
from tests.fixtures.moto_aws import ACCOUNT_ID, FAKE_AWS_ENV, reset_moto, running_moto_server

CLIP = clip_path("sv_nst_se10x016_u0016004.wav")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "whisper-base")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not (args.model / "config.json").is_file():
        print(f"no model at {args.model}: run `make offline-model`", file=sys.stderr)
        return 2
    os.environ.update(FAKE_AWS_ENV)
    from gpu_transcribe.run import CloudRunRequest, run_cloud
    from gpu_transcribe.settings import load_settings
    from gpu_transcribe_engine.options import TranscribeOptions

    rows = []
    with running_moto_server() as url, tempfile.TemporaryDirectory() as tmp_text:
        os.environ["AWS_ENDPOINT_URL"] = url
        for n in range(args.runs):
            tmp = Path(tmp_text) / f"run-{n}"
            tmp.mkdir()
            aws = reset_moto(url)
            bed = make_bed(aws, tmp, args.model.resolve())
            for key, value in bed.env.items():
                if key.startswith("GPU_TRANSCRIBE_"):
                    os.environ[key] = value
            settings = load_settings(env=bed.env, config_files=[])
            (audio,) = bed.inputs(CLIP)
            request = CloudRunRequest(
                paths=(str(audio),),
                output_dir=tmp / "out",
                formats=("txt", "json", "srt", "vtt"),
                options=TranscribeOptions(),
                model=str(bed.model_dir),
            )
            emulator = bed.emulator()
            try:
                started = time.monotonic()
                result = run_cloud(request, settings)
                wall_s = time.monotonic() - started
            finally:
                emulator.stop()
            if not result.ok:
                print(f"run {n} failed: {result}", file=sys.stderr)
                return 1
            p = result.phases_s
            transfer_s = p["push"] + p["pull"]
            own_s = wall_s - p["ssh_ready"] - transfer_s - p["transcribe"]
            rows.append((wall_s, p["ssh_ready"], transfer_s, p["transcribe"], own_s, dict(p)))
            print(
                f"run {n}: wall {wall_s:.2f} s = instance wait {p['ssh_ready']:.2f} "
                f"+ transfer {transfer_s:.2f} + engine {p['transcribe']:.2f} + client {own_s:.2f} s; phases "
                + ", ".join(f"{k} {v:.2f}" for k, v in p.items()),
                flush=True,
            )
    own = statistics.median(r[4] for r in rows)
    engine = statistics.median(r[3] for r in rows)
    print(f"account {ACCOUNT_ID} (moto), {args.runs} runs, 1 clip of {CLIP.name}, 4 formats, S3 upload on")
    print(f"client's own time, median: {own:.2f} s (target < 2 s: {'met' if own < 2.0 else 'NOT met'})")
    print(f"engine time, median: {engine:.2f} s; client / engine: {own / engine:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
