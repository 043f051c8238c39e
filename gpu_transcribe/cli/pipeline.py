"""``gpu-transcribe pipeline deploy|status|destroy|webhook-secret``: the pipeline's CloudFormation stack. The
``pipeline`` group, its options, and how its results look (lines on stdout, or JSON). The jobs that run on it
are :mod:`gpu_transcribe.cli.jobs`.

The orchestration modules of :mod:`gpu_transcribe.pipeline` are imported inside the commands: they reach
``gpu_transcribe.aws`` (boto3) or cryptography, which ``gpu-transcribe --help`` must not load.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from gpu_transcribe.cli import options as opt
from gpu_transcribe.cli.base import Typer, cli_settings
from gpu_transcribe.cli.output import event_printer, print_json, print_lines, print_warning, stderr, stdout
from gpu_transcribe.errors import SettingsError

if TYPE_CHECKING:
    from gpu_transcribe.pipeline.deploy import PipelineDeployment, PipelineDestroyed, PipelineStatus

pipeline_app = Typer(
    help="A job queue on spot GPU workers that scale from zero.\n\nOne CloudFormation stack (deploy, "
    "status, destroy).",
    no_args_is_help=True,
)

# --- options ---------------------------------------------------------------------------------------------

PipelineName = Annotated[
    str | None,
    typer.Option(
        "--pipeline",
        metavar="NAME",
        help="The pipeline's name (1-20 lowercase letters, digits, hyphens). Default: default.",
    ),
]
#: ``pipeline deploy|status|destroy|webhook-secret --name``: the old spelling of ``--pipeline``, hidden and
#: kept working (with a warning).
PipelineNameOld = Annotated[str | None, typer.Option("--name", metavar="NAME", hidden=True)]
MaxWorkers = Annotated[
    int | None,
    typer.Option(
        "--max-workers", min=1, max=1000, help="Most GPU workers at once (the fleet is 0..N). Default: 4."
    ),
]
InstanceTypes = Annotated[
    str | None,
    typer.Option(
        "--instance-types",
        metavar="TYPES",
        help="GPU instance types the workers may use, comma-separated (spot, price-capacity-optimized). "
        "Default: the instance_types setting.",
    ),
]
PipelineBucket = Annotated[
    str | None,
    typer.Option(
        "--s3-bucket",
        metavar="BUCKET",
        help="Use this existing bucket (its incoming/ prefix) instead of creating one; it is never deleted.",
    ),
]
Image = Annotated[
    str | None,
    typer.Option(
        "--image",
        metavar="AMI",
        help="The workers' AMI. Default: image_id, else the newest image of ours (build-ami).",
    ),
]
DeleteData = Annotated[
    bool,
    typer.Option(
        "--delete-data",
        help="Also empty and delete the bucket the pipeline created (audio, transcripts). Default: keep it.",
    ),
]
WebhookUrl = Annotated[
    str | None,
    typer.Option(
        "--webhook-url",
        metavar="URL",
        help="POST a signed event (Standard Webhooks) here when a job succeeds, fails or is dead-lettered. "
        "http(s); private, loopback and link-local addresses are refused.",
    ),
]
PipelineCorrect = Annotated[
    bool,
    typer.Option(
        "--correct",
        help="Correct files uploaded without submit with Bedrock (the correct_model_id setting's model, "
        "checked now) and let the workers call that model.",
    ),
]
AllowPrivateWebhooks = Annotated[
    bool,
    typer.Option(
        "--allow-private-webhooks",
        help="Allow webhook URLs at private, loopback or link-local addresses (checked again at delivery).",
    ),
]


# --- pipeline: deploy, status, destroy, webhook-secret ------------------------------------------------------


def _pipeline_name(pipeline: str | None, old_name: str | None) -> str | None:
    """The pipeline's name from ``--pipeline``, or from ``--name`` (its old spelling, with a warning).

    Raises:
        SettingsError: both were given with different names.
    """
    if old_name is None:
        return pipeline
    if pipeline is not None and pipeline != old_name:
        raise SettingsError(
            "pipeline", "command line", "--name is the old spelling of --pipeline; give only --pipeline"
        )
    print_warning("--name is now --pipeline (the same in every command); --name will go", stderr)
    return old_name


@pipeline_app.command("deploy")
def pipeline_deploy(
    pipeline: PipelineName = None,
    old_name: PipelineNameOld = None,
    max_workers: MaxWorkers = None,
    instance_types: InstanceTypes = None,
    s3_bucket: PipelineBucket = None,
    image: Image = None,
    webhook_url: WebhookUrl = None,
    allow_private_webhooks: AllowPrivateWebhooks = False,
    correct: PipelineCorrect = False,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Create or update the pipeline's stack.

    Through a change set, its events shown as progress; then prints what it holds."""
    # Function-level: pipeline.deploy loads the aws package (boto3) and cryptography (kept off --help).
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
    pipeline: PipelineName = None,
    old_name: PipelineNameOld = None,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
    json: opt.Json = False,
) -> None:
    """The pipeline's stack, jobs, workers and cost per hour.

    The stack, jobs waiting, in flight and dead-lettered, the workers and their cost per hour now."""
    # Function-level: pipeline.deploy loads the aws package (boto3) and cryptography (kept off --help).
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
    pipeline: PipelineName = None,
    old_name: PipelineNameOld = None,
    delete_data: DeleteData = False,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Delete the pipeline's stack; its bucket stays.

    Its workers, queues (with any jobs in them), table, roles, scaler. The bucket is kept unless
    --delete-data."""
    # Function-level: pipeline.deploy loads the aws package (boto3) and cryptography (kept off --help).
    from gpu_transcribe.pipeline.deploy import destroy_pipeline

    settings = cli_settings(region=region, aws_profile=aws_profile)
    name = _pipeline_name(pipeline, old_name)
    result = destroy_pipeline(settings, name, delete_data=delete_data, on_progress=event_printer(stderr))
    print_lines(destroyed_lines(result), stdout)


# --- job events: the webhook secret, verifying a request, watching the results queue ---------------------


@pipeline_app.command("webhook-secret")
def pipeline_webhook_secret_command(
    pipeline: PipelineName = None,
    old_name: PipelineNameOld = None,
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
    # Function-level: the pipeline package reaches the aws package (boto3), kept off --help.
    from gpu_transcribe.pipeline.webhooks import pipeline_webhook_secret

    settings = cli_settings(region=region, aws_profile=aws_profile)
    secret = pipeline_webhook_secret(
        settings,
        _pipeline_name(pipeline, old_name),
        rotate=rotate,
        keep_previous_hours=keep_previous_hours or None,
        finish=finish_rotation,
    )
    print_lines([secret.current], stdout)
    if secret.previous:
        until = secret.previous_until
        when = (
            "until --finish-rotation"
            if until is None
            else "until " + datetime.fromtimestamp(until, tz=UTC).isoformat(timespec="seconds")
        )
        print_lines([f"rotating: the previous secret also signs {when}"], stderr, soft_wrap=False)


# --- how it looks ----------------------------------------------------------------------------------------


#: What issue 12 asks for beyond the stack, not built yet.
NOT_BUILT_YET = "not built yet: the worker, `submit` and `jobs` (docs/pipeline.md); the stack waits for them"


def deployment_lines(result: PipelineDeployment) -> list[str]:
    """``pipeline deploy``: what was done, then one line per thing the stack holds."""
    # Function-level: pipeline.template imports cryptography (kept off --help).
    from gpu_transcribe.pipeline.template import INCOMING_PREFIX, RESULTS_PREFIX

    out = result.outputs
    verb = {"unchanged": "is up to date (nothing changed)"}.get(result.action, result.action)
    bucket_note = (
        "created by the pipeline; kept by destroy unless --delete-data"
        if out.bucket_created
        else "yours; never deleted"
    )
    lines = [
        f"pipeline {result.name} {verb} in {result.region}: stack {result.stack.name} {result.stack.status} "
        f"({result.seconds:.1f} s)",
        f"bucket: {out.bucket} ({bucket_note})",
        f"upload audio to: s3://{out.bucket}/{INCOMING_PREFIX} (transcripts: s3://{out.bucket}/{RESULTS_PREFIX})",
        f"jobs queue: {out.queue_url}",
        f"dead-letter queue: {out.dead_letter_queue_url}",
        f"jobs table: {out.table}",
        f"workers: group {out.group}, 0 to {result.max_workers} spot {', '.join(result.instance_types)} "
        f"from {result.image_id}",
        f"scaler: {out.scaler_function} (every minute)",
        f"job events: {out.results_queue_url} (jobs watch)",
        f"webhooks: notifier {out.notifier_function}, secret {out.webhook_secret} "
        f"(pipeline webhook-secret), undelivered: {out.webhooks_dead_letter_queue_url}",
    ]
    if result.changes:
        lines.append("changes: " + ", ".join(f"{action} {logical}" for action, logical, _ in result.changes))
    lines.extend(f"applied after the stack: {line}" for line in result.fixed)
    lines.append(NOT_BUILT_YET)
    return lines


def _money(value: float | None) -> str:
    return "unknown (no price)" if value is None else f"${value:.4f}/h"


def status_lines(report: PipelineStatus) -> list[str]:
    """``pipeline status``: the stack, the queues, the workers (one line each) and the cost now."""
    # Function-level: pipeline.template imports cryptography (kept off --help).
    from gpu_transcribe.pipeline.template import INCOMING_PREFIX

    stack = report.stack
    when = stack.updated_at or stack.created_at
    since = f" since {when:%Y-%m-%d %H:%M} UTC" if when else ""
    reason = f" ({stack.status_reason})" if stack.status_reason else ""
    lines = [f"pipeline {report.name} in {report.region}: stack {stack.status}{reason}{since}"]
    if report.jobs is not None:
        lines.append(
            f"jobs: {report.jobs.visible} waiting, {report.jobs.in_flight} in flight"
            + (f", {report.jobs.delayed} delayed" if report.jobs.delayed else "")
        )
    if report.dead_letter is not None:
        # in flight: hidden by a reconciliation that left them (gpu_transcribe.pipeline.jobs)
        lines.append(f"dead-lettered: {report.dead_letter.visible + report.dead_letter.in_flight}")
    if report.reconciled is not None and report.reconciled.error:
        lines.append(f"note: the dead-letter queue was not reconciled: {report.reconciled.error}")
    if report.reconciled is not None and report.reconciled.dead_lettered:
        lines.append(
            "marked dead_lettered now (SQS had dead-lettered their messages; `jobs retry` queues them "
            f"again): {', '.join(report.reconciled.dead_lettered)}"
        )
    if report.webhooks is not None and report.webhooks_dead_letter is not None:
        pending = report.webhooks.visible + report.webhooks.in_flight + report.webhooks.delayed
        lines.append(
            f"webhooks: {pending} to deliver or retry, {report.webhooks_dead_letter.visible} undelivered "
            "(dead-lettered)"
        )
    group = report.group
    if group is None:
        lines.append("workers: no group (the stack is not complete)")
    else:
        running = sum(1 for i in group.instances if i.lifecycle_state == "InService")
        lines.append(
            f"workers: {running} in service of {len(group.instances)} (desired {group.desired}, "
            f"max {group.max_size})"
        )
        for instance in group.instances:
            protected = ", protected (busy)" if instance.protected else ""
            lines.append(
                f"  {instance.instance_id} {instance.instance_type} {instance.zone} "
                f"{instance.lifecycle_state} {instance.health}{protected}"
            )
    for cost in report.costs:
        lines.append(
            f"  {cost.count} x {cost.market} {cost.instance_type} in {cost.zone} at "
            f"{_money(cost.price_usd_per_hour)} each"
        )
    lines.append(f"cost now: {_money(report.cost_usd_per_hour)} (the workers' prices now; instances only)")
    lines.append(f"bucket: s3://{report.outputs.bucket}/{INCOMING_PREFIX}")
    return lines


def destroyed_lines(result: PipelineDestroyed) -> list[str]:
    """``pipeline destroy``: the stack deleted, and what became of the bucket."""
    fate = {
        "kept": "kept (it holds the audio and transcripts; --delete-data deletes it; to delete it now: "
        f"aws s3 rb --force s3://{result.bucket})",
        "deleted": f"emptied ({result.objects_deleted} object(s)) and deleted",
        "yours-kept": "yours, kept; the pipeline's notification on it was removed",
    }[result.bucket_fate]
    return [
        f"pipeline {result.name} destroyed in {result.region}: stack {result.stack_name} deleted",
        f"bucket {result.bucket}: {fate}",
    ]
