"""``python -m gpu_transcribe_api``: the server without the client package, for a machine that has only the
engine
installed (same options as ``gpu-transcribe serve``; the key also from ``$GPU_TRANSCRIBE_API_KEY``).

SIGINT or SIGTERM stop it cleanly (uvicorn then re-raises the signal, so the exit status is the signal's);
exit status 2 for a bad option (one ``error:`` line on stderr), 1 when the model fails to load.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gpu_transcribe_api.config import (
    DEFAULT_JOB_TTL_S,
    DEFAULT_MAX_PENDING_BYTES,
    DEFAULT_MAX_PENDING_JOBS,
    DEFAULT_MIN_FREE_DISK_BYTES,
    GIB,
    MIB,
    ServerConfig,
    read_api_key,
)
from gpu_transcribe_engine.errors import BadOptionError, EngineFailure
from gpu_transcribe_engine.options import DEFAULT_MODEL, DEVICES


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m gpu_transcribe_api``."""
    parser = argparse.ArgumentParser(
        prog="python -m gpu_transcribe_api",
        description="Serve OpenAI's audio API with one loaded Whisper model.",
    )
    parser.add_argument("--bind", default="127.0.0.1", help="address; non-loopback needs a key")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="hub id or local model directory")
    parser.add_argument("--revision", default=None)
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--api-key-file", type=Path, default=None, help="first line: the bearer key")
    parser.add_argument("--max-upload-mb", type=float, default=200.0)
    parser.add_argument("--max-queue", type=int, default=64)
    parser.add_argument("--idle-stop-min", type=float, default=None, help="power off after N idle minutes")
    parser.add_argument("--max-lifetime-h", type=float, default=None, help="power off after H hours")
    parser.add_argument("--jobs-dir", type=Path, default=None, help="async jobs' files (default: a temp dir)")
    parser.add_argument(
        "--job-ttl-h", type=float, default=DEFAULT_JOB_TTL_S / 3600, help="keep job results H hours"
    )
    parser.add_argument("--webhook-secret-file", type=Path, default=None, help="the secret signing callbacks")
    parser.add_argument(
        "--allow-private-callbacks", action="store_true", help="callbacks may go to private addresses"
    )
    parser.add_argument(
        "--max-pending-jobs", type=int, default=DEFAULT_MAX_PENDING_JOBS, help="unfinished jobs at most"
    )
    parser.add_argument(
        "--max-pending-gb", type=float, default=DEFAULT_MAX_PENDING_BYTES / GIB, help="their uploads, GiB"
    )
    parser.add_argument(
        "--min-free-disk-gb",
        type=float,
        default=DEFAULT_MIN_FREE_DISK_BYTES / GIB,
        help="refuse a job that would leave less free disk (GiB)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the server until it is stopped; returns the exit status."""
    args = build_parser().parse_args(argv)
    from gpu_transcribe_api.run import serve

    try:
        config = (
            ServerConfig(
                bind=args.bind,
                port=args.port,
                model=args.model,
                revision=args.revision,
                device=args.device,
                api_key=read_api_key(args.api_key_file) if args.api_key_file is not None else None,
                max_upload_bytes=int(args.max_upload_mb * MIB),
                max_queue=args.max_queue,
                idle_stop_s=args.idle_stop_min * 60 if args.idle_stop_min is not None else None,
                max_lifetime_s=args.max_lifetime_h * 3600 if args.max_lifetime_h is not None else None,
                jobs_dir=args.jobs_dir,
                job_ttl_s=args.job_ttl_h * 3600,
                webhook_secret_file=args.webhook_secret_file,
                allow_private_callbacks=args.allow_private_callbacks,
                max_pending_jobs=args.max_pending_jobs,
                max_pending_bytes=int(args.max_pending_gb * GIB),
                min_free_disk_bytes=int(args.min_free_disk_gb * GIB),
            )
            .with_env()
            .checked()
        )
    except BadOptionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        serve(config)
    except EngineFailure as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
