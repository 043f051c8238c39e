"""Job events out of the pipeline: the results message, its publishing, and the results queue (`jobs watch`).

When a job ends (succeeded, failed, dead-lettered) the worker calls :func:`publish_job_event`, which puts one
message on the results queue (``P-results``: a pull channel, read by ``gpu-transcribe jobs watch`` or any SQS
consumer) and, when a webhook applies (the pipeline was deployed with ``--webhook-url`` or the job carries
``webhook_url``), the same message on the webhooks queue (``P-webhooks``), which the notifier Lambda
(:mod:`gpu_transcribe.aws.pipeline.notifier_lambda`) delivers. Two queues, not one, because an SQS message
goes to one
consumer: a Lambda reading the results queue would leave nothing for ``jobs watch``.

The message (JSON, ``version`` 1)::

    {"version": 1, "id": "msg_<24 hex>", "type": "job.succeeded", "timestamp": "2026-12-02T07:00:00.000Z",
     "data": {"job_id": "...", "file": "a.wav", "status": "succeeded",
              "outputs": ["s3://BUCKET/results/ID/a.txt"], "duration_s": 11.0,
              "timings": {"transcribe_s": 3.2}, "error": null}}

plus ``webhook_url`` on the webhooks queue's copy when the job has its own (it may hold a token, so it is not
put on the results queue). ``type`` is ``job.succeeded``, ``job.failed`` or ``job.dead_lettered``; ``id`` is
the ``webhook-id`` of every delivery attempt, derived from the job, the type and when it happened, so a
worker that publishes the same change twice (a crash and a redelivery) produces the same id and receivers
dedupe it. The webhook body is ``{"type", "timestamp", "data"}`` of the message.

The webhook signing secret, the URL checks and ``webhook verify`` live in
:mod:`gpu_transcribe.pipeline.webhooks`; every SQS call goes through :mod:`gpu_transcribe.aws.pipeline.queue`,
as the worker's do.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpu_transcribe.aws.pipeline import queue
from gpu_transcribe.errors import GpuTranscribeError
from gpu_transcribe_engine.utc import iso_utc

if TYPE_CHECKING:
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.pipeline.jobs_table import JobRecord
    from gpu_transcribe.settings import Settings

logger = logging.getLogger(__name__)

MESSAGE_VERSION = 1
EVENT_TYPES: dict[str, str] = {
    "job.succeeded": "succeeded",
    "job.failed": "failed",
    "job.dead_lettered": "dead_lettered",
}
"""Event type -> the job's status it reports."""
WEBHOOK_URL_FIELD = "webhook_url"
"""The job's field (table attribute, S) holding its own webhook URL, set by ``submit --webhook-url``."""


# --- the message --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResultsChannel:
    """Where :func:`publish_job_event` sends: the queues and whether the pipeline has a webhook URL.

    Attributes:
        results_queue_url: the results queue (always sent to; ``""``: none, e.g. an older stack).
        webhooks_queue_url: the notifier's queue (``""``: none).
        pipeline_webhook: True when the pipeline was deployed with ``--webhook-url`` (then every event goes
            to the webhooks queue; otherwise only those of jobs with their own ``webhook_url``).
    """

    results_queue_url: str
    webhooks_queue_url: str = ""
    pipeline_webhook: bool = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ResultsChannel:
        """From the worker's ``/etc/gpu-transcribe/pipeline.json`` (keys ``results_queue_url``,
        ``webhooks_queue_url``, ``pipeline_webhook``; missing keys: nothing is sent there)."""
        return cls(
            results_queue_url=str(config.get("results_queue_url") or ""),
            webhooks_queue_url=str(config.get("webhooks_queue_url") or ""),
            pipeline_webhook=bool(config.get("pipeline_webhook")),
        )


def build_job_event(
    event_type: str,
    *,
    job_id: str,
    file_name: str,
    bucket: str,
    result_keys: Sequence[str] = (),
    duration_s: float | None = None,
    timings: Mapping[str, float] | None = None,
    error: str = "",
    occurred_at: str = "",
) -> dict[str, Any]:
    """The results message for one job state change (the module docstring shows it).

    Args:
        event_type: a key of :data:`EVENT_TYPES`.
        job_id, file_name: the job's id and audio file name.
        bucket: the pipeline's bucket (outputs become ``s3://bucket/key``).
        result_keys: S3 keys of the outputs (``results/<job-id>/...``).
        duration_s: seconds of audio, if known.
        timings: named durations in seconds (e.g. ``transcribe_s``), if any.
        error: the one-line reason of a failure (``""``: none, sent as null).
        occurred_at: when the change happened, ISO 8601 (the job row's ``updated_at``); ``""``: now. It
            makes the event's ``id``, so the same change published twice has the same id.

    Raises:
        ValueError: an unknown ``event_type``.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"event type {event_type!r} is not one of {', '.join(EVENT_TYPES)}")
    when = occurred_at or iso_utc(timespec="milliseconds")
    digest = hashlib.sha256(f"{job_id}|{event_type}|{when}".encode()).hexdigest()[:24]
    return {
        "version": MESSAGE_VERSION,
        "id": f"msg_{digest}",
        "type": event_type,
        "timestamp": when,
        "data": {
            "job_id": job_id,
            "file": file_name,
            "status": EVENT_TYPES[event_type],
            "outputs": [f"s3://{bucket}/{key}" for key in result_keys],
            "duration_s": duration_s,
            "timings": dict(timings or {}),
            "error": error or None,
        },
    }


def publish_job_event(
    ctx: AwsContext,
    channel: ResultsChannel,
    event_type: str,
    *,
    job_id: str,
    file_name: str,
    bucket: str,
    result_keys: Sequence[str] = (),
    duration_s: float | None = None,
    timings: Mapping[str, float] | None = None,
    error: str = "",
    webhook_url: str = "",
    occurred_at: str = "",
) -> dict[str, Any] | None:
    """Put a job's state change on the results queue and, if a webhook applies, on the webhooks queue.

    Never raises for AWS trouble: transcription must not wait on or fail for a notification, so an SQS error
    is logged (warning) and the event dropped (the job table still holds the truth).

    Args:
        ctx: where the SQS calls go.
        channel: the queues (:meth:`ResultsChannel.from_config`).
        event_type, job_id, file_name, bucket, result_keys, duration_s, timings, error, occurred_at: see
            :func:`build_job_event`.
        webhook_url: the job's own webhook (``submit --webhook-url``; ``""``: the pipeline's, if any).

    Returns:
        The message published (without ``webhook_url``), or ``None`` if sending failed.

    Raises:
        ValueError: an unknown ``event_type``.
    """
    event = build_job_event(
        event_type,
        job_id=job_id,
        file_name=file_name,
        bucket=bucket,
        result_keys=result_keys,
        duration_s=duration_s,
        timings=timings,
        error=error,
        occurred_at=occurred_at,
    )
    sends: list[tuple[str, dict[str, Any]]] = []
    if channel.results_queue_url:
        sends.append((channel.results_queue_url, event))
    if channel.webhooks_queue_url and (webhook_url or channel.pipeline_webhook):
        sends.append((channel.webhooks_queue_url, {**event, WEBHOOK_URL_FIELD: webhook_url or None}))
    try:
        for url, message in sends:
            queue.send(ctx, url, json.dumps(message, separators=(",", ":")))
    except GpuTranscribeError as exc:
        logger.warning("job %s: %s not published: %s", job_id, event_type, exc)
        return None
    return event


def event_type_for_status(status: str) -> str:
    """The event type (:data:`EVENT_TYPES`) that reports a final job ``status``.

    Raises:
        ValueError: ``status`` is not final (``succeeded``, ``failed``, ``dead_lettered``).
    """
    for event_type, reported in EVENT_TYPES.items():
        if reported == status:
            return event_type
    raise ValueError(f"status {status!r} ends no job: no event reports it")


def publish_final_job(
    ctx: AwsContext,
    channel: ResultsChannel,
    bucket: str,
    record: JobRecord,
    *,
    timings: Mapping[str, float] | None = None,
) -> dict[str, Any] | None:
    """:func:`publish_job_event` for a job row in a final status: the event its status reports, with the
    row's outputs, duration, error and webhook URL, and ``occurred_at`` = the row's ``updated_at``, so
    whoever publishes the end of a job (the worker that wrote it, a worker that finds it final on a
    redelivery, the dead-letter reconciliation) publishes the same id.

    Args:
        ctx, channel, bucket: see :func:`publish_job_event`.
        record: the row after its final write.
        timings: named durations in seconds (the worker's ``transcribe_s``); not kept in the row, so a
            republished event has none.

    Returns:
        The message published, or ``None`` if sending failed (logged).

    Raises:
        ValueError: the row's status is not final.
    """
    return publish_job_event(
        ctx,
        channel,
        event_type_for_status(record.status),
        job_id=record.job_id,
        file_name=record.file_name,
        bucket=bucket,
        result_keys=record.result_keys,
        duration_s=record.duration_s,
        timings=timings,
        error=record.error,
        webhook_url=record.webhook_url,
        occurred_at=record.updated_at,
    )


# --- the results queue ----------------------------------------------------------------------------------


def watch_results(
    ctx: AwsContext,
    queue_url: str,
    *,
    delete: bool = True,
    wait_s: int = 20,
    stop_when_empty: bool = False,
    until: Callable[[], bool] = lambda: False,
) -> Iterator[dict[str, Any]]:
    """Follow the results queue: yield each message (parsed) and delete it once the caller took it.

    Args:
        ctx: where the SQS calls go.
        queue_url: the results queue.
        delete: delete each message after it was yielded (False: it comes back after the visibility
            timeout, for another reader).
        wait_s: SQS long-polling seconds per receive (0-20).
        stop_when_empty: stop after a receive that brought nothing (the queue is drained, as far as SQS's
            sampling shows).
        until: checked before each receive; True stops.

    Raises:
        CloudError, CredentialsError: SQS refused.
    """
    while not until():
        messages = queue.receive(ctx, queue_url, wait_s=wait_s)
        if stop_when_empty and not messages:
            return
        for message in messages:
            try:
                event = json.loads(message.body)
            except json.JSONDecodeError:
                logger.warning("results queue: message %s is not JSON; deleted", message.message_id)
                event = None
            if event is not None:
                yield event
            if delete or event is None:
                queue.delete(ctx, queue_url, message.receipt_handle)


def results_queue_url(settings: Settings, name: str | None) -> str:
    """The results queue of a deployed pipeline (from its stack's outputs).

    Raises:
        PipelineNotFoundError: no such pipeline in the region.
        CloudError: the stack predates the results queue (deploy it again).
        CredentialsError: credentials missing or rejected.
    """
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.pipeline.models import PipelineOutputs, pipeline_stack_name
    from gpu_transcribe.aws.pipeline.stack import describe_stack
    from gpu_transcribe.errors import CloudError, PipelineNotFoundError
    from gpu_transcribe.pipeline.config import pipeline_name

    pipeline = pipeline_name(name)
    ctx = AwsContext.from_settings(settings)
    stack = describe_stack(ctx, pipeline_stack_name(pipeline))
    if stack is None:
        raise PipelineNotFoundError(pipeline, ctx.region)
    url = PipelineOutputs.from_stack(stack).results_queue_url
    if not url:
        raise CloudError(f"pipeline {pipeline} has no results queue: deploy it again with this version")
    return url
