"""The pipeline's jobs: ``submit`` and ``jobs`` (list, fetch, retry, watch); their options, the ``jobs``
group, and how jobs look (a table, JSON, progress lines). The stack is :mod:`gpu_transcribe.cli.pipeline`,
the worker :mod:`gpu_transcribe.cli.worker`.

The orchestration modules of :mod:`gpu_transcribe.pipeline` are imported inside the commands: they reach
``gpu_transcribe.aws`` (boto3) or cryptography, which ``gpu-transcribe --help`` must not load.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from gpu_transcribe.cli import options as opt
from gpu_transcribe.cli.base import Group, Typer, cli_settings
from gpu_transcribe.cli.output import add_row, print_lines, print_output_paths, print_table, stderr, stdout
from gpu_transcribe.errors import GpuTranscribeError
from gpu_transcribe.settings import Settings
from gpu_transcribe_engine.options import DEFAULT_LANGUAGE, TranscribeOptions, parse_formats

if TYPE_CHECKING:
    # Function-level: the pipeline and aws modules load boto3 or cryptography (kept off --help).
    from gpu_transcribe.aws.pipeline.jobs_table import JobRecord

# --- options ---------------------------------------------------------------------------------------------

AudioFiles = Annotated[
    list[Path], typer.Argument(metavar="AUDIO...", help="Audio files, one job each.", show_default=False)
]
SubmitOutputDir = Annotated[
    Path | None,
    typer.Option(
        "--output-dir",
        "-o",
        metavar="DIR",
        help="With --wait: write the outputs here. Default: the current directory.",
    ),
]
JobFormat = Annotated[
    str | None,
    typer.Option(
        "--format",
        "-f",
        metavar="LIST",
        help="Output formats, comma-separated (txt,json,srt,vtt); default: the pipeline's.",
    ),
]
JobModel = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        metavar="ID",
        help="The model the job needs; default: whatever the pipeline's workers run.",
    ),
]
JobWebhookUrl = Annotated[
    str | None,
    typer.Option(
        "--webhook-url",
        metavar="URL",
        help="POST the jobs' events (succeeded, failed, dead-lettered) here, signed (Standard Webhooks).",
    ),
]
JobCorrect = Annotated[
    bool,
    typer.Option(
        "--correct",
        help="Also correct the transcripts with Bedrock (the workers' correct_* settings): "
        "STEM.corrected.FORMAT beside the raw outputs; adds json to --format.",
    ),
]
Wait = Annotated[
    bool,
    typer.Option("--wait", help="Follow the jobs to the end (progress on stderr) and download the outputs."),
]
WaitTimeout = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        metavar="SECONDS",
        min=1,
        help="With --wait: stop waiting after SECONDS, download what succeeded and exit 1 naming the jobs "
        "not finished (default: wait until every job ends).",
    ),
]
JobIds = Annotated[
    list[str] | None,
    typer.Argument(metavar="JOB_ID...", help="Job ids; default: every job.", show_default=False),
]
JobIdsRequired = Annotated[
    list[str], typer.Argument(metavar="JOB_ID...", help="Job ids.", show_default=False)
]
JobStatus = Annotated[
    str | None,
    typer.Option(
        "--status",
        help="Only jobs with this status: queued, running, succeeded, failed, interrupted, dead_lettered.",
    ),
]
Since = Annotated[
    str | None,
    typer.Option("--since", help="Only jobs created since: an age (90m, 2h, 3d) or an ISO 8601 time."),
]
FetchDir = Annotated[
    Path, typer.Option("--output-dir", "-o", metavar="DIR", help="Where to write the outputs.")
]


# --- submit ----------------------------------------------------------------------------------------------


def pipeline_context(
    name: str | None, region: str | None, aws_profile: str | None
) -> tuple[Any, Any, Settings]:
    """``(AwsContext, PipelineConfig, Settings)`` for ``--pipeline NAME`` (the pipeline's own region wins).

    Raises:
        PipelineNotFoundError: no description file and no stack of the pipeline.
        PipelineConfigError: a description file or stack that cannot be used.
        CloudError, CredentialsError: reading the stack failed.
    """
    # Function-level: the pipeline and aws modules load boto3 or cryptography (kept off --help).
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.pipeline.config import find_pipeline

    settings = cli_settings(region=region, aws_profile=aws_profile)
    ctx = AwsContext.from_settings(settings)
    config = find_pipeline(ctx, name, default_language=settings.language)
    if config.region and config.region != ctx.region:
        ctx = replace(ctx, region=config.region)
    return ctx, config, settings


def submit(
    paths: AudioFiles,
    language: opt.Language = None,
    formats: JobFormat = None,
    model: JobModel = None,
    webhook_url: JobWebhookUrl = None,
    correct: JobCorrect = False,
    word_timestamps: opt.WordTimestamps = False,
    prompt: opt.Prompt = None,
    max_line_width: opt.MaxLineWidth = None,
    max_line_count: opt.MaxLineCount = None,
    max_cue_duration: opt.MaxCueDuration = None,
    pipeline: opt.PipelineOption = None,
    wait: Wait = False,
    timeout: WaitTimeout = None,
    output_dir: SubmitOutputDir = None,
    overwrite: opt.Overwrite = False,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Submit audio files to the pipeline: one job each.

    Job ids go to stdout, one per line. With --wait, progress goes to stderr and the outputs are downloaded
    into --output-dir (default: the current directory)."""
    # Function-level: the pipeline and aws modules load boto3 or cryptography (kept off --help).
    from gpu_transcribe.aws.pipeline.jobs_table import JobOptions
    from gpu_transcribe.pipeline.jobs import PipelineInputError
    from gpu_transcribe.pipeline.submit import check_files, submit_files, wake_fleet

    if output_dir is not None and not wait:
        raise PipelineInputError("-o/--output-dir applies only with --wait; drop it or add --wait")
    if timeout is not None and not wait:
        raise PipelineInputError("--timeout applies only with --wait; drop it or add --wait")
    try:
        format_names = parse_formats(formats) if formats else ()
        checked = TranscribeOptions(
            language=language or DEFAULT_LANGUAGE,  # None: the pipeline's default, filled in by the worker
            word_timestamps=word_timestamps,
            prompt=prompt,
            max_line_width=max_line_width,
            max_line_count=max_line_count,
            max_cue_s=max_cue_duration,
        ).validated()
    except ValueError as exc:
        raise PipelineInputError(str(exc)) from None
    check_files(paths)
    ctx, config, _ = pipeline_context(pipeline, region, aws_profile)
    if correct and format_names and "json" not in format_names:  # the correction reads the raw JSON
        format_names = (*format_names, "json")
    options = JobOptions(
        language=None if language is None else checked.language,
        formats=format_names,
        model=model,
        correct=correct,
        word_timestamps=checked.word_timestamps,
        prompt=checked.prompt,
        max_line_width=checked.max_line_width,
        max_line_count=checked.max_line_count,
        max_cue_s=checked.max_cue_s,
    )
    jobs = submit_files(
        ctx,
        config,
        paths,
        options,
        on_submitted=lambda job: print_lines([job.job_id], stdout),
        webhook_url=webhook_url or "",
    )
    try:
        scaled = wake_fleet(ctx, config)
    except GpuTranscribeError as exc:  # the jobs are queued; the scheduled scaler runs within a minute
        print_lines([f"note: could not wake the workers now ({exc}); the scaler's schedule will"], stderr)
    else:
        if scaled is not None and scaled["raised"]:
            print_lines([f"workers: desired {scaled['desired_before']} -> {scaled['desired']}"], stderr)
    if wait:
        _wait_and_fetch(ctx, config, [job.job_id for job in jobs], output_dir, overwrite, timeout)


def _wait_and_fetch(
    ctx: Any, config: Any, job_ids: list[str], output_dir: Any, overwrite: bool, timeout_s: float | None
) -> None:
    # Function-level: the pipeline and aws modules load boto3 or cryptography (kept off --help).
    from gpu_transcribe.aws.pipeline.jobs_table import FINAL_STATUSES
    from gpu_transcribe.pipeline.jobs import fetch_outputs, wait_for_jobs

    records = wait_for_jobs(
        ctx,
        config,
        job_ids,
        on_change=lambda rs: print_lines(job_status_lines(rs), stderr),
        timeout_s=timeout_s,
    )
    result = fetch_outputs(ctx, config, job_ids, output_dir or Path("."), overwrite=overwrite)
    print_lines((f"wrote {path}" for path in result.written), stderr)
    waiting = [r for r in records if r.status not in FINAL_STATUSES]
    failed = [r for r in records if r.status in FINAL_STATUSES and r.status != "succeeded"]
    problems = []
    if failed:
        problems.append(
            f"{len(failed)} of {len(records)} job(s) did not succeed: " + ", ".join(r.job_id for r in failed)
        )
    if waiting:
        named = ", ".join(f"{r.job_id} ({r.status})" for r in waiting)
        problems.append(
            f"{len(waiting)} of {len(records)} job(s) not finished after --timeout {timeout_s:g} s: {named}; "
            "`gpu-transcribe jobs` follows them"
        )
    if problems:
        raise GpuTranscribeError("; ".join(problems))


class _JobsGroup(Group):
    """``jobs ID...`` and ``jobs --status S`` mean ``jobs list ...``: anything that is not a subcommand."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


jobs_app = Typer(
    cls=_JobsGroup,
    help="The pipeline's jobs: list, fetch, retry, watch.\n\n`jobs [JOB_ID...]` lists them, `jobs fetch` "
    "downloads outputs, `jobs retry` resubmits failed ones, `jobs watch` follows job events.",
)


@jobs_app.command("list")
def jobs_list(
    job_ids: JobIds = None,
    status: JobStatus = None,
    since: Since = None,
    json: opt.Json = False,
    pipeline: opt.PipelineOption = None,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """List jobs (all, or those named).

    Each with its status, file, duration, attempts, worker, times and error. Jobs whose messages SQS moved to
    the dead-letter queue are marked dead_lettered first."""
    # Function-level: the pipeline and aws modules load boto3 or cryptography (kept off --help).
    from gpu_transcribe.pipeline.dead_letters import reconcile_dead_letters
    from gpu_transcribe.pipeline.jobs import list_jobs

    ctx, config, _ = pipeline_context(pipeline, region, aws_profile)
    reconciled = reconcile_dead_letters(ctx, config)
    if reconciled.error:
        print_lines([f"note: the dead-letter queue was not reconciled: {reconciled.error}"], stderr)
    if reconciled.dead_lettered:
        named = ", ".join(reconciled.dead_lettered)
        print_lines([f"marked dead_lettered (SQS had dead-lettered their messages): {named}"], stderr)
    records = list_jobs(ctx, config, job_ids or (), status=status, since=since)
    if json:
        print_lines([jobs_json(records)], stdout)
    else:
        print_jobs(records, stdout)


@jobs_app.command("fetch")
def jobs_fetch(
    job_ids: JobIdsRequired,
    output_dir: FetchDir,
    overwrite: opt.Overwrite = False,
    pipeline: opt.PipelineOption = None,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Download the outputs of succeeded jobs into DIR.

    Their paths go to stdout; jobs not done are named on stderr and the exit status is 1."""
    # Function-level: the pipeline and aws modules load boto3 or cryptography (kept off --help).
    from gpu_transcribe.pipeline.jobs import fetch_outputs

    ctx, config, _ = pipeline_context(pipeline, region, aws_profile)
    result = fetch_outputs(ctx, config, job_ids, output_dir, overwrite=overwrite)
    print_output_paths(result.written, stdout)
    if result.not_ready:
        named = ", ".join(f"{job_id} ({status})" for job_id, status in result.not_ready)
        raise GpuTranscribeError(f"no outputs for {named}: only succeeded jobs have them")


@jobs_app.command("retry")
def jobs_retry(
    job_ids: JobIdsRequired,
    pipeline: opt.PipelineOption = None,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Resubmit failed or dead-lettered jobs.

    Their engine failures are reset; their ids go to stdout."""
    # Function-level: the pipeline and aws modules load boto3 or cryptography (kept off --help).
    from gpu_transcribe.pipeline.jobs import retry_jobs

    ctx, config, _ = pipeline_context(pipeline, region, aws_profile)
    result = retry_jobs(ctx, config, job_ids)
    print_lines(result.requeued, stdout)
    if result.refused:
        named = ", ".join(f"{job_id} ({status})" for job_id, status in result.refused)
        raise GpuTranscribeError(f"not resubmitted: {named}; only failed or dead-lettered jobs are")


@jobs_app.command("watch")
def jobs_watch(
    pipeline: opt.PipelineOption = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the events on the queue (for another reader).")
    ] = False,
    once: Annotated[bool, typer.Option("--once", help="Stop when the queue is empty.")] = False,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Follow the pipeline's results queue: job events as JSON lines.

    One JSON job event per line on stdout (deleted once printed, unless --keep). A pull channel for systems
    that cannot receive webhooks (docs/pipeline.md)."""
    # Function-level: the pipeline and aws modules load boto3 or cryptography (kept off --help).
    from gpu_transcribe.aws.clients import AwsContext, aws_errors
    from gpu_transcribe.pipeline.results import results_queue_url, watch_results

    settings = cli_settings(region=region, aws_profile=aws_profile)
    queue_url = results_queue_url(settings, pipeline)
    ctx = AwsContext.from_settings(settings)
    with aws_errors(ctx, "reading the results queue"):
        for event in watch_results(
            ctx, queue_url, delete=not keep, wait_s=0 if once else 20, stop_when_empty=once
        ):
            print_lines([json.dumps(event)], stdout)


# --- how jobs look --------------------------------------------------------------------------------------


def _time(iso: str) -> str:
    """``2026-12-02T06:19:40.123Z`` as ``2026-12-02 06:19:40``."""
    return iso[:19].replace("T", " ") if iso else "-"


def jobs_json(records: Sequence[JobRecord]) -> str:
    """The records as a JSON list of objects (field name -> value; tuples as lists)."""
    return json.dumps([dataclasses.asdict(r) for r in records], indent=2, ensure_ascii=False)


def print_jobs(records: Sequence[JobRecord], console: Console) -> None:
    """A table: job id, status, file, audio duration, attempts (with engine failures and interruptions),
    worker, created and updated times (UTC), error."""
    table = Table(box=None, pad_edge=False)
    for name in ("job", "status"):  # never folded: scripts and eyes look for whole ids
        table.add_column(name, no_wrap=True)
    for name in ("file", "duration", "attempts", "worker", "created (UTC)", "updated", "error"):
        table.add_column(name, overflow="fold")
    for r in records:
        attempts = f"{r.attempts}"
        if r.engine_failures or r.interruptions:
            attempts += f" ({r.engine_failures} failed, {r.interruptions} interrupted)"
        duration = "-" if r.duration_s is None else f"{r.duration_s:.1f} s"
        add_row(
            table,
            r.job_id,
            r.status,
            r.file_name,
            duration,
            attempts,
            r.owner or "-",
            _time(r.created_at),
            _time(r.updated_at),
            r.error or "",
        )
    print_table(table, console, soft_wrap=True)


def job_status_lines(records: Sequence[JobRecord]) -> list[str]:
    """One progress line per job: ``<job id> <status> <file>`` (``submit --wait`` on stderr)."""
    lines = []
    for r in records:
        tail = f": {r.error}" if r.error and r.status in ("failed", "dead_lettered") else ""
        lines.append(f"{r.job_id}  {r.status:<13} {r.file_name}{tail}")
    return lines
