"""The region's assets stack and bucket (``assets.yaml``): orchestration, no printing (progress by callback).

- :func:`ensure_assets`: ``pipeline deploy`` creates the stack when it is missing, before the pipeline's
  change set, and checks the bucket's protections.
- :func:`upload_notifier`: the notifier's zip, under its content-addressed key (nothing when it is there).
- :func:`remove_assets`: ``cleanup`` empties the bucket and deletes the stack (and the bucket) once no
  pipeline is left in the region.

``pipeline destroy`` leaves the assets alone, the last pipeline's too: they are the region's, shared by every
pipeline there (a destroy cannot know that no deploy beside it is about to use them), a few kilobytes (as CDK
leaves its bootstrap stack); ``cleanup`` removes them once no pipeline is left.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gpu_transcribe.aws.clients import AwsContext
from gpu_transcribe.aws.models import TAG_ROLE
from gpu_transcribe.aws.pipeline.models import AssetLocation
from gpu_transcribe.common import ProgressCallback, ProgressEvent, no_progress
from gpu_transcribe.pipeline.template import assets_template_text


def ensure_assets(
    ctx: AwsContext,
    owner_arn: str,
    on_progress: ProgressCallback = no_progress,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Make sure the region's assets stack and bucket exist (``assets.yaml``,
    :mod:`gpu_transcribe.aws.pipeline.assets`): create the stack if it is missing, then check the bucket's
    protections through S3 (what CloudFormation may skip, as :func:`finish_deploy` does for a pipeline's).

    Returns:
        The assets bucket's name.

    Raises:
        StackError: the assets stack is a failed first create or rolled back (naming the resource and why).
        CloudError, CredentialsError: a call failed.
    """
    from gpu_transcribe import __version__
    from gpu_transcribe.aws.pipeline.assets import ASSETS_ROLE, ASSETS_STACK, OUTPUT_ASSETS_BUCKET
    from gpu_transcribe.aws.pipeline.deployment import ensure_bucket_protection
    from gpu_transcribe.aws.pipeline.stack import deploy_stack, describe_stack
    from gpu_transcribe.common import utc_now
    from gpu_transcribe_engine.utc import iso_utc

    stack = describe_stack(ctx, ASSETS_STACK)
    if stack is None or not stack.output(OUTPUT_ASSETS_BUCKET):
        parameters = {"OwnerArn": owner_arn, "CreatedAt": iso_utc(utc_now()), "Version": __version__}
        stack = deploy_stack(
            ctx,
            ASSETS_STACK,
            assets_template_text(),
            parameters=parameters,
            tags=[(TAG_ROLE, ASSETS_ROLE)],
            description="gpu-transcribe assets",
            on_progress=on_progress,
            clock=clock,
            sleep=sleep,
        ).stack
    bucket = stack.output(OUTPUT_ASSETS_BUCKET)
    for what in ensure_bucket_protection(ctx, bucket, ()):
        on_progress(ProgressEvent("note", f"assets bucket {bucket}: {what} applied"))
    return bucket


def upload_notifier(
    ctx: AwsContext, bucket: str, on_progress: ProgressCallback = no_progress
) -> AssetLocation:
    """Put the notifier's zip (:func:`.lambda_code.notifier_zip`) in the assets ``bucket`` under its
    content-addressed key; an unchanged zip is there already and nothing is uploaded.

    Raises:
        CloudError, CredentialsError: a call failed.
    """
    from gpu_transcribe.aws.pipeline.assets import upload_asset
    from gpu_transcribe.pipeline.lambda_code import asset_key, notifier_zip

    body = notifier_zip()
    location = upload_asset(ctx, bucket, asset_key("notifier", body), body)
    if location.uploaded:
        on_progress(ProgressEvent("note", f"notifier code uploaded to s3://{bucket}/{location.key}"))
    return location


def remove_assets(
    ctx: AwsContext,
    bucket: str,
    on_progress: ProgressCallback = no_progress,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Empty the assets ``bucket`` (every object version), delete the assets stack (which deletes the bucket)
    and then the bucket if it is still there (a bucket whose stack is gone). The caller makes sure that no
    pipeline uses it.

    Returns:
        How many object versions were deleted.

    Raises:
        StackError: the stack's deletion failed (naming the resource and why).
        CloudError, CredentialsError: a call failed.
    """
    from gpu_transcribe.aws.pipeline.assets import ASSETS_STACK
    from gpu_transcribe.aws.pipeline.deployment import delete_bucket, empty_bucket
    from gpu_transcribe.aws.pipeline.stack import delete_stack

    deleted = empty_bucket(ctx, bucket)
    delete_stack(ctx, ASSETS_STACK, on_progress=on_progress, clock=clock, sleep=sleep)
    if delete_bucket(ctx, bucket):
        on_progress(ProgressEvent("delete", f"bucket {bucket} deleted"))
    return deleted
