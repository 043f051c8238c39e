"""The pipeline's DynamoDB jobs table: one row per job, every state change a conditional write.

Layout (the contract with the stack's template, ``docs/pipeline.md``, "Jobs"): partition key ``job_id`` (S);
``status`` is one of :data:`STATUSES`; the global secondary index ``by-status`` (``status`` HASH,
``created_at`` RANGE) serves ``jobs --status``. Times are ISO 8601 UTC strings (``created_at``,
``updated_at``), except ``lease_expires_at`` and ``expires_at`` (DynamoDB's TTL attribute), which are Unix
epoch seconds (numbers), as TTL requires (DynamoDB Developer Guide, "Time to Live").

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
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from gpu_transcribe.aws.clients import AwsContext, aws_errors, dynamodb_client, error_code
from gpu_transcribe_engine.utc import iso_utc

QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
INTERRUPTED = "interrupted"
DEAD_LETTERED = "dead_lettered"
#: Every status a job can have.
STATUSES: tuple[str, ...] = (QUEUED, RUNNING, SUCCEEDED, FAILED, INTERRUPTED, DEAD_LETTERED)
#: Statuses a job does not leave by itself.
FINAL_STATUSES = frozenset({SUCCEEDED, FAILED, DEAD_LETTERED})
#: The index for listing by status (``status`` HASH, ``created_at`` RANGE).
STATUS_INDEX = "by-status"
#: The longest error text kept in a row (one line; DynamoDB items are limited to 400 KB).
ERROR_MAX_CHARS = 500

_CONDITION_FAILED = "ConditionalCheckFailedException"


@dataclass(frozen=True)
class JobOptions:
    """How one job is to be transcribed (the row's ``options`` map).

    Attributes:
        language: a Whisper language code or ``auto``; ``None``: the worker's default.
        formats: output formats (``txt``, ``json``, ``srt``, ``vtt``); empty: the worker's default.
        model: the model asked for; ``None``: whatever the workers run.
        correct: correct the transcript with Bedrock after transcription (``submit --correct``; stored as
            ``correct`` BOOL, absent when false).
    """

    language: str | None = None
    formats: tuple[str, ...] = ()
    model: str | None = None
    correct: bool = False


@dataclass(frozen=True)
class JobRecord:
    """One row of the jobs table.

    Attributes:
        job_id: the partition key.
        status: one of :data:`STATUSES`.
        file_name: the audio file's name (the key's last part).
        input_key: the audio's S3 key (``incoming/<job-id>/<name>`` from ``submit``).
        options: see :class:`JobOptions`.
        attempts: receives that started work on it (claims).
        engine_failures: times the engine failed on it (not interruptions, not lost workers).
        interruptions: times a spot interruption notice released it.
        owner: the worker holding it, or the one that ended it (``""`` when released or never claimed).
        lease_expires_at: when the owner's lease ends, Unix epoch seconds (``None`` when not held).
        result_keys: S3 keys of the outputs, once succeeded.
        error: one line: why it failed (or why the last attempt did).
        duration_s: seconds of audio, once transcribed.
        created_at: ISO 8601 UTC.
        updated_at: ISO 8601 UTC, the last change.
        expires_at: when DynamoDB deletes the row (TTL), Unix epoch seconds; ``None``: never.
        webhook_url: the job's own webhook (``submit --webhook-url``; ``""``: the pipeline's, if any).
        correction: what the Bedrock correction did
        (:meth:`gpu_transcribe.correct.correct.CorrectionResult.to_dict`,
            stored as a JSON string in the ``correction`` S attribute); ``None``: none was asked for.
    """

    job_id: str
    status: str
    file_name: str
    input_key: str
    options: JobOptions = field(default_factory=JobOptions)
    attempts: int = 0
    engine_failures: int = 0
    interruptions: int = 0
    owner: str = ""
    lease_expires_at: int | None = None
    result_keys: tuple[str, ...] = ()
    error: str = ""
    duration_s: float | None = None
    created_at: str = ""
    updated_at: str = ""
    expires_at: int | None = None
    webhook_url: str = ""
    correction: dict[str, Any] | None = None


def one_line(text: str) -> str:
    """``text`` on one line (white space runs become one space), at most :data:`ERROR_MAX_CHARS`."""
    return " ".join(text.split())[:ERROR_MAX_CHARS]


# --- DynamoDB's attribute values <-> ours -----------------------------------------------------------------


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: float) -> dict[str, str]:
    return {"N": str(Decimal(str(value)))}


def _item(record: JobRecord) -> dict[str, Any]:
    options: dict[str, Any] = {"formats": {"L": [_s(f) for f in record.options.formats]}}
    if record.options.language is not None:
        options["language"] = _s(record.options.language)
    if record.options.model is not None:
        options["model"] = _s(record.options.model)
    if record.options.correct:
        options["correct"] = {"BOOL": True}
    item: dict[str, Any] = {
        "job_id": _s(record.job_id),
        "status": _s(record.status),
        "file_name": _s(record.file_name),
        "input_key": _s(record.input_key),
        "options": {"M": options},
        "attempts": _n(record.attempts),
        "engine_failures": _n(record.engine_failures),
        "interruptions": _n(record.interruptions),
        "result_keys": {"L": [_s(k) for k in record.result_keys]},
        "created_at": _s(record.created_at),
        "updated_at": _s(record.updated_at),
    }
    if record.owner:
        item["owner"] = _s(record.owner)
    if record.lease_expires_at is not None:
        item["lease_expires_at"] = _n(record.lease_expires_at)
    if record.error:
        item["error"] = _s(record.error)
    if record.duration_s is not None:
        item["duration_s"] = _n(record.duration_s)
    if record.expires_at is not None:
        item["expires_at"] = _n(record.expires_at)
    if record.webhook_url:
        item["webhook_url"] = _s(record.webhook_url)
    return item


def _num(item: Mapping[str, Any], name: str) -> float | None:
    value = item.get(name)
    return None if value is None else float(value["N"])


def _str(item: Mapping[str, Any], name: str) -> str:
    value = item.get(name)
    return "" if value is None else str(value["S"])


def record_from_item(item: Mapping[str, Any]) -> JobRecord:
    """A :class:`JobRecord` from a DynamoDB item in the low-level client's form (``{"S": ...}``)."""
    options = item.get("options", {}).get("M", {})
    lease = _num(item, "lease_expires_at")
    expires = _num(item, "expires_at")
    return JobRecord(
        job_id=_str(item, "job_id"),
        status=_str(item, "status"),
        file_name=_str(item, "file_name"),
        input_key=_str(item, "input_key"),
        options=JobOptions(
            language=_str(options, "language") or None,
            formats=tuple(str(v["S"]) for v in options.get("formats", {}).get("L", [])),
            model=_str(options, "model") or None,
            correct=bool(options.get("correct", {}).get("BOOL", False)),
        ),
        attempts=int(_num(item, "attempts") or 0),
        engine_failures=int(_num(item, "engine_failures") or 0),
        interruptions=int(_num(item, "interruptions") or 0),
        owner=_str(item, "owner"),
        lease_expires_at=None if lease is None else int(lease),
        result_keys=tuple(str(v["S"]) for v in item.get("result_keys", {}).get("L", [])),
        error=_str(item, "error"),
        duration_s=_num(item, "duration_s"),
        created_at=_str(item, "created_at"),
        updated_at=_str(item, "updated_at"),
        expires_at=None if expires is None else int(expires),
        webhook_url=_str(item, "webhook_url"),
        correction=json.loads(_str(item, "correction")) if item.get("correction") else None,
    )


# --- reads -------------------------------------------------------------------------------------------------


def get_job(ctx: AwsContext, table: str, job_id: str) -> JobRecord | None:
    """The row of ``job_id`` (a strongly consistent read), or ``None`` if there is none.

    Raises:
        CloudError, CredentialsError: the call failed.
    """
    with aws_errors(ctx, f"reading job {job_id} from table {table}"):
        reply = dynamodb_client(ctx).get_item(
            TableName=table, Key={"job_id": _s(job_id)}, ConsistentRead=True
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
            values: dict[str, Any] = {":s": _s(status)}
            if since_iso:
                condition += " AND created_at >= :since"
                values[":since"] = _s(since_iso)
            pages = ddb.get_paginator("query").paginate(
                TableName=table,
                IndexName=STATUS_INDEX,
                KeyConditionExpression=condition,
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues=values,
            )
        else:
            kwargs: dict[str, Any] = {"TableName": table}
            if since_iso:
                kwargs.update(
                    FilterExpression="created_at >= :since",
                    ExpressionAttributeValues={":since": _s(since_iso)},
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
                TableName=table, Key={"job_id": _s(job_id)}, ReturnValues="ALL_NEW", **kwargs
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
                TableName=table, Item=_item(record), ConditionExpression="attribute_not_exists(job_id)"
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
        ExpressionAttributeNames={"#s": "status", "#o": "owner"},
        ExpressionAttributeValues={
            ":running": _s(RUNNING),
            ":queued": _s(QUEUED),
            ":interrupted": _s(INTERRUPTED),
            ":owner": _s(owner),
            ":lease": _n(int(now + lease_s)),
            ":now": _n(int(now)),
            ":now_iso": _s(iso_utc(timespec="milliseconds")),
            ":one": _n(1),
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
        ExpressionAttributeNames={"#s": "status", "#o": "owner"},
        ExpressionAttributeValues={
            ":owner": _s(owner),
            ":running": _s(RUNNING),
            ":lease": _n(int(now + lease_s)),
            ":now_iso": _s(iso_utc(timespec="milliseconds")),
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
        ":status": _s(status),
        ":owner": _s(owner),
        ":now_iso": _s(iso_utc(timespec="milliseconds")),
        ":keys": {"L": [_s(k) for k in result_keys]},
    }
    removes = ["lease_expires_at"]  # the owner stays: the worker that ended it (``jobs`` shows it)
    if error:
        sets.append("#e = :error")
        values[":error"] = _s(one_line(error))
    else:
        removes.append("#e")
    if duration_s is not None:
        sets.append("duration_s = :duration")
        values[":duration"] = _n(round(duration_s, 3))
    if expires_at is not None:
        sets.append("expires_at = :expires")
        values[":expires"] = _n(expires_at)
    if correction is not None:
        sets.append("correction = :correction")
        values[":correction"] = _s(json.dumps(dict(correction), default=str))
    expression = f"SET {', '.join(sets)} REMOVE {', '.join(removes)}"
    if engine_failure:
        expression += " ADD engine_failures :one"
        values[":one"] = _n(1)
    return _update(
        ctx,
        table,
        job_id,
        "finishing",
        UpdateExpression=expression,
        ConditionExpression="#o = :owner AND #s = :running",
        ExpressionAttributeNames={"#s": "status", "#o": "owner", "#e": "error"},
        ExpressionAttributeValues={**values, ":running": _s(RUNNING)},
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
        ":status": _s(INTERRUPTED if interrupted else QUEUED),
        ":owner": _s(owner),
        ":running": _s(RUNNING),
        ":now_iso": _s(iso_utc(timespec="milliseconds")),
        ":one": _n(1),
    }
    sets = "SET #s = :status, updated_at = :now_iso"
    if error:
        sets += ", #e = :error"
        values[":error"] = _s(one_line(error))
    counter = "interruptions" if interrupted else "engine_failures"
    return _update(
        ctx,
        table,
        job_id,
        "releasing",
        UpdateExpression=f"{sets} REMOVE #o, lease_expires_at ADD {counter} :one",
        ConditionExpression="#o = :owner AND #s = :running",
        ExpressionAttributeNames={"#s": "status", "#o": "owner", **({"#e": "error"} if error else {})},
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
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={
            ":queued": _s(QUEUED),
            ":failed": _s(FAILED),
            ":dead": _s(DEAD_LETTERED),
            ":zero": _n(0),
            ":now_iso": _s(iso_utc(timespec="milliseconds")),
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
        ":dead": _s(DEAD_LETTERED),
        ":queued": _s(QUEUED),
        ":interrupted": _s(INTERRUPTED),
        ":running": _s(RUNNING),
        ":now": _n(int(time.time())),
        ":error": _s(one_line(error)),
        ":now_iso": _s(iso_utc(timespec="milliseconds")),
    }
    sets = "#s = :dead, #e = :error, updated_at = :now_iso"
    if expires_at is not None:
        sets += ", expires_at = :expires"
        values[":expires"] = _n(expires_at)
    return _update(
        ctx,
        table,
        job_id,
        "dead-lettering",
        UpdateExpression=f"SET {sets} REMOVE #o, lease_expires_at",
        ConditionExpression="#s IN (:queued, :interrupted) OR (#s = :running AND "
        "(attribute_not_exists(lease_expires_at) OR lease_expires_at < :now))",
        ExpressionAttributeNames={"#s": "status", "#e": "error", "#o": "owner"},
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
        ExpressionAttributeNames={"#s": "status", "#e": "error"},
        ExpressionAttributeValues={
            ":failed": _s(FAILED),
            ":queued": _s(QUEUED),
            ":zero": _n(0),
            ":error": _s(one_line(error)),
            ":now_iso": _s(iso_utc(timespec="milliseconds")),
        },
    )
