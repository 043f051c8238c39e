"""The pipeline's DynamoDB jobs table: one row per job, every state change a conditional write.

The row's layout and its DynamoDB item form are in :mod:`gpu_transcribe.aws.pipeline.job_record`;
its types and statuses are named here too (``jobs_table.JobRecord``, ``jobs_table.QUEUED``...).

The state machine, each arrow a conditional ``UpdateItem`` (``ConditionExpression``), so two workers holding
copies of one message, or a worker that lost its lease, can never both move a job:

- :func:`create_job`: only if no row has the id (``attribute_not_exists``);
- :func:`claim_job`: ``queued``/``interrupted`` -> ``running``, or ``running`` whose lease has expired (its
  worker died); adds one to ``attempts`` and sets ``owner`` and the lease;
- :func:`extend_lease`: only while ``owner`` is the caller and the job runs;
- :func:`finish_job` (``succeeded``/``failed``/``dead_lettered``; the owner is kept, as the worker that
  ended it) and :func:`release_job` (back to ``queued`` after an engine failure, or ``interrupted``; the owner
  is removed): only while the job runs and ``owner`` is the caller;
- :func:`requeue_job` (``jobs retry``): ``failed``/``dead_lettered`` -> ``queued``;
- :func:`dead_letter_stuck_job` (the dead-letter reconciliation): ``queued``/``interrupted``, or ``running``
  whose lease has expired -> ``dead_lettered``.

A write whose condition fails answers ``None``/``False`` here (``ConditionalCheckFailedException`` is an
expected outcome, not an error); other AWS errors become :class:`~gpu_transcribe.errors.CloudError`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from gpu_transcribe.aws.clients import AwsContext, aws_errors, dynamodb_client, error_code
from gpu_transcribe.aws.pipeline.job_record import (
    DEAD_LETTERED,
    ERROR_MAX_CHARS,
    FAILED,
    FINAL_STATUSES,
    INTERRUPTED,
    QUEUED,
    RUNNING,
    STATUSES,
    SUCCEEDED,
    JobOptions,
    JobRecord,
    attr_n,
    attr_s,
    item_from_record,
    one_line,
    record_from_item,
)
from gpu_transcribe.pipeline.contract import STATUS_ATTRIBUTE, STATUS_INDEX, TABLE_KEY
from gpu_transcribe_engine.utc import iso_utc

__all__ = [
    "DEAD_LETTERED",
    "ERROR_MAX_CHARS",
    "FAILED",
    "FINAL_STATUSES",
    "INTERRUPTED",
    "QUEUED",
    "RUNNING",
    "STATUSES",
    "STATUS_INDEX",
    "SUCCEEDED",
    "JobOptions",
    "JobRecord",
    "abandon_job",
    "claim_job",
    "create_job",
    "dead_letter_stuck_job",
    "extend_lease",
    "finish_job",
    "get_job",
    "list_jobs",
    "one_line",
    "record_from_item",
    "release_job",
    "requeue_job",
]

_CONDITION_FAILED = "ConditionalCheckFailedException"


# --- reads -------------------------------------------------------------------------------------------------


def get_job(ctx: AwsContext, table: str, job_id: str) -> JobRecord | None:
    """The row of ``job_id`` (a strongly consistent read), or ``None`` if there is none.

    Raises:
        CloudError, CredentialsError: the call failed.
    """
    with aws_errors(ctx, f"reading job {job_id} from table {table}"):
        reply = dynamodb_client(ctx).get_item(
            TableName=table, Key={TABLE_KEY: attr_s(job_id)}, ConsistentRead=True
        )
    item = reply.get("Item")
    return None if item is None else record_from_item(item)


def list_jobs(
    ctx: AwsContext, table: str, *, status: str | None = None, since_iso: str | None = None
) -> tuple[JobRecord, ...]:
    """Jobs, oldest first: those with ``status`` (a query of the ``by-status`` index) or all (a scan),
    created at or after ``since_iso`` (ISO 8601 UTC) if given.

    Raises:
        CloudError, CredentialsError: a call failed.
    """
    ddb = dynamodb_client(ctx)
    items: list[Mapping[str, Any]] = []
    with aws_errors(ctx, f"listing jobs of table {table}"):
        if status is not None:
            condition = "#s = :s"
            values: dict[str, Any] = {":s": attr_s(status)}
            if since_iso:
                condition += " AND created_at >= :since"
                values[":since"] = attr_s(since_iso)
            pages = ddb.get_paginator("query").paginate(
                TableName=table,
                IndexName=STATUS_INDEX,
                KeyConditionExpression=condition,
                ExpressionAttributeNames={"#s": STATUS_ATTRIBUTE},
                ExpressionAttributeValues=values,
            )
        else:
            kwargs: dict[str, Any] = {"TableName": table}
            if since_iso:
                kwargs.update(
                    FilterExpression="created_at >= :since",
                    ExpressionAttributeValues={":since": attr_s(since_iso)},
                )
            pages = ddb.get_paginator("scan").paginate(**kwargs)
        for page in pages:
            items.extend(page.get("Items", []))
    records = [record_from_item(item) for item in items]
    return tuple(sorted(records, key=lambda r: (r.created_at, r.job_id)))


# --- conditional writes ------------------------------------------------------------------------------------


def _update(ctx: AwsContext, table: str, job_id: str, doing: str, **kwargs: Any) -> JobRecord | None:
    """One conditional ``UpdateItem`` returning the new row, or ``None`` when its condition failed."""
    with aws_errors(ctx, f"{doing} job {job_id} in table {table}"):
        try:
            reply = dynamodb_client(ctx).update_item(
                TableName=table, Key={TABLE_KEY: attr_s(job_id)}, ReturnValues="ALL_NEW", **kwargs
            )
        except Exception as exc:
            if error_code(exc) == _CONDITION_FAILED:
                return None
            raise
    return record_from_item(reply["Attributes"])


def create_job(ctx: AwsContext, table: str, record: JobRecord) -> bool:
    """Write ``record`` as a new row, only if no row has its id.

    Returns:
        True if written; False if the id exists already (its row is left as it is).

    Raises:
        CloudError, CredentialsError: the call failed.
    """
    with aws_errors(ctx, f"creating job {record.job_id} in table {table}"):
        try:
            dynamodb_client(ctx).put_item(
                TableName=table,
                Item=item_from_record(record),
                ConditionExpression="attribute_not_exists(job_id)",
            )
        except Exception as exc:
            if error_code(exc) == _CONDITION_FAILED:
                return False
            raise
    return True


def claim_job(ctx: AwsContext, table: str, job_id: str, owner: str, lease_s: float) -> JobRecord | None:
    """Take the job for ``owner``: status ``running``, ``attempts`` + 1, the lease ``lease_s`` from now.

    Allowed from ``queued`` and ``interrupted``, and from ``running`` whose lease has expired (its worker
    died without a word); anything else (another worker's live lease, a finished job) refuses.

    Returns:
        The claimed row, or ``None`` if the job could not be claimed (or has no row).

    Raises:
        CloudError, CredentialsError: the call failed.
    """
    now = time.time()
    return _update(
        ctx,
        table,
        job_id,
        "claiming",
        UpdateExpression="SET #s = :running, #o = :owner, lease_expires_at = :lease, updated_at = :now_iso "
        "ADD attempts :one",
        ConditionExpression="attribute_exists(job_id) AND (#s IN (:queued, :interrupted) OR "
        "(#s = :running AND (attribute_not_exists(lease_expires_at) OR lease_expires_at < :now)))",
        ExpressionAttributeNames={"#s": STATUS_ATTRIBUTE, "#o": "owner"},
        ExpressionAttributeValues={
            ":running": attr_s(RUNNING),
            ":queued": attr_s(QUEUED),
            ":interrupted": attr_s(INTERRUPTED),
            ":owner": attr_s(owner),
            ":lease": attr_n(int(now + lease_s)),
            ":now": attr_n(int(now)),
            ":now_iso": attr_s(iso_utc(timespec="milliseconds")),
            ":one": attr_n(1),
        },
    )


def extend_lease(ctx: AwsContext, table: str, job_id: str, owner: str, lease_s: float) -> bool:
    """Move the lease of a running job to ``lease_s`` from now, only if ``owner`` still holds it.

    Returns:
        True if extended; False if the job is no longer ``owner``'s.

    Raises:
        CloudError, CredentialsError: the call failed.
    """
    now = time.time()
    updated = _update(
        ctx,
        table,
        job_id,
        "extending the lease of",
        UpdateExpression="SET lease_expires_at = :lease, updated_at = :now_iso",
        ConditionExpression="#o = :owner AND #s = :running",
        ExpressionAttributeNames={"#s": STATUS_ATTRIBUTE, "#o": "owner"},
        ExpressionAttributeValues={
            ":owner": attr_s(owner),
            ":running": attr_s(RUNNING),
            ":lease": attr_n(int(now + lease_s)),
            ":now_iso": attr_s(iso_utc(timespec="milliseconds")),
        },
    )
    return updated is not None


def finish_job(
    ctx: AwsContext,
    table: str,
    job_id: str,
    owner: str,
    *,
    status: str,
    result_keys: Iterable[str] = (),
    error: str = "",
    duration_s: float | None = None,
    expires_at: int | None = None,
    engine_failure: bool = False,
    correction: Mapping[str, Any] | None = None,
) -> JobRecord | None:
    """End the job as ``status`` (``succeeded``, ``failed`` or ``dead_lettered``), only if ``owner`` holds it
    (it runs, and is ``owner``'s); the lease is removed, the owner kept as the worker that ended it.

    Args:
        result_keys: the outputs' S3 keys (succeeded).
        error: why it failed, one line (kept to :data:`ERROR_MAX_CHARS`).
        duration_s: seconds of audio.
        expires_at: when DynamoDB may delete the row (TTL), Unix epoch seconds.
        engine_failure: count this end as one more engine failure.
        correction: what the correction did (``CorrectionResult.to_dict()``), kept as JSON in ``correction``.

    Returns:
        The new row, or ``None`` if ``owner`` no longer held the job (nothing written).

    Raises:
        CloudError, CredentialsError: the call failed.
    """
    sets = ["#s = :status", "updated_at = :now_iso", "result_keys = :keys"]
    values: dict[str, Any] = {
        ":status": attr_s(status),
        ":owner": attr_s(owner),
        ":now_iso": attr_s(iso_utc(timespec="milliseconds")),
        ":keys": {"L": [attr_s(k) for k in result_keys]},
    }
    removes = ["lease_expires_at"]  # the owner stays: the worker that ended it (``jobs`` shows it)
    if error:
        sets.append("#e = :error")
        values[":error"] = attr_s(one_line(error))
    else:
        removes.append("#e")
    if duration_s is not None:
        sets.append("duration_s = :duration")
        values[":duration"] = attr_n(round(duration_s, 3))
    if expires_at is not None:
        sets.append("expires_at = :expires")
        values[":expires"] = attr_n(expires_at)
    if correction is not None:
        sets.append("correction = :correction")
        values[":correction"] = attr_s(json.dumps(dict(correction), default=str))
    expression = f"SET {', '.join(sets)} REMOVE {', '.join(removes)}"
    if engine_failure:
        expression += " ADD engine_failures :one"
        values[":one"] = attr_n(1)
    return _update(
        ctx,
        table,
        job_id,
        "finishing",
        UpdateExpression=expression,
        ConditionExpression="#o = :owner AND #s = :running",
        ExpressionAttributeNames={"#s": STATUS_ATTRIBUTE, "#o": "owner", "#e": "error"},
        ExpressionAttributeValues={**values, ":running": attr_s(RUNNING)},
    )


def release_job(
    ctx: AwsContext, table: str, job_id: str, owner: str, *, interrupted: bool, error: str = ""
) -> JobRecord | None:
    """Hand the job back, only if ``owner`` holds it: ``interrupted`` (a spot notice; ``interruptions`` + 1)
    or ``queued`` after an engine failure (``engine_failures`` + 1, ``error`` kept as the last reason).
    The owner and lease are removed, so any worker may claim it at once.

    Returns:
        The new row, or ``None`` if ``owner`` no longer held the job.

    Raises:
        CloudError, CredentialsError: the call failed.
    """
    values: dict[str, Any] = {
        ":status": attr_s(INTERRUPTED if interrupted else QUEUED),
        ":owner": attr_s(owner),
        ":running": attr_s(RUNNING),
        ":now_iso": attr_s(iso_utc(timespec="milliseconds")),
        ":one": attr_n(1),
    }
    sets = "SET #s = :status, updated_at = :now_iso"
    if error:
        sets += ", #e = :error"
        values[":error"] = attr_s(one_line(error))
    counter = "interruptions" if interrupted else "engine_failures"
    return _update(
        ctx,
        table,
        job_id,
        "releasing",
        UpdateExpression=f"{sets} REMOVE #o, lease_expires_at ADD {counter} :one",
        ConditionExpression="#o = :owner AND #s = :running",
        ExpressionAttributeNames={
            "#s": STATUS_ATTRIBUTE,
            "#o": "owner",
            **({"#e": "error"} if error else {}),
        },
        ExpressionAttributeValues=values,
    )


def requeue_job(ctx: AwsContext, table: str, job_id: str) -> JobRecord | None:
    """Put a ``failed`` or ``dead_lettered`` job back to ``queued`` with its engine failures reset (``jobs
    retry``); the last error is kept until the next end.

    Returns:
        The new row, or ``None`` if the job is not failed or dead-lettered (or has no row).

    Raises:
        CloudError, CredentialsError: the call failed.
    """
    return _update(
        ctx,
        table,
        job_id,
        "requeueing",
        UpdateExpression="SET #s = :queued, engine_failures = :zero, updated_at = :now_iso REMOVE expires_at",
        ConditionExpression="#s IN (:failed, :dead)",
        ExpressionAttributeNames={"#s": STATUS_ATTRIBUTE},
        ExpressionAttributeValues={
            ":queued": attr_s(QUEUED),
            ":failed": attr_s(FAILED),
            ":dead": attr_s(DEAD_LETTERED),
            ":zero": attr_n(0),
            ":now_iso": attr_s(iso_utc(timespec="milliseconds")),
        },
    )


def dead_letter_stuck_job(
    ctx: AwsContext, table: str, job_id: str, error: str, *, expires_at: int | None = None
) -> JobRecord | None:
    """Mark a job ``dead_lettered`` whose message SQS moved to the dead-letter queue by itself (after the
    queue's ``maxReceiveCount`` receives): only while it is ``queued`` or ``interrupted``, or ``running``
    with its lease over (its worker is gone); the owner and lease are removed. Two callers reconciling the
    same message cannot both write: the second finds the status final.

    Args:
        error: why, one line (kept to :data:`ERROR_MAX_CHARS`).
        expires_at: when DynamoDB may delete the row (TTL), Unix epoch seconds.

    Returns:
        The new row, or ``None`` if the job is final already or held by a live worker (nothing written).

    Raises:
        CloudError, CredentialsError: the call failed.
    """
    values: dict[str, Any] = {
        ":dead": attr_s(DEAD_LETTERED),
        ":queued": attr_s(QUEUED),
        ":interrupted": attr_s(INTERRUPTED),
        ":running": attr_s(RUNNING),
        ":now": attr_n(int(time.time())),
        ":error": attr_s(one_line(error)),
        ":now_iso": attr_s(iso_utc(timespec="milliseconds")),
    }
    sets = "#s = :dead, #e = :error, updated_at = :now_iso"
    if expires_at is not None:
        sets += ", expires_at = :expires"
        values[":expires"] = attr_n(expires_at)
    return _update(
        ctx,
        table,
        job_id,
        "dead-lettering",
        UpdateExpression=f"SET {sets} REMOVE #o, lease_expires_at",
        ConditionExpression="#s IN (:queued, :interrupted) OR (#s = :running AND "
        "(attribute_not_exists(lease_expires_at) OR lease_expires_at < :now))",
        ExpressionAttributeNames={"#s": STATUS_ATTRIBUTE, "#e": "error", "#o": "owner"},
        ExpressionAttributeValues=values,
    )


def abandon_job(ctx: AwsContext, table: str, job_id: str, error: str) -> JobRecord | None:
    """Fail a job that never started (``queued``, no attempts): ``submit`` could not upload its audio.

    Returns:
        The new row, or ``None`` if the job had started or ended meanwhile (or has no row).

    Raises:
        CloudError, CredentialsError: the call failed.
    """
    return _update(
        ctx,
        table,
        job_id,
        "abandoning",
        UpdateExpression="SET #s = :failed, #e = :error, updated_at = :now_iso",
        ConditionExpression="#s = :queued AND attempts = :zero",
        ExpressionAttributeNames={"#s": STATUS_ATTRIBUTE, "#e": "error"},
        ExpressionAttributeValues={
            ":failed": attr_s(FAILED),
            ":queued": attr_s(QUEUED),
            ":zero": attr_n(0),
            ":error": attr_s(one_line(error)),
            ":now_iso": attr_s(iso_utc(timespec="milliseconds")),
        },
    )
