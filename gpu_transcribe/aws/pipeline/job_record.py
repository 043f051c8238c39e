"""One row of the pipeline's DynamoDB jobs table: the statuses, :class:`JobRecord` and its DynamoDB item.

Layout (the contract with the stack's template, ``docs/pipeline.md``, "Jobs"): partition key ``job_id`` (S);
``status`` is one of :data:`STATUSES`; the global secondary index ``by-status`` (``status`` HASH,
``created_at`` RANGE) serves ``jobs --status``. Times are ISO 8601 UTC strings (``created_at``,
``updated_at``), except ``lease_expires_at`` and ``expires_at`` (DynamoDB's TTL attribute), which are Unix
epoch seconds (numbers), as TTL requires (DynamoDB Developer Guide, "Time to Live").

No AWS calls here: :mod:`gpu_transcribe.aws.pipeline.jobs_table` reads and writes the rows (and names these
types for its callers).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from gpu_transcribe.pipeline.contract import CREATED_ATTRIBUTE, STATUS_ATTRIBUTE, TABLE_KEY, TTL_ATTRIBUTE

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
#: The longest error text kept in a row (one line; DynamoDB items are limited to 400 KB).
ERROR_MAX_CHARS = 500


@dataclass(frozen=True)
class JobOptions:
    """How one job is to be transcribed (the row's ``options`` map).

    Attributes:
        language: a Whisper language code or ``auto``; ``None``: the worker's default.
        formats: output formats (``txt``, ``json``, ``srt``, ``vtt``); empty: the worker's default.
        model: the model asked for; ``None``: whatever the workers run.
        correct: correct the transcript with Bedrock after transcription (``submit --correct``; stored as
            ``correct`` BOOL, absent when false).
        word_timestamps: time every word (``submit --word-timestamps``; ``word_timestamps`` BOOL, absent
            when false): the JSON gains ``words`` per segment.
        prompt: text that conditions the decoding (``submit --prompt``; ``prompt`` S, absent: none).
        max_line_width: subtitle characters per line (``submit --max-line-width``; N, absent: unset).
        max_line_count: subtitle lines per cue (``submit --max-line-count``; N, absent: unset).
        max_cue_s: subtitle seconds per cue (``submit --max-cue-duration``; ``max_cue_s`` N, absent: unset).

    The last five are :class:`gpu_transcribe_engine.options.TranscribeOptions`'s fields of the same names,
    checked by its ``validated()`` before the row is written; a row written before they existed has none of
    their attributes and reads as their defaults.
    """

    language: str | None = None
    formats: tuple[str, ...] = ()
    model: str | None = None
    correct: bool = False
    word_timestamps: bool = False
    prompt: str | None = None
    max_line_width: int | None = None
    max_line_count: int | None = None
    max_cue_s: float | None = None


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
        (:meth:`gpu_transcribe.correct.config.CorrectionResult.to_dict`,
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


def attr_s(value: str) -> dict[str, str]:
    """A DynamoDB string attribute value: ``{"S": value}``."""
    return {"S": value}


def attr_n(value: float) -> dict[str, str]:
    """A DynamoDB number attribute value: ``{"N": "12.5"}`` (exact decimal text)."""
    return {"N": str(Decimal(str(value)))}


def item_from_record(record: JobRecord) -> dict[str, Any]:
    """The DynamoDB item of ``record`` in the low-level client's form (empty optional fields left out)."""
    options: dict[str, Any] = {"formats": {"L": [attr_s(f) for f in record.options.formats]}}
    if record.options.language is not None:
        options["language"] = attr_s(record.options.language)
    if record.options.model is not None:
        options["model"] = attr_s(record.options.model)
    if record.options.correct:
        options["correct"] = {"BOOL": True}
    if record.options.word_timestamps:
        options["word_timestamps"] = {"BOOL": True}
    if record.options.prompt is not None:
        options["prompt"] = attr_s(record.options.prompt)
    for name in ("max_line_width", "max_line_count", "max_cue_s"):
        value = getattr(record.options, name)
        if value is not None:
            options[name] = attr_n(value)
    item: dict[str, Any] = {
        TABLE_KEY: attr_s(record.job_id),
        STATUS_ATTRIBUTE: attr_s(record.status),
        "file_name": attr_s(record.file_name),
        "input_key": attr_s(record.input_key),
        "options": {"M": options},
        "attempts": attr_n(record.attempts),
        "engine_failures": attr_n(record.engine_failures),
        "interruptions": attr_n(record.interruptions),
        "result_keys": {"L": [attr_s(k) for k in record.result_keys]},
        CREATED_ATTRIBUTE: attr_s(record.created_at),
        "updated_at": attr_s(record.updated_at),
    }
    if record.owner:
        item["owner"] = attr_s(record.owner)
    if record.lease_expires_at is not None:
        item["lease_expires_at"] = attr_n(record.lease_expires_at)
    if record.error:
        item["error"] = attr_s(record.error)
    if record.duration_s is not None:
        item["duration_s"] = attr_n(record.duration_s)
    if record.expires_at is not None:
        item[TTL_ATTRIBUTE] = attr_n(record.expires_at)
    if record.webhook_url:
        item["webhook_url"] = attr_s(record.webhook_url)
    return item


def _num(item: Mapping[str, Any], name: str) -> float | None:
    value = item.get(name)
    return None if value is None else float(value["N"])


def _int(item: Mapping[str, Any], name: str) -> int | None:
    value = _num(item, name)
    return None if value is None else int(value)


def _str(item: Mapping[str, Any], name: str) -> str:
    value = item.get(name)
    return "" if value is None else str(value["S"])


def record_from_item(item: Mapping[str, Any]) -> JobRecord:
    """A :class:`JobRecord` from a DynamoDB item in the low-level client's form (``{"S": ...}``)."""
    options = item.get("options", {}).get("M", {})
    lease = _num(item, "lease_expires_at")
    expires = _num(item, TTL_ATTRIBUTE)
    return JobRecord(
        job_id=_str(item, TABLE_KEY),
        status=_str(item, STATUS_ATTRIBUTE),
        file_name=_str(item, "file_name"),
        input_key=_str(item, "input_key"),
        options=JobOptions(
            language=_str(options, "language") or None,
            formats=tuple(str(v["S"]) for v in options.get("formats", {}).get("L", [])),
            model=_str(options, "model") or None,
            correct=bool(options.get("correct", {}).get("BOOL", False)),
            word_timestamps=bool(options.get("word_timestamps", {}).get("BOOL", False)),
            prompt=_str(options, "prompt") or None,
            max_line_width=_int(options, "max_line_width"),
            max_line_count=_int(options, "max_line_count"),
            max_cue_s=_num(options, "max_cue_s"),
        ),
        attempts=int(_num(item, "attempts") or 0),
        engine_failures=int(_num(item, "engine_failures") or 0),
        interruptions=int(_num(item, "interruptions") or 0),
        owner=_str(item, "owner"),
        lease_expires_at=None if lease is None else int(lease),
        result_keys=tuple(str(v["S"]) for v in item.get("result_keys", {}).get("L", [])),
        error=_str(item, "error"),
        duration_s=_num(item, "duration_s"),
        created_at=_str(item, CREATED_ATTRIBUTE),
        updated_at=_str(item, "updated_at"),
        expires_at=None if expires is None else int(expires),
        webhook_url=_str(item, "webhook_url"),
        correction=json.loads(_str(item, "correction")) if item.get("correction") else None,
    )
