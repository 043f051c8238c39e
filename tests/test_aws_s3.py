"""S3 uploads against moto: every object encrypted as asked (SSE-S3 or SSE-KMS with our key), and every S3
request carrying ``ExpectedBucketOwner`` (moto 5.2.5 ignores that header, so the requests are recorded and
checked here; on AWS it makes S3 refuse a bucket of that name owned by another account)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from gpu_transcribe.aws.s3 import check_bucket, upload_files
from gpu_transcribe.errors import UploadError
from tests.fixtures.moto_aws import REGION, MotoAws

BUCKET = "transcripts-s3-test"
ACCOUNT = "123456789012"  # moto's account id
WHEN = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


def _bucket(aws: MotoAws) -> Any:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    return s3


def _files(tmp_path: Path, count: int) -> list[Path]:
    files = []
    for n in range(count):
        path = tmp_path / f"minutes-{n}.txt"
        path.write_text(f"protokoll {n}\n", encoding="utf-8")
        files.append(path)
    return files


def _record(client: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every S3 operation ``client`` makes from now on, with its parameters."""
    calls: list[tuple[str, dict[str, Any]]] = []

    def record(params: dict[str, Any], model: Any, **kwargs: Any) -> None:
        calls.append((model.name, dict(params)))

    client.meta.events.register("provide-client-params.s3.*", record)
    return calls


def test_kms_upload_encrypts_every_object_with_our_key(aws: MotoAws, tmp_path: Path) -> None:
    s3 = _bucket(aws)
    key_arn = aws.client("kms").create_key(Description="transcripts")["KeyMetadata"]["Arn"]
    files = _files(tmp_path, 3)
    uploaded = upload_files(s3, files, BUCKET, "team", "run1", WHEN, {"run-id": "run1"}, kms_key_id=key_arn)
    assert [u.key.rsplit("/", 1)[1] for u in uploaded] == [f.name for f in files]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert sorted(keys) == sorted(u.key for u in uploaded)
    for key in keys:
        head = s3.head_object(Bucket=BUCKET, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms", key
        assert head["SSEKMSKeyId"] == key_arn, key
    assert {u.sse for u in uploaded} == {"aws:kms"}


def test_default_upload_is_sse_s3_on_every_object(aws: MotoAws, tmp_path: Path) -> None:
    s3 = _bucket(aws)
    upload_files(s3, _files(tmp_path, 2), BUCKET, "", "run1", WHEN, {})
    for obj in s3.list_objects_v2(Bucket=BUCKET)["Contents"]:
        head = s3.head_object(Bucket=BUCKET, Key=obj["Key"])
        assert head["ServerSideEncryption"] == "AES256" and "SSEKMSKeyId" not in head


def test_every_s3_request_names_the_expected_bucket_owner(aws: MotoAws, tmp_path: Path) -> None:
    s3 = _bucket(aws)
    calls = _record(s3)
    assert check_bucket(s3, BUCKET, ACCOUNT) is None
    upload_files(s3, _files(tmp_path, 2), BUCKET, "p", "run1", WHEN, {}, expected_owner=ACCOUNT)
    assert {name for name, _ in calls} >= {"HeadBucket", "PutObject", "HeadObject"}
    for name, params in calls:
        assert params.get("ExpectedBucketOwner") == ACCOUNT, (name, params)


def test_a_refused_owner_is_one_line_naming_the_account(aws: MotoAws, tmp_path: Path) -> None:
    """What S3 answers when another account owns the bucket (403 AccessDenied), as one line that names the
    account the bucket should belong to."""
    from botocore.exceptions import ClientError

    s3 = _bucket(aws)

    def refuse(params: dict[str, Any], model: Any, **kwargs: Any) -> None:
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, model.name)

    s3.meta.events.register("provide-client-params.s3.PutObject", refuse)
    with pytest.raises(UploadError) as caught:
        upload_files(s3, _files(tmp_path, 1), BUCKET, "p", "run1", WHEN, {}, expected_owner=ACCOUNT)
    message = str(caught.value)
    assert "\n" not in message and f"s3://{BUCKET}/" in message and f"account {ACCOUNT} owns" in message
