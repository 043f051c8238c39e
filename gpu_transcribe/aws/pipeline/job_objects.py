"""The pipeline's S3 objects: audio under ``incoming/<job-id>/<name>``, outputs under
``results/<job-id>/<stem>.<fmt>``; every upload encrypted (SSE-S3, ``AES256``, unless the bucket's default
is KMS: S3 then applies it, S3 User Guide, "Setting default server-side encryption behavior"). Every request
names the caller's account as the bucket's expected owner (``ExpectedBucketOwner``,
:func:`~gpu_transcribe.aws.clients.owned_s3_client`): a bucket of that name that another account owns
answers 403."""

from __future__ import annotations

from pathlib import Path

from gpu_transcribe.aws.clients import AwsContext, aws_errors, cloud_error, error_code, owned_s3_client
from gpu_transcribe.errors import CloudError
from gpu_transcribe.pipeline.contract import INCOMING_PREFIX, RESULTS_PREFIX


def incoming_key(job_id: str, file_name: str) -> str:
    """``incoming/<job-id>/<file name>``."""
    return f"{INCOMING_PREFIX}{job_id}/{file_name}"


def result_key(job_id: str, file_name: str) -> str:
    """``results/<job-id>/<file name>`` (the file name is ``<stem>.<fmt>``)."""
    return f"{RESULTS_PREFIX}{job_id}/{file_name}"


def upload(
    ctx: AwsContext, bucket: str, key: str, path: Path, metadata: dict[str, str] | None = None
) -> None:
    """Upload the file at ``path`` to ``s3://bucket/key``, encrypted (SSE-S3).

    Raises:
        CloudError, CredentialsError: the upload failed.
    """
    from boto3.exceptions import S3UploadFailedError

    extra = {"ServerSideEncryption": "AES256", "Metadata": metadata or {}}
    doing = f"uploading {path.name} to s3://{bucket}/{key}"
    with aws_errors(ctx, doing):
        try:
            owned_s3_client(ctx).upload_file(str(path), bucket, key, ExtraArgs=extra)
        except S3UploadFailedError as exc:  # the transfer manager's wrapper of the ClientError
            cause = exc.__cause__ or exc.__context__
            raise (
                cloud_error(ctx, cause, doing) if cause is not None else CloudError(f"{doing}: {exc}")
            ) from exc


def download(ctx: AwsContext, bucket: str, key: str, path: Path) -> bool:
    """Download ``s3://bucket/key`` to ``path``.

    Returns:
        True if downloaded; False if there is no such object: 404, or 403, which S3 answers for a missing
        key to a caller without ``s3:ListBucket`` (the worker's role has only ``s3:GetObject``; S3 API
        Reference, ``GetObject``, "Permissions").

    Raises:
        CloudError, CredentialsError: the download failed otherwise.
    """
    with aws_errors(ctx, f"downloading s3://{bucket}/{key}"):
        try:
            owned_s3_client(ctx).download_file(bucket, key, str(path))
        except Exception as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound", "403", "AccessDenied"):
                return False
            raise
    return True
