"""The commands of the pipeline: ``pipeline deploy|status|destroy|webhook-secret``, ``submit``, ``jobs``
(list, fetch, retry, watch), ``worker`` and ``webhook verify``. Parsing and printing only; see
:mod:`gpu_transcribe.cli.app`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from gpu_transcribe.cli import options as opt
from gpu_transcribe.cli.app import (
    Group,
    Typer,
    app,
    cli_settings,
    pipeline_app,
    stderr,
    stdout,
    webhook_app,
)
from gpu_transcribe.errors import GpuTranscribeError
from gpu_transcribe_engine.options import TranscribeOptions

if TYPE_CHECKING:
    from gpu_transcribe.settings import Settings


# --- the pipeline's jobs: submit, jobs, worker --------------------------------------------------------------


def _pipeline(name: str | None, region: str | None, aws_profile: str | None) -> tuple[Any, Any, Settings]:
    """``(AwsContext, PipelineConfig, Settings)`` for ``--pipeline NAME`` (the pipeline's own region wins).

    Raises:
        PipelineNotFoundError: no description file and no stack of the pipeline.
        PipelineConfigError: a description file or stack that cannot be used.
        CloudError, CredentialsError: reading the stack failed.
    """
    from dataclasses import replace

    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.pipeline.config import find_pipeline

    settings = cli_settings(region=region, aws_profile=aws_profile)
    ctx = AwsContext.from_settings(settings)
    config = find_pipeline(ctx, name, default_language=settings.language)
    if config.region and config.region != ctx.region:
        ctx = replace(ctx, region=config.region)
    return ctx, config, settings


@app.command()
def submit(
    paths: opt.AudioFiles,
    language: opt.Language = None,
    formats: opt.JobFormat = None,
    model: opt.JobModel = None,
    webhook_url: opt.JobWebhookUrl = None,
    correct: opt.JobCorrect = False,
    pipeline: opt.PipelineOption = None,
    wait: opt.Wait = False,
    timeout: opt.WaitTimeout = None,
    output_dir: opt.SubmitOutputDir = None,
    overwrite: opt.Overwrite = False,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Submit audio files to the pipeline: one job each.

    Job ids go to stdout, one per line. With --wait, progress goes to stderr and the outputs are downloaded
    into --output-dir (default: the current directory)."""
    from gpu_transcribe.aws.pipeline.jobs_table import JobOptions
    from gpu_transcribe.cli.render import print_lines
    from gpu_transcribe.pipeline.jobs import PipelineInputError
    from gpu_transcribe.pipeline.submit import check_files, submit_files, wake_fleet
    from gpu_transcribe_engine.options import parse_formats

    if output_dir is not None and not wait:
        raise PipelineInputError("-o/--output-dir applies only with --wait; drop it or add --wait")
    if timeout is not None and not wait:
        raise PipelineInputError("--timeout applies only with --wait; drop it or add --wait")
    try:
        format_names = parse_formats(formats) if formats else ()
        if language is not None:
            language = TranscribeOptions(language=language).validated().language
    except ValueError as exc:
        raise PipelineInputError(str(exc)) from None
    check_files(paths)
    ctx, config, _ = _pipeline(pipeline, region, aws_profile)
    if correct and format_names and "json" not in format_names:  # the correction reads the raw JSON
        format_names = (*format_names, "json")
    options = JobOptions(language=language, formats=format_names, model=model, correct=correct)
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
    from pathlib import Path

    from gpu_transcribe.aws.pipeline.jobs_table import FINAL_STATUSES
    from gpu_transcribe.cli.render import print_lines
    from gpu_transcribe.cli.render_jobs import job_status_lines
    from gpu_transcribe.errors import GpuTranscribeError as _Error
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
        raise _Error("; ".join(problems))


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
app.add_typer(jobs_app, name="jobs")


@jobs_app.command("list")
def jobs_list(
    job_ids: opt.JobIds = None,
    status: opt.JobStatus = None,
    since: opt.Since = None,
    json: opt.Json = False,
    pipeline: opt.PipelineOption = None,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """List jobs (all, or those named).

    Each with its status, file, duration, attempts, worker, times and error. Jobs whose messages SQS moved to
    the dead-letter queue are marked dead_lettered first."""
    from gpu_transcribe.cli.render import print_lines
    from gpu_transcribe.cli.render_jobs import jobs_json, print_jobs
    from gpu_transcribe.pipeline.dead_letters import reconcile_dead_letters
    from gpu_transcribe.pipeline.jobs import list_jobs

    ctx, config, _ = _pipeline(pipeline, region, aws_profile)
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
    job_ids: opt.JobIdsRequired,
    output_dir: opt.FetchDir,
    overwrite: opt.Overwrite = False,
    pipeline: opt.PipelineOption = None,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Download the outputs of succeeded jobs into DIR.

    Their paths go to stdout; jobs not done are named on stderr and the exit status is 1."""
    from gpu_transcribe.cli.render import print_output_paths
    from gpu_transcribe.errors import GpuTranscribeError as _Error
    from gpu_transcribe.pipeline.jobs import fetch_outputs

    ctx, config, _ = _pipeline(pipeline, region, aws_profile)
    result = fetch_outputs(ctx, config, job_ids, output_dir, overwrite=overwrite)
    print_output_paths(result.written, stdout)
    if result.not_ready:
        named = ", ".join(f"{job_id} ({status})" for job_id, status in result.not_ready)
        raise _Error(f"no outputs for {named}: only succeeded jobs have them")


@jobs_app.command("retry")
def jobs_retry(
    job_ids: opt.JobIdsRequired,
    pipeline: opt.PipelineOption = None,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Resubmit failed or dead-lettered jobs.

    Their engine failures are reset; their ids go to stdout."""
    from gpu_transcribe.cli.render import print_lines
    from gpu_transcribe.errors import GpuTranscribeError as _Error
    from gpu_transcribe.pipeline.jobs import retry_jobs

    ctx, config, _ = _pipeline(pipeline, region, aws_profile)
    result = retry_jobs(ctx, config, job_ids)
    print_lines(result.requeued, stdout)
    if result.refused:
        named = ", ".join(f"{job_id} ({status})" for job_id, status in result.refused)
        raise _Error(f"not resubmitted: {named}; only failed or dead-lettered jobs are")


@app.command()
def worker(
    model: opt.WorkerModel = None,
    device: opt.WorkerDevice = "auto",
    exit_when_idle: opt.ExitWhenIdle = None,
    max_lifetime_h: opt.WorkerMaxLifetimeH = None,
    pipeline: opt.PipelineOption = None,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Take jobs from the pipeline's queue and transcribe them here.

    What the fleet's instances run. Progress on stderr; exits 0 when idle for --exit-when-idle seconds, at
    --max-lifetime-h hours or after a spot interruption notice, 1 when it should have left its Auto Scaling
    group and could not (so that systemd restarts it), 130/143 on SIGINT/SIGTERM after handing its jobs
    back."""
    import signal

    from gpu_transcribe.cli.render_jobs import worker_event_printer
    from gpu_transcribe.correct.config import CorrectionConfig
    from gpu_transcribe.pipeline.worker import Worker, WorkerOptions

    ctx, config, settings = _pipeline(pipeline, region, aws_profile)
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
    stderr.print(
        f"worker {report.worker_id}: {len(report.succeeded)} succeeded, {len(report.failed)} failed, "
        f"{len(report.released)} handed back; stopped: {report.reason}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    by_name = {s.name: code for s, code in codes.items()}
    if report.reason in by_name:
        raise typer.Exit(by_name[report.reason])
    if report.leave_failed:
        stderr.print(
            f"error: worker {report.worker_id} could not leave its Auto Scaling group; exiting 1 so that "
            "systemd starts it again (the dead-man switch powers the instance off if it never leaves)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)


# --- pipeline: deploy, status, destroy -------------------------------------------------------------------


def _pipeline_name(pipeline: str | None, old_name: str | None) -> str | None:
    """The pipeline's name from ``--pipeline``, or from ``--name`` (its old spelling, with a warning).

    Raises:
        SettingsError: both were given with different names.
    """
    if old_name is None:
        return pipeline
    from gpu_transcribe.cli.render import print_warning
    from gpu_transcribe.errors import SettingsError

    if pipeline is not None and pipeline != old_name:
        raise SettingsError(
            "pipeline", "command line", "--name is the old spelling of --pipeline; give only --pipeline"
        )
    print_warning("--name is now --pipeline (the same in every command); --name will go", stderr)
    return old_name


@pipeline_app.command("deploy")
def pipeline_deploy(
    pipeline: opt.PipelineName = None,
    old_name: opt.PipelineNameOld = None,
    max_workers: opt.MaxWorkers = None,
    instance_types: opt.InstanceTypes = None,
    s3_bucket: opt.PipelineBucket = None,
    image: opt.Image = None,
    webhook_url: opt.WebhookUrl = None,
    allow_private_webhooks: opt.AllowPrivateWebhooks = False,
    correct: opt.PipelineCorrect = False,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Create or update the pipeline's stack.

    Through a change set, its events shown as progress; then prints what it holds."""
    from gpu_transcribe.cli.progress import event_printer
    from gpu_transcribe.cli.render import print_lines
    from gpu_transcribe.cli.render_pipeline import deployment_lines
    from gpu_transcribe.pipeline.deploy import DeployRequest, deploy_pipeline

    settings = cli_settings(
        region=region,
        aws_profile=aws_profile,
        instance_types=instance_types,
        s3_bucket=s3_bucket,
        image_id=image,
    )
    request = DeployRequest(
        name=_pipeline_name(pipeline, old_name),
        max_workers=max_workers,
        bucket=settings.s3_bucket if s3_bucket else None,  # the flag only: s3_bucket is run's upload bucket
        image_id=settings.image_id,
        webhook_url=webhook_url or "",
        allow_private_webhooks=allow_private_webhooks,
        correct=correct,
    )
    result = deploy_pipeline(settings, request, on_progress=event_printer(stderr))
    print_lines(deployment_lines(result), stdout)


@pipeline_app.command("status")
def pipeline_status_command(
    pipeline: opt.PipelineName = None,
    old_name: opt.PipelineNameOld = None,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
    json: opt.Json = False,
) -> None:
    """The pipeline's stack, jobs, workers and cost per hour.

    The stack, jobs waiting, in flight and dead-lettered, the workers and their cost per hour now."""
    from gpu_transcribe.cli.render import print_json, print_lines
    from gpu_transcribe.cli.render_pipeline import status_lines
    from gpu_transcribe.pipeline.deploy import pipeline_status

    settings = cli_settings(region=region, aws_profile=aws_profile)
    name = _pipeline_name(pipeline, old_name)
    with stderr.status(escape(f"reading pipeline {name or 'default'} in {settings.region}")):
        report = pipeline_status(settings, name)
    if json:
        print_json(report, stdout)
    else:
        print_lines(status_lines(report), stdout)


@pipeline_app.command("destroy")
def pipeline_destroy(
    pipeline: opt.PipelineName = None,
    old_name: opt.PipelineNameOld = None,
    delete_data: opt.DeleteData = False,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Delete the pipeline's stack; its bucket stays.

    Its workers, queues (with any jobs in them), table, roles, scaler. The bucket is kept unless
    --delete-data."""
    from gpu_transcribe.cli.progress import event_printer
    from gpu_transcribe.cli.render import print_lines
    from gpu_transcribe.cli.render_pipeline import destroyed_lines
    from gpu_transcribe.pipeline.deploy import destroy_pipeline

    settings = cli_settings(region=region, aws_profile=aws_profile)
    name = _pipeline_name(pipeline, old_name)
    result = destroy_pipeline(settings, name, delete_data=delete_data, on_progress=event_printer(stderr))
    print_lines(destroyed_lines(result), stdout)


# --- job events: the webhook secret, verifying a request, watching the results queue ---------------------


@pipeline_app.command("webhook-secret")
def pipeline_webhook_secret_command(
    pipeline: opt.PipelineName = None,
    old_name: opt.PipelineNameOld = None,
    rotate: Annotated[
        bool, typer.Option("--rotate", help="Start a rotation: a new secret; the old one keeps signing.")
    ] = False,
    keep_previous_hours: Annotated[
        float,
        typer.Option(
            "--keep-previous-hours",
            min=0.0,
            help="With --rotate: hours the old secret keeps signing (0: until --finish-rotation).",
        ),
    ] = 24.0,
    finish_rotation: Annotated[
        bool, typer.Option("--finish-rotation", help="End a rotation: only the new secret signs.")
    ] = False,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Print the pipeline's webhook signing secret, or rotate it.

    The secret (whsec_...) goes to stdout. During a rotation every webhook carries both signatures, so
    receivers can switch at their own pace."""
    from datetime import UTC, datetime

    from gpu_transcribe.pipeline.webhooks import pipeline_webhook_secret

    settings = cli_settings(region=region, aws_profile=aws_profile)
    secret = pipeline_webhook_secret(
        settings,
        _pipeline_name(pipeline, old_name),
        rotate=rotate,
        keep_previous_hours=keep_previous_hours or None,
        finish=finish_rotation,
    )
    stdout.print(secret.current, markup=False, highlight=False, soft_wrap=True)
    if secret.previous:
        until = secret.previous_until
        when = (
            "until --finish-rotation"
            if until is None
            else "until " + datetime.fromtimestamp(until, tz=UTC).isoformat(timespec="seconds")
        )
        stderr.print(f"rotating: the previous secret also signs {when}", markup=False, highlight=False)


@webhook_app.command("verify")
def webhook_verify_command(
    secret_file: opt.SecretFile,
    headers_file: opt.HeadersFile = None,
    body_file: opt.BodyFile = None,
) -> None:
    """Check a webhook request's signature: valid (exit 0) or not (1).

    With the standardwebhooks library (its 5-minute timestamp tolerance included)."""
    import sys

    from standardwebhooks.webhooks import WebhookVerificationError

    from gpu_transcribe.pipeline.webhooks import parse_saved_request, verify_request

    secrets = [line.strip() for line in secret_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    raw = body_file.read_bytes() if body_file is not None else sys.stdin.buffer.read()
    if headers_file is not None:
        headers, _ = parse_saved_request(headers_file.read_text(encoding="utf-8"))
        body = raw
    else:
        headers, body = parse_saved_request(raw.decode("utf-8"))
    try:
        payload = verify_request(secrets, headers, body)
    except (WebhookVerificationError, ValueError) as exc:
        stdout.print(f"invalid: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    kind = payload.get("type", "?") if isinstance(payload, dict) else "?"
    stdout.print(f"valid: {headers.get('webhook-id')} {kind}", markup=False, highlight=False)


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
    import json as json_module

    from gpu_transcribe.aws.clients import AwsContext, aws_errors
    from gpu_transcribe.pipeline.results import results_queue_url, watch_results

    settings = cli_settings(region=region, aws_profile=aws_profile)
    queue_url = results_queue_url(settings, pipeline)
    ctx = AwsContext.from_settings(settings)
    with aws_errors(ctx, "reading the results queue"):
        for event in watch_results(
            ctx, queue_url, delete=not keep, wait_s=0 if once else 20, stop_when_empty=once
        ):
            stdout.print(json_module.dumps(event), markup=False, highlight=False, soft_wrap=True)
