"""The region's assets bucket: where ``pipeline deploy`` puts the Lambda code that is too large to be inline.

One bucket per account and region, shared by every pipeline there,
``gpu-transcribe-assets-<account>-<region>``, held by its own small stack, :data:`ASSETS_STACK`
(``gpu_transcribe/pipeline/assets.yaml``), that the first ``pipeline deploy`` creates (as ``cdk bootstrap``
makes CDK's staging bucket). It exists before a pipeline's first change set, so the stack's notifier can name
its zip (``Code.S3Bucket``/``S3Key``/``S3ObjectVersion``), which a bucket made by the pipeline's stack could
not. It has the protections of the pipelines' buckets (SSE-S3, Block Public Access, ``BucketOwnerEnforced``,
versioning, a TLS-only policy) and our tags (role :data:`ASSETS_ROLE`, owner, created, version), by which
``cleanup`` finds it (:func:`find_assets_buckets`).
Every S3 call names the caller's account as the bucket's expected owner (another account's bucket of that name
answers 403).

Keys are content-addressed (``lambda/notifier-<sha256>.zip``): an object once written is never changed, so a
deploy whose zip is there already uploads nothing, and its version id stays the same.
"""

from __future__ import annotations

from typing import Any

from gpu_transcribe.aws.clients import AwsContext, aws_errors, error_code, owned_s3_client
from gpu_transcribe.aws.models import TAG_ROLE
from gpu_transcribe.aws.pipeline.models import AssetLocation

#: The assets stack's name (one per account and region).
ASSETS_STACK = "gpu-transcribe-assets"
#: Its output naming the bucket.
OUTPUT_ASSETS_BUCKET = "AssetsBucketName"
#: The assets bucket's name before ``<account>-<region>``.
ASSETS_BUCKET_PREFIX = "gpu-transcribe-assets-"
#: The assets bucket's ``gpu-transcribe:role`` tag.
ASSETS_ROLE = "pipeline-assets"
_MISSING = frozenset({"404", "NoSuchBucket", "NotFound", "NoSuchKey"})


def assets_bucket_name(account_id: str, region: str) -> str:
    """``gpu-transcribe-assets-<account id>-<region>`` (what ``assets.yaml`` names it)."""
    return f"{ASSETS_BUCKET_PREFIX}{account_id}-{region}"


def upload_asset(ctx: AwsContext, bucket: str, key: str, body: bytes) -> AssetLocation:
    """Put ``body`` at ``key`` unless an object of that (content-addressed) key and size is there already.

    Returns:
        Where it lies, its version id, and whether it was uploaded now.

    Raises:
        CloudError, CredentialsError: a call failed (403: the bucket is another account's, or the caller may
            not read or write it).
    """
    s3: Any = owned_s3_client(ctx)
    with aws_errors(ctx, f"uploading s3://{bucket}/{key}"):
        try:
            head = s3.head_object(Bucket=bucket, Key=key)
        except Exception as exc:
            if error_code(exc) not in _MISSING:
                raise
        else:
            if head.get("ContentLength") == len(body):
                return AssetLocation(bucket, key, head.get("VersionId") or "", uploaded=False)
        answer = s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/zip")
    return AssetLocation(bucket, key, answer.get("VersionId") or "", uploaded=True)


def find_assets_buckets(ctx: AwsContext) -> tuple[tuple[str, dict[str, str]], ...]:
    """The region's assets buckets of the caller's account, found by their tags: ``(name, tags)`` of each
    bucket named ``gpu-transcribe-assets-*-<region>`` whose ``gpu-transcribe:role`` is :data:`ASSETS_ROLE`,
    sorted by name.

    Raises:
        CloudError, CredentialsError: a call failed.
    """
    s3: Any = owned_s3_client(ctx)
    found = []
    with aws_errors(ctx, "listing the assets buckets"):
        names = [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
        for name in sorted(names):
            if not (name.startswith(ASSETS_BUCKET_PREFIX) and name.endswith(f"-{ctx.region}")):
                continue
            try:
                tag_set = s3.get_bucket_tagging(Bucket=name)["TagSet"]
            except Exception as exc:
                if error_code(exc) in (*_MISSING, "NoSuchTagSet", "403", "AccessDenied"):
                    continue  # gone, untagged, or another account's
                raise
            tags = {t["Key"]: t["Value"] for t in tag_set}
            if tags.get(TAG_ROLE) == ASSETS_ROLE:
                found.append((name, tags))
    return tuple(found)
