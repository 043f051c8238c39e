"""``pipeline deploy``'s plan: from the request and the settings to a :class:`~.template.PipelineSpec`.

:func:`build_spec` checks the name, the webhook URL and a bucket of the user's own, resolves the image
(``--image``, else the ``image_id`` setting, else the newest image of ours for this version and model, as
``run`` chooses it), the VPC and one subnet per zone (as ``run`` does), whether the account has room to
reserve Lambda concurrency, and with ``--correct`` that the Bedrock model answers. :mod:`.deploy` then
creates or updates the stack from the spec. Orchestration only: no printing, progress through callbacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpu_transcribe import __version__
from gpu_transcribe.common import ProgressCallback, ProgressEvent, no_progress
from gpu_transcribe.errors import GpuTranscribeError, SettingsError
from gpu_transcribe.pipeline.config import pipeline_name
from gpu_transcribe.pipeline.template import (
    LAMBDA_MIN_UNRESERVED,
    NOTIFIER_MAX_CONCURRENCY,
    SCALER_MAX_CONCURRENCY,
    PipelineSpec,
)
from gpu_transcribe.settings import Settings

if TYPE_CHECKING:
    from gpu_transcribe.aws.clients import AwsContext

#: ``--max-workers`` when not given: a small fleet (each worker is one GPU instance).
DEFAULT_MAX_WORKERS = 4


@dataclass(frozen=True)
class DeployRequest:
    """What ``pipeline deploy`` was asked for; ``None`` means the setting or default.

    Attributes:
        name: the pipeline's name (default :data:`~gpu_transcribe.pipeline.config.DEFAULT_PIPELINE`).
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
        from gpu_transcribe.pipeline.webhooks import WebhookUrlError, check_webhook_url

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
