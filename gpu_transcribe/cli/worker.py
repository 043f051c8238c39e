"""``gpu-transcribe worker``: take jobs from the pipeline's queue and transcribe them here (what the fleet's
instances run); its options and its progress lines on stderr.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Console

from gpu_transcribe.cli import options as opt
from gpu_transcribe.cli.jobs import pipeline_context
from gpu_transcribe.cli.output import print_lines, stderr
from gpu_transcribe.common import ProgressEvent
from gpu_transcribe_engine.options import DEFAULT_MODEL

# --- options ---------------------------------------------------------------------------------------------

WorkerModel = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        metavar="ID_OR_DIR",
        help="Whisper model: a Hugging Face id or a model directory on this machine. Default: the "
        f"pipeline's model, else setting model ({DEFAULT_MODEL}).",
    ),
]
WorkerDevice = Annotated[str, typer.Option("--device", help="auto (cuda if torch sees a GPU), cpu or cuda.")]
ExitWhenIdle = Annotated[
    float | None,
    typer.Option(
        "--exit-when-idle",
        min=0,
        help="Exit after this many seconds with nothing received (inside the pipeline's group: leave it).",
    ),
]
WorkerMaxLifetimeH = Annotated[
    float | None,
    typer.Option(
        "--max-lifetime-h",
        min=0,
        help="Stop receiving this many hours after the start, finish the batch in hand and exit (inside the "
        "pipeline's group: leave it, as when idle). The fleet's unit passes 12. Default: no limit.",
    ),
]


# --- worker ----------------------------------------------------------------------------------------------


def worker(
    model: WorkerModel = None,
    device: WorkerDevice = "auto",
    exit_when_idle: ExitWhenIdle = None,
    max_lifetime_h: WorkerMaxLifetimeH = None,
    pipeline: opt.PipelineOption = None,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Take jobs from the pipeline's queue and transcribe them here.

    What the fleet's instances run. Progress on stderr; exits 0 when idle for --exit-when-idle seconds, at
    --max-lifetime-h hours or after a spot interruption notice, 1 when it should have left its Auto Scaling
    group and could not (so that systemd restarts it), 130/143 on SIGINT/SIGTERM after handing its jobs
    back."""
    # Function-level: the worker module loads the aws package (boto3) and cryptography (kept off --help).
    from gpu_transcribe.correct.config import CorrectionConfig
    from gpu_transcribe.pipeline.worker import Worker, WorkerOptions

    ctx, config, settings = pipeline_context(pipeline, region, aws_profile)
    chosen = model or config.default_model or settings.model
    loop = Worker(
        ctx,
        config,
        WorkerOptions(
            model=chosen,
            device=device,
            exit_when_idle_s=exit_when_idle,
            max_lifetime_s=None if max_lifetime_h is None else max_lifetime_h * 3600.0,
            correction=CorrectionConfig.from_settings(settings).for_pipeline(
                config.correct_model_id, config.correct_region
            ),
        ),
        on_event=worker_event_printer(stderr),
    )
    codes = {signal.SIGINT: 130, signal.SIGTERM: 143}
    for signum in codes:
        signal.signal(signum, lambda number, _frame: loop.request_stop(signal.Signals(number).name))
    report = loop.run()
    print_lines(
        [
            f"worker {report.worker_id}: {len(report.succeeded)} succeeded, {len(report.failed)} failed, "
            f"{len(report.released)} handed back; stopped: {report.reason}"
        ],
        stderr,
    )
    by_name = {s.name: code for s, code in codes.items()}
    if report.reason in by_name:
        raise typer.Exit(by_name[report.reason])
    if report.leave_failed:
        print_lines(
            [
                f"error: worker {report.worker_id} could not leave its Auto Scaling group; exiting 1 so that "
                "systemd starts it again (the dead-man switch powers the instance off if it never leaves)"
            ],
            stderr,
        )
        raise typer.Exit(1)


def worker_event_printer(console: Console) -> Callable[[ProgressEvent], None]:
    """A progress callback printing each worker event as ``worker: <message>`` on ``console``."""

    def on_event(event: ProgressEvent) -> None:
        """Print one event."""
        print_lines([f"worker: {event.message}"], console)

    return on_event
