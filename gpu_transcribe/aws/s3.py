"""Upload transcripts (and optionally audio) to S3, encrypted at rest, with searchable metadata.

Keys follow ``PREFIX/YYYY/MM/DD/<run-id>/<file stem>.<format>`` (UTC date of the run), so one run's files
sit together and a lifecycle rule can expire old days. Objects are encrypted server-side: SSE-S3
(``AES256``) by default, SSE-KMS with the given key id when one is set (AWS S3 User Guide, "Protecting data
with server-side encryption").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu_transcribe.errors import UploadError


@dataclass(frozen=True)
class UploadedObject:
    """One object written to S3.

    Attributes:
        bucket: the bucket name.
        key: the object key.
        size_bytes: the object's size in bytes.
        sse: the server-side encryption S3 reported (``AES256`` or ``aws:kms``).
    """

    bucket: str
    key: str
    size_bytes: int
    sse: str

    @property
    def url(self) -> str:
        """``s3://bucket/key``."""
        return f"s3://{self.bucket}/{self.key}"


def object_key(prefix: str, run_id: str, filename: str, when: dt.datetime) -> str:
    """The key for ``filename`` of run ``run_id``: ``PREFIX/YYYY/MM/DD/<run-id>/<filename>`` (UTC date)."""
    day = when.astimezone(dt.UTC).strftime("%Y/%m/%d")
    parts = [p for p in (prefix.strip("/"), day, run_id, filename) if p]
    return "/".join(parts)


def _metadata(values: Mapping[str, object]) -> dict[str, str]:
    # S3 user metadata travels as HTTP headers: ASCII only (AWS S3 User Guide, "Object metadata").
    return {k: str(v).encode("ascii", "backslashreplace").decode("ascii") for k, v in values.items()}


def upload_files(
    s3_client: Any,
    files: Sequence[Path],
    bucket: str,
    prefix: str,
    run_id: str,
    when: dt.datetime,
    metadata: Mapping[str, object],
    kms_key_id: str | None = None,
    expected_owner: str | None = None,
) -> list[UploadedObject]:
    """Upload ``files`` under the run's key prefix, encrypted, with ``metadata``; verify each with HEAD.

    Args:
        s3_client: a boto3 S3 client (made by the caller, so the endpoint and credentials are its choice).
        files: local files; each keeps its file name in the key.
        bucket: the bucket name.
        prefix: key prefix, e.g. ``transcripts`` (may be empty).
        run_id: the run id.
        when: the run's start time (its UTC date goes into the key).
        metadata: user metadata (model, language, duration, run id...), values made ASCII.
        kms_key_id: an AWS KMS key id or ARN for SSE-KMS; ``None`` for SSE-S3 (AES256).
        expected_owner: the caller's account id: every request carries it as ``ExpectedBucketOwner``, so S3
            refuses a bucket of that name that another account owns (deleted and re-created by someone
            else) instead of writing the transcripts into it.

    Returns:
        One :class:`UploadedObject` per file, in order.

    Raises:
        UploadError: the bucket does not exist, access is denied, or an upload failed; the message names
            the ``s3://`` URL and says what to check. Files uploaded before the failure stay in S3.
    """
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError

    extra: dict[str, Any] = {"Metadata": _metadata(metadata)}
    owner: dict[str, str] = {"ExpectedBucketOwner": expected_owner} if expected_owner else {}
    extra.update(owner)
    if kms_key_id:
        extra.update(ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_key_id)
    else:
        extra["ServerSideEncryption"] = "AES256"
    uploaded: list[UploadedObject] = []
    for path in files:
        key = object_key(prefix, run_id, path.name, when)
        url = f"s3://{bucket}/{key}"
        try:
            s3_client.upload_file(str(path), bucket, key, ExtraArgs=extra)
            head = s3_client.head_object(Bucket=bucket, Key=key, **owner)
        except (ClientError, S3UploadFailedError, BotoCoreError) as exc:
            raise UploadError(f"{url}: upload failed ({_reason(exc)}); {_hint(exc, expected_owner)}") from exc
        uploaded.append(
            UploadedObject(
                bucket=bucket,
                key=key,
                size_bytes=int(head["ContentLength"]),
                sse=str(head.get("ServerSideEncryption", "")),
            )
        )
    return uploaded


def _reason(exc: Exception) -> str:
    text = str(exc)
    return text.split(": ", 1)[-1] if ": " in text else text


def _hint(exc: Exception, expected_owner: str | None = None) -> str:
    text = str(exc)
    if "AccessDenied" in text or "Forbidden" in text or "403" in text:
        owner = f" and that account {expected_owner} owns the bucket" if expected_owner else ""
        return (
            "check that your credentials may s3:PutObject to this bucket (and use the KMS key, if set)"
            + owner
        )
    if "NoSuchBucket" in text or "404" in text:
        return "check the bucket name (setting s3_bucket) and region"
    return "the transcripts are kept locally; retry the upload or use --no-s3"


def check_bucket(s3_client: Any, bucket: str, expected_owner: str | None = None) -> str | None:
    """Before launching anything: does ``bucket`` exist and may we see it (``HeadBucket``)?

    ``expected_owner`` (the caller's account id) goes with the request as ``ExpectedBucketOwner``: a bucket of
    that name owned by another account answers 403, and the note says so.

    Returns:
        ``None`` if it answered, or a note when access was denied: a policy may allow ``s3:PutObject``
        without ``s3:ListBucket`` (which ``HeadBucket`` needs), so that is not fatal.

    Raises:
        UploadError: the bucket does not exist; the message names it and the setting.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        s3_client.head_bucket(
            Bucket=bucket, **({"ExpectedBucketOwner": expected_owner} if expected_owner else {})
        )
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise UploadError(
                f"s3://{bucket}: the bucket does not exist; check the s3_bucket setting (or use --no-s3)"
            ) from exc
        if expected_owner and code in ("403", "AccessDenied", "Forbidden"):
            return (
                f"s3://{bucket}: could not check the bucket ({code}): access is denied, or account "
                f"{expected_owner} does not own it (then the upload will be refused); going on"
            )
        return f"s3://{bucket}: could not check the bucket ({code or exc}); going on"
    except BotoCoreError as exc:
        return f"s3://{bucket}: could not check the bucket ({exc}); going on"
    return None
