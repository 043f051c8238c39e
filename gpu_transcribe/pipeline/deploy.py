"""``gpu-transcribe pipeline deploy | status | destroy``: orchestration, no printing (progress by callback).

- :func:`deploy_pipeline`: plans the stack (:func:`.plan.build_spec`: the image, as ``run`` chooses it, the
  VPC and one subnet per zone, as ``run`` finds them), fills the template
  (``stack.yaml``, :mod:`.template`) and its parameters, creates or updates the stack through a change set
  (:mod:`gpu_transcribe.aws.pipeline.stack`),
  then makes sure of what CloudFormation may skip (:func:`finish_deploy`).
- :func:`pipeline_status`: the stack, the queues' counts, the workers and what they cost per hour now.
- :func:`destroy_pipeline`: deletes the stack; the bucket stays (``DeletionPolicy: Retain``) unless
  ``delete_data`` and the stack created it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from gpu_transcribe.aws.pipeline.models import (
    PIPELINE_STACK_PREFIX,
    PipelineOutputs,
    QueueCounts,
    StackInfo,
    WorkerGroup,
    pipeline_stack_name,
)
from gpu_transcribe.common import ProgressCallback, ProgressEvent, no_progress
from gpu_transcribe.errors import GpuTranscribeError, PipelineNotFoundError, StackError
from gpu_transcribe.pipeline.config import DEFAULT_PIPELINE as DEFAULT_PIPELINE
from gpu_transcribe.pipeline.config import pipeline_name as pipeline_name
from gpu_transcribe.pipeline.contract import INCOMING_PREFIX, TTL_ATTRIBUTE
from gpu_transcribe.pipeline.plan import DEFAULT_MAX_WORKERS as DEFAULT_MAX_WORKERS
from gpu_transcribe.pipeline.plan import DeployRequest as DeployRequest
from gpu_transcribe.pipeline.plan import build_spec as build_spec
from gpu_transcribe.pipeline.template import (
    PipelineSpec,
    lifecycle_rules_api,
    template_json,
    template_parameters,
)
from gpu_transcribe.settings import Settings

if TYPE_CHECKING:
    from gpu_transcribe.pipeline.dead_letters import DeadLetterResult

#: Auto Scaling states of an instance that is (or is about to be) billed.
BILLED_STATES = frozenset({"Pending", "Pending:Wait", "Pending:Proceed", "InService", "Terminating:Wait"})


@dataclass(frozen=True)
class PipelineDeployment:
    """What ``pipeline deploy`` made.

    Attributes:
        name: the pipeline's name.
        stack: the stack afterwards.
        region: its region.
        action: ``created``, ``updated`` or ``unchanged``.
        outputs: the names of what the stack holds.
        image_id: the workers' AMI.
        instance_types: the GPU types the group may launch.
        max_workers: the group's maximum size.
        subnet_ids: where the group launches (one subnet per zone).
        changes: ``(action, logical id, resource type)`` of each change applied.
        fixed: what :func:`finish_deploy` had to apply itself (empty on AWS, where CloudFormation did it).
        seconds: wall time, seconds.
    """

    name: str
    stack: StackInfo
    region: str
    action: str
    outputs: PipelineOutputs
    image_id: str
    instance_types: tuple[str, ...]
    max_workers: int
    subnet_ids: tuple[str, ...]
    changes: tuple[tuple[str, str, str], ...]
    fixed: tuple[str, ...]
    seconds: float


def finish_deploy(
    settings: Settings,
    spec: PipelineSpec,
    outputs: PipelineOutputs,
    on_progress: ProgressCallback = no_progress,
) -> tuple[str, ...]:
    """Make sure of what CloudFormation may not have done, through the services' own APIs: the bucket's
    ``incoming/`` notification to the jobs queue, a created bucket's protection (public access block,
    encryption, ownership, versioning, lifecycle), the jobs table's TTL and point-in-time recovery, and the
    webhook secret. On AWS all are there already and nothing is written (the secret once: CloudFormation
    generates one that is not ``whsec_``); moto skips them; a bucket the user brought gets its notification
    only here (its other settings stay the user's).

    Returns:
        One line per thing that had to be applied.

    Raises:
        CloudError: S3 or DynamoDB refused (S3 checks that the queue policy lets the bucket send).
        CredentialsError: credentials missing or rejected.
    """
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.pipeline.deployment import (
        ensure_bucket_notification,
        ensure_bucket_protection,
        ensure_point_in_time_recovery,
        ensure_ttl,
    )
    from gpu_transcribe.aws.pipeline.webhook_secret import ensure_pipeline_secret

    ctx = AwsContext.from_settings(settings)
    fixed: list[str] = []
    if outputs.bucket_created:
        applied = ensure_bucket_protection(ctx, outputs.bucket, lifecycle_rules_api(spec))
        fixed.extend(f"bucket {outputs.bucket}: {what} applied" for what in applied)
    notification_id = f"{spec.prefix}-incoming"
    if ensure_bucket_notification(ctx, outputs.bucket, outputs.queue_arn, INCOMING_PREFIX, notification_id):
        fixed.append(f"bucket {outputs.bucket}: {INCOMING_PREFIX} notification to the jobs queue applied")
    if ensure_ttl(ctx, outputs.table, TTL_ATTRIBUTE):
        fixed.append(f"table {outputs.table}: time to live on {TTL_ATTRIBUTE} turned on")
    if ensure_point_in_time_recovery(ctx, outputs.table):
        fixed.append(f"table {outputs.table}: point-in-time recovery turned on")
    if ensure_pipeline_secret(ctx, spec.webhook_secret_name, spec.resource_tags()):
        fixed.append(f"secret {spec.webhook_secret_name}: a webhook signing secret written")
    for line in fixed:
        on_progress(ProgressEvent("note", line))
    return tuple(fixed)


def deploy_pipeline(
    settings: Settings,
    request: DeployRequest,
    *,
    on_progress: ProgressCallback = no_progress,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> PipelineDeployment:
    """Create or update the pipeline's stack and wait for it, then :func:`finish_deploy`.

    Raises:
        SettingsError: a bad name or number.
        ImageNotFoundError: no image of ours fits (``build-ami``), or ``--image`` does not exist.
        StackError: the stack is busy, is a failed first create, or rolled back (naming the resource and why).
        CredentialsError, CloudError: a call failed.
    """
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.pipeline.stack import deploy_stack
    from gpu_transcribe.pipeline.assets import ensure_assets, upload_notifier

    started = clock()
    spec = build_spec(settings, request, on_progress)
    ctx = AwsContext.from_settings(settings)
    assets_bucket = ensure_assets(ctx, spec.owner_arn, on_progress, clock, sleep)
    notifier_code = upload_notifier(ctx, assets_bucket, on_progress)
    result = deploy_stack(
        ctx,
        pipeline_stack_name(spec.name),
        template_json(spec),
        parameters=template_parameters(spec, notifier_code),
        tags=spec.resource_tags(),
        description=f"gpu-transcribe pipeline {spec.name}",
        on_progress=on_progress,
        clock=clock,
        sleep=sleep,
    )
    outputs = PipelineOutputs.from_stack(result.stack)
    missing = [key for key, value in vars(outputs).items() if value == ""]
    if missing:
        raise StackError(
            f"stack {result.stack.name} is {result.stack.status} but lacks outputs {', '.join(missing)}",
            stack=result.stack.name,
            status=result.stack.status,
        )
    fixed = finish_deploy(settings, spec, outputs, on_progress)
    return PipelineDeployment(
        name=spec.name,
        stack=result.stack,
        region=ctx.region,
        action=result.action,
        outputs=outputs,
        image_id=spec.image_id,
        instance_types=spec.instance_types,
        max_workers=spec.max_workers,
        subnet_ids=spec.subnet_ids,
        changes=result.changes,
        fixed=fixed,
        seconds=clock() - started,
    )


# --- status ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerTypeCost:
    """The billed workers of one type, zone and market, and the price of one now.

    Attributes:
        instance_type: e.g. ``g4dn.xlarge``.
        zone: e.g. ``eu-north-1b``.
        market: ``spot`` (the group launches only spot) or ``on-demand``.
        count: workers of that type in that zone and market (pending or in service).
        price_usd_per_hour: per instance: the zone's spot price now (``DescribeSpotPriceHistory``), or the
            on-demand price (Pricing API, else the packaged table); ``None`` if unknown.
    """

    instance_type: str
    zone: str
    market: str
    count: int
    price_usd_per_hour: float | None


@dataclass(frozen=True)
class PipelineStatus:
    """``pipeline status``: the stack, the queues, the workers and their cost now.

    Attributes:
        name: the pipeline's name.
        region: its region.
        stack: the stack.
        outputs: its outputs.
        jobs: the jobs queue's counts, ``None`` if it could not be read (the stack is not complete).
        dead_letter: the dead-letter queue's counts (``visible`` is the dead-lettered jobs), or ``None``.
        group: the worker group, or ``None``.
        costs: billed workers per (type, zone) with the spot price now, sorted.
        cost_usd_per_hour: the sum of the workers' spot prices now (instances only: no EBS, S3, SQS,
            DynamoDB or Lambda), ``None`` if a price is unknown.
        webhooks: the webhooks queue's counts (events waiting for delivery or a retry), or ``None``.
        webhooks_dead_letter: events the notifier gave up on (``visible``), or ``None``.
        reconciled: what the dead-letter reconciliation run by the status did
            (:func:`gpu_transcribe.pipeline.jobs.reconcile_dead_letters`; ``dead_letter`` is counted before
            it), or ``None`` if it could not run (the stack lacks outputs).
    """

    name: str
    region: str
    stack: StackInfo
    outputs: PipelineOutputs
    jobs: QueueCounts | None
    dead_letter: QueueCounts | None
    group: WorkerGroup | None
    costs: tuple[WorkerTypeCost, ...]
    cost_usd_per_hour: float | None
    webhooks: QueueCounts | None = None
    webhooks_dead_letter: QueueCounts | None = None
    reconciled: DeadLetterResult | None = None


def _costs(settings: Settings, group: WorkerGroup | None) -> tuple[tuple[WorkerTypeCost, ...], float | None]:
    """The billed workers by (type, zone, market) with the price of each now, and the total per hour."""
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.ec2.prices import on_demand_price, spot_prices

    if group is None:
        return (), 0.0
    ctx = AwsContext.from_settings(settings)
    counts: dict[tuple[str, str, str], int] = {}
    for instance in group.instances:
        if instance.lifecycle_state in BILLED_STATES:
            key = (instance.instance_type, instance.zone, instance.market)
            counts[key] = counts.get(key, 0) + 1
    spot = {t: spot_prices(ctx, t) for t in sorted({t for t, _, m in counts if m == "spot"})}
    rows = []
    for (instance_type, zone, market), count in sorted(counts.items()):
        if market == "spot":
            price = spot[instance_type][zone][0] if zone in spot[instance_type] else None
        else:
            price = on_demand_price(ctx, instance_type).price_usd_per_hour
        rows.append(WorkerTypeCost(instance_type, zone, market, count, price))
    if any(r.price_usd_per_hour is None for r in rows):
        return tuple(rows), None
    return tuple(rows), sum((r.price_usd_per_hour or 0.0) * r.count for r in rows)


def pipeline_status(settings: Settings, name: str | None) -> PipelineStatus:
    """The pipeline's stack, queue counts, workers and their cost per hour now; on the way, the dead-letter
    queue is reconciled with the jobs table (:func:`gpu_transcribe.pipeline.jobs.reconcile_dead_letters`).

    Raises:
        PipelineNotFoundError: no such pipeline in the region.
        CredentialsError, CloudError: a call failed.
    """
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.pipeline.deployment import worker_group
    from gpu_transcribe.aws.pipeline.queue import queue_counts
    from gpu_transcribe.aws.pipeline.stack import describe_stack
    from gpu_transcribe.pipeline.config import config_from_stack
    from gpu_transcribe.pipeline.dead_letters import DeadLetterResult, reconcile_dead_letters

    name = pipeline_name(name)
    ctx = AwsContext.from_settings(settings)
    stack = describe_stack(ctx, pipeline_stack_name(name))
    if stack is None:
        raise PipelineNotFoundError(name, ctx.region)
    outputs = PipelineOutputs.from_stack(stack)
    jobs = queue_counts(ctx, outputs.queue_url) if outputs.queue_url else None
    dead = queue_counts(ctx, outputs.dead_letter_queue_url) if outputs.dead_letter_queue_url else None
    group = worker_group(ctx, outputs.group) if outputs.group else None
    costs, total = _costs(settings, group)
    hooks = queue_counts(ctx, outputs.webhooks_queue_url) if outputs.webhooks_queue_url else None
    undelivered = outputs.webhooks_dead_letter_queue_url
    hooks_dead = queue_counts(ctx, undelivered) if undelivered else None
    reconciled = None
    if outputs.dead_letter_queue_url and outputs.table and outputs.bucket and outputs.queue_url:
        try:
            config = config_from_stack(ctx, name, stack, outputs)
        except GpuTranscribeError as exc:  # the status reads on; the reconciliation says why it did not run
            reconciled = DeadLetterResult(error=str(exc))
        else:
            reconciled = reconcile_dead_letters(ctx, config)
    return PipelineStatus(
        name, ctx.region, stack, outputs, jobs, dead, group, costs, total, hooks, hooks_dead, reconciled
    )


# --- destroy -----------------------------------------------------------------------------------------------

BucketFate = Literal["kept", "deleted", "yours-kept"]


@dataclass(frozen=True)
class PipelineDestroyed:
    """What ``pipeline destroy`` did.

    Attributes:
        name: the pipeline's name.
        region: its region.
        stack_name: the deleted stack.
        bucket: the pipeline's bucket.
        bucket_fate: ``kept`` (the stack's bucket, retained: ``--delete-data`` deletes it), ``deleted``
            (emptied and deleted), or ``yours-kept`` (a bucket the user brought: never deleted; its
            notification to the deleted queue was removed).
        objects_deleted: objects (and versions) deleted from the bucket.
    """

    name: str
    region: str
    stack_name: str
    bucket: str
    bucket_fate: BucketFate
    objects_deleted: int


def destroy_pipeline(
    settings: Settings,
    name: str | None,
    *,
    delete_data: bool = False,
    on_progress: ProgressCallback = no_progress,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> PipelineDestroyed:
    """Delete the pipeline's stack (its workers, queues, table, roles, scaler) and wait.

    The bucket the stack created is retained (``DeletionPolicy: Retain``: it holds the transcripts) unless
    ``delete_data``, which empties and deletes it after the stack is gone. A bucket the user brought is
    never deleted; the notification the pipeline added to it is removed.

    Raises:
        PipelineNotFoundError: no such pipeline in the region.
        StackError: the deletion failed (naming the resource and why).
        CredentialsError, CloudError: a call failed.
    """
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.pipeline.deployment import (
        delete_bucket,
        empty_bucket,
        remove_bucket_notification,
    )
    from gpu_transcribe.aws.pipeline.stack import delete_stack, describe_stack
    from gpu_transcribe.aws.pipeline.webhook_secret import delete_pipeline_secret

    name = pipeline_name(name)
    ctx = AwsContext.from_settings(settings)
    stack_name = pipeline_stack_name(name)
    stack = describe_stack(ctx, stack_name)
    if stack is None:
        raise PipelineNotFoundError(name, ctx.region)
    outputs = PipelineOutputs.from_stack(stack)
    yours = outputs.bucket and not outputs.bucket_created and outputs.queue_arn
    if yours and remove_bucket_notification(ctx, outputs.bucket, outputs.queue_arn):
        on_progress(ProgressEvent("note", f"bucket {outputs.bucket}: notification to the jobs queue removed"))
    delete_stack(ctx, stack.stack_id, on_progress=on_progress, clock=clock, sleep=sleep)
    # CloudFormation schedules the secret's deletion (30 days), which would block a new deploy of this name.
    if delete_pipeline_secret(ctx, f"gpu-transcribe-{name}-webhook"):
        on_progress(ProgressEvent("delete", f"secret gpu-transcribe-{name}-webhook deleted"))
    fate: BucketFate = "kept" if outputs.bucket_created else "yours-kept"
    deleted = 0
    if delete_data and outputs.bucket_created and outputs.bucket:
        on_progress(ProgressEvent("delete", f"emptying and deleting bucket {outputs.bucket}"))
        deleted = empty_bucket(ctx, outputs.bucket)
        delete_bucket(ctx, outputs.bucket)
        fate = "deleted"
    return PipelineDestroyed(name, ctx.region, stack_name, outputs.bucket, fate, deleted)


def list_pipelines(settings: Settings) -> tuple[StackInfo, ...]:
    """Every pipeline stack in the region (``gpu-transcribe-pipeline-*``), by name.

    Raises:
        CredentialsError, CloudError: the call failed.
    """
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.pipeline.stack import list_stacks

    return list_stacks(AwsContext.from_settings(settings), PIPELINE_STACK_PREFIX)
