"""``gpu-transcribe pipeline deploy | status | destroy``: orchestration, no printing (progress by callback).

- :func:`deploy_pipeline`: resolves the image (``--image``, else the ``image_id`` setting, else the newest
  image of ours for this version and model, as ``run`` chooses it), the VPC and one subnet per zone (as
  ``run`` does: ``subnet_id``/``vpc_id`` settings or the default VPC), builds the template
  (:mod:`.template`), creates or updates the stack through a change set
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

from gpu_transcribe import __version__
from gpu_transcribe.aws.pipeline.models import (
    PIPELINE_STACK_PREFIX,
    PipelineOutputs,
    QueueCounts,
    StackInfo,
    WorkerGroup,
    pipeline_stack_name,
)
from gpu_transcribe.common import ProgressCallback, ProgressEvent, no_progress
from gpu_transcribe.errors import GpuTranscribeError, PipelineNotFoundError, SettingsError, StackError
from gpu_transcribe.pipeline.template import (
    INCOMING_PREFIX,
    LAMBDA_MIN_UNRESERVED,
    NOTIFIER_MAX_CONCURRENCY,
    SCALER_MAX_CONCURRENCY,
    TTL_ATTRIBUTE,
    PipelineSpec,
    check_pipeline_name,
    lifecycle_rules_api,
    template_json,
)
from gpu_transcribe.settings import Settings

if TYPE_CHECKING:
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.pipeline.jobs import DeadLetterResult

#: The pipeline a command means when ``--name`` is not given.
DEFAULT_PIPELINE = "default"
#: ``--max-workers`` when not given: a small fleet (each worker is one GPU instance).
DEFAULT_MAX_WORKERS = 4
#: Auto Scaling states of an instance that is (or is about to be) billed.
BILLED_STATES = frozenset({"Pending", "Pending:Wait", "Pending:Proceed", "InService", "Terminating:Wait"})


def pipeline_name(name: str | None) -> str:
    """``name`` (checked) or :data:`DEFAULT_PIPELINE`.

    Raises:
        SettingsError: not a valid pipeline name (exit status 2).
    """
    try:
        return check_pipeline_name(name or DEFAULT_PIPELINE)
    except ValueError as exc:
        raise SettingsError("pipeline", "--pipeline", f"--pipeline: {exc}") from None


@dataclass(frozen=True)
class DeployRequest:
    """What ``pipeline deploy`` was asked for; ``None`` means the setting or default.

    Attributes:
        name: the pipeline's name (default :data:`DEFAULT_PIPELINE`).
        max_workers: the fleet's maximum size (default :data:`DEFAULT_MAX_WORKERS`).
        instance_types: GPU types (default: the ``instance_types`` setting).
        bucket: an existing bucket to use instead of creating one.
        image_id: the workers' AMI (default: the ``image_id`` setting, else the newest of ours).
        jobs_per_worker: visible jobs per worker the scaler aims at.
        webhook_url: the pipeline's webhook for every job event (``""``: none; jobs may bring their own).
        allow_private_webhooks: allow webhook URLs at private, loopback and link-local addresses.
        correct: correct transcripts with Bedrock by default (files uploaded without ``submit``) and let the
            workers call the ``correct_model_id`` setting's model; the model is checked first.
    """

    name: str | None = None
    max_workers: int | None = None
    instance_types: tuple[str, ...] | None = None
    bucket: str | None = None
    image_id: str | None = None
    jobs_per_worker: int = 10
    webhook_url: str = ""
    allow_private_webhooks: bool = False
    correct: bool = False


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


def _image_id(ctx: AwsContext, settings: Settings, request: DeployRequest) -> str:
    """``--image``, else the ``image_id`` setting, else the newest image of ours for this version and model
    (as ``run`` chooses it, gpu_transcribe/run/cloud.py)."""
    from gpu_transcribe.aws.ec2.images import list_images, select_run_image

    if request.image_id or settings.image_id:
        return str(request.image_id or settings.image_id)
    images = list_images(ctx)
    chosen = select_run_image(
        images, version=__version__, model=settings.model, revision=None, region=ctx.region
    )
    return chosen.image_id


def build_spec(
    settings: Settings, request: DeployRequest, on_progress: ProgressCallback = no_progress
) -> PipelineSpec:
    """The :class:`PipelineSpec` for ``request``: image, network and owner looked up in AWS; nothing created.

    Raises:
        SettingsError: a bad name or number.
        ImageNotFoundError: no image given and none of ours fits (``build-ami`` makes one).
        CloudError: ``request.bucket`` does not exist, is another account's or in another region; a lookup
            failed (no default VPC...).
        CredentialsError: credentials missing or rejected.
    """
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.ec2.launch_plan import describe_image, subnets_by_zone
    from gpu_transcribe.aws.ec2.preflight import caller_identity

    name = pipeline_name(request.name)
    webhook_url = ""
    if request.webhook_url:
        from gpu_transcribe.pipeline.results import WebhookUrlError, check_webhook_url

        try:
            webhook_url = check_webhook_url(request.webhook_url, request.allow_private_webhooks)
        except WebhookUrlError as exc:
            raise SettingsError("webhook_url", "--webhook-url", f"--webhook-url: {exc}") from None
    max_workers = request.max_workers or DEFAULT_MAX_WORKERS
    if not 1 <= max_workers <= 1000:
        raise SettingsError("max_workers", "--max-workers", f"--max-workers: {max_workers} is not 1 to 1000")
    ctx = AwsContext.from_settings(settings)
    identity = caller_identity(ctx)
    if request.bucket:
        from gpu_transcribe.aws.pipeline.deployment import check_own_bucket

        check_own_bucket(ctx, request.bucket, identity.account_id)
    correct_region = ""
    if request.correct:
        correct_region = settings.correct_region or ctx.region
        _check_correct_model(settings, correct_region, on_progress)
    reserve_concurrency = _room_to_reserve(ctx, on_progress)
    image_id = _image_id(ctx, settings, request)
    image = describe_image(ctx, image_id)
    vpc_id, subnets = subnets_by_zone(ctx, subnet_id=settings.subnet_id, vpc_id=settings.vpc_id)
    on_progress(
        ProgressEvent(
            "plan", f"pipeline {name}: image {image_id}, {vpc_id}, zones {', '.join(sorted(subnets))}"
        )
    )
    return PipelineSpec(
        name=name,
        image_id=image_id,
        instance_types=request.instance_types or settings.instance_types,
        vpc_id=vpc_id,
        subnet_ids=tuple(subnets[zone] for zone in sorted(subnets)),
        root_device_name=image.root_device_name,
        root_volume_size_gib=image.root_volume_size_gib,
        max_workers=max_workers,
        jobs_per_worker=request.jobs_per_worker,
        bucket=request.bucket,
        language=settings.language,
        model=settings.model,
        login_user=settings.login_user,
        remote_prefix=settings.remote_prefix,
        owner_arn=identity.arn,
        tags=settings.tags,
        webhook_url=webhook_url,
        allow_private_webhooks=request.allow_private_webhooks,
        correct=request.correct,
        correct_model_id=settings.correct_model_id if request.correct else "",
        correct_region=correct_region,
        reserve_concurrency=reserve_concurrency,
    )


def _room_to_reserve(ctx: AwsContext, on_progress: ProgressCallback) -> bool:
    """Whether the account can give the notifier and the scaler reserved concurrency: Lambda refuses a
    reservation that leaves less than :data:`LAMBDA_MIN_UNRESERVED` unreserved (new accounts have a quota of
    10), which would roll the stack back. Without room the functions are deployed unreserved, with a note;
    the notifier's event source still caps it at :data:`NOTIFIER_MAX_CONCURRENCY`."""
    from gpu_transcribe.aws.pipeline.deployment import unreserved_lambda_concurrency

    unreserved = unreserved_lambda_concurrency(ctx)
    wanted = NOTIFIER_MAX_CONCURRENCY + SCALER_MAX_CONCURRENCY
    if unreserved is None or unreserved - wanted >= LAMBDA_MIN_UNRESERVED:
        return True
    on_progress(
        ProgressEvent(
            "note",
            f"the account's unreserved Lambda concurrency in {ctx.region} is {unreserved}: too little to "
            f"reserve {wanted} (Lambda keeps {LAMBDA_MIN_UNRESERVED} unreserved); the notifier and the "
            f"scaler are deployed without reserved concurrency (the notifier's queue still runs at most "
            f"{NOTIFIER_MAX_CONCURRENCY} at once). Ask for a higher quota and deploy again to reserve it.",
        )
    )
    return False


def _check_correct_model(settings: Settings, region: str, on_progress: ProgressCallback) -> None:
    """``--correct``: ask Bedrock's control plane (:func:`gpu_transcribe.aws.bedrock.check_model`) whether
    the ``correct_model_id`` setting's model can be called in ``region``. A check that cannot be made (no
    permission, no connection) is noted and skipped, as :mod:`gpu_transcribe.correct.correct` does.

    Raises:
        SettingsError: the region does not offer the model (the message says why).
    """
    from gpu_transcribe.aws.bedrock import check_model
    from gpu_transcribe.aws.clients import AwsContext

    model_id = settings.correct_model_id
    try:
        availability = check_model(AwsContext(region=region, profile=settings.aws_profile), model_id)
    except GpuTranscribeError as exc:
        on_progress(ProgressEvent("note", f"--correct: model check skipped: {exc}"))
        return
    if not availability.available:
        raise SettingsError(
            "correct_model_id",
            "--correct",
            f"--correct: {availability.reason}; set correct_model_id (or correct_region) to one it offers",
        )
    on_progress(ProgressEvent("plan", f"correction: {model_id} in {region} ({availability.status})"))


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
        ensure_pipeline_secret,
        ensure_point_in_time_recovery,
        ensure_ttl,
    )

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

    started = clock()
    spec = build_spec(settings, request, on_progress)
    ctx = AwsContext.from_settings(settings)
    result = deploy_stack(
        ctx,
        pipeline_stack_name(spec.name),
        template_json(spec),
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
    from gpu_transcribe.aws.pipeline.deployment import queue_counts, worker_group
    from gpu_transcribe.aws.pipeline.stack import describe_stack
    from gpu_transcribe.pipeline.jobs import DeadLetterResult, config_from_stack, reconcile_dead_letters

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
        delete_pipeline_secret,
        empty_bucket,
        remove_bucket_notification,
    )
    from gpu_transcribe.aws.pipeline.stack import delete_stack, describe_stack

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
