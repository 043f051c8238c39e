"""Job events out of the pipeline: the results message, the webhook secret, `jobs watch`, `webhook verify`.

When a job ends (succeeded, failed, dead-lettered) the worker calls :func:`publish_job_event`, which puts one
message on the results queue (``P-results``: a pull channel, read by ``gpu-transcribe jobs watch`` or any SQS
consumer) and, when a webhook applies (the pipeline was deployed with ``--webhook-url`` or the job carries
``webhook_url``), the same message on the webhooks queue (``P-webhooks``), which the notifier Lambda
(:mod:`gpu_transcribe.pipeline.notifier`) delivers. Two queues, not one, because an SQS message goes to one
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

The webhook secret lives in Secrets Manager (``P-webhook``), JSON ``{"current": "whsec_...", "previous":
"whsec_..." | null, "previous_until": Unix seconds | null}``: during a rotation the notifier signs with both
(Standard Webhooks allows several space-separated signatures), until ``--finish-rotation`` or
``previous_until``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpu_transcribe_api.webhook_common import check_secret, generate_secret, url_refusal
from gpu_transcribe_engine.utc import iso_utc

if TYPE_CHECKING:
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
DEFAULT_ROTATION_HOURS = 24.0
"""How long ``pipeline webhook-secret --rotate`` keeps the previous secret signing, by default, hours."""


class WebhookUrlError(ValueError):
    """A webhook URL that may not be used (not http(s), no host, unresolvable, or a private address)."""


def check_webhook_url(url: str, allow_private: bool) -> str:
    """``url`` stripped, if webhooks may be sent there (see
    :func:`gpu_transcribe_api.webhook_common.url_refusal`).

    Raises:
        WebhookUrlError: why not; the message names the host, never the query (it may hold a token).
    """
    refusal = url_refusal(url, allow_private)
    if refusal:
        hint = "" if allow_private else " (--allow-private-webhooks allows private addresses)"
        raise WebhookUrlError(f"webhook URL refused: {refusal}{hint}")
    return url.strip()


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
    sqs: Any,
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
        sqs: a boto3 SQS client.
        channel: the queues (:meth:`ResultsChannel.from_config`).
        event_type, job_id, file_name, bucket, result_keys, duration_s, timings, error, occurred_at: see
            :func:`build_job_event`.
        webhook_url: the job's own webhook (``submit --webhook-url``; ``""``: the pipeline's, if any).

    Returns:
        The message published (without ``webhook_url``), or ``None`` if sending failed.

    Raises:
        ValueError: an unknown ``event_type``.
    """
    import botocore.exceptions

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
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps(message, separators=(",", ":")))
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
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
    sqs: Any,
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
        sqs, channel, bucket: see :func:`publish_job_event`.
        record: the row after its final write.
        timings: named durations in seconds (the worker's ``transcribe_s``); not kept in the row, so a
            republished event has none.

    Returns:
        The message published, or ``None`` if sending failed (logged).

    Raises:
        ValueError: the row's status is not final.
    """
    return publish_job_event(
        sqs,
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


# --- the secret ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookSecret:
    """The pipeline's signing secret(s), as kept in Secrets Manager.

    Attributes:
        current: the secret signing now (``whsec_`` + base64).
        previous: the one before a rotation, still signing until ``previous_until`` (``None``: no rotation).
        previous_until: Unix seconds when ``previous`` stops signing (``None`` with a ``previous``: until
            ``--finish-rotation``).
    """

    current: str
    previous: str | None = None
    previous_until: float | None = None

    def to_json(self) -> str:
        """The ``SecretString`` form."""
        return json.dumps(
            {"current": self.current, "previous": self.previous, "previous_until": self.previous_until}
        )

    @classmethod
    def from_json(cls, text: str) -> WebhookSecret:
        """Parse a ``SecretString``.

        Raises:
            ValueError: not this JSON, or a secret that is not ``whsec_`` + base64 of 24+ bytes.
        """
        try:
            raw = json.loads(text)
            current = check_secret(str(raw["current"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError("the webhook secret is not the pipeline's JSON document") from None
        previous = check_secret(raw["previous"]) if raw.get("previous") else None
        until = raw.get("previous_until")
        return cls(current, previous, float(until) if until is not None else None)

    def signing(self, now_s: float) -> list[str]:
        """The secrets a delivery at ``now_s`` (Unix seconds) is signed with: current, then previous."""
        keys = [self.current]
        if self.previous and (self.previous_until is None or now_s < self.previous_until):
            keys.append(self.previous)
        return keys


def webhook_secret_name(pipeline: str) -> str:
    """The Secrets Manager name of a pipeline's webhook secret: ``gpu-transcribe-<name>-webhook``."""
    return f"gpu-transcribe-{pipeline}-webhook"


def read_webhook_secret(secretsmanager: Any, name: str) -> WebhookSecret | None:
    """The secret, or ``None`` if there is none of that name.

    Raises:
        ValueError: it exists but is not the pipeline's JSON document (see :meth:`WebhookSecret.from_json`).
        botocore.exceptions.ClientError: anything else Secrets Manager answers.
    """
    try:
        value = secretsmanager.get_secret_value(SecretId=name)
    except secretsmanager.exceptions.ResourceNotFoundException:
        return None
    return WebhookSecret.from_json(value["SecretString"])


def ensure_webhook_secret(secretsmanager: Any, name: str, tags: Sequence[tuple[str, str]]) -> bool:
    """Make sure the secret exists and holds a usable document; True if it had to be written.

    CloudFormation makes it on AWS (with a generated value that is not yet ``whsec_``: replaced here once);
    moto skips ``AWS::SecretsManager::Secret`` in a stack, so there it is created here.

    Raises:
        botocore.exceptions.ClientError: Secrets Manager refused.
    """
    try:
        found = secretsmanager.get_secret_value(SecretId=name)
    except secretsmanager.exceptions.ResourceNotFoundException:
        secretsmanager.create_secret(
            Name=name,
            Description="gpu-transcribe pipeline: Standard Webhooks signing secret(s)",
            SecretString=WebhookSecret(generate_secret()).to_json(),
            Tags=[{"Key": key, "Value": value} for key, value in tags],
        )
        return True
    try:
        WebhookSecret.from_json(found["SecretString"])
    except ValueError:
        secretsmanager.put_secret_value(
            SecretId=name, SecretString=WebhookSecret(generate_secret()).to_json()
        )
        return True
    return False


def rotate_webhook_secret(
    secretsmanager: Any, name: str, keep_previous_s: float | None, now_s: float | None = None
) -> WebhookSecret:
    """Start a rotation: a new current secret, the old one kept signing as ``previous`` for
    ``keep_previous_s`` seconds (``None``: until :func:`finish_rotation`).

    Raises:
        LookupError: there is no such secret (deploy the pipeline first).
        ValueError, botocore.exceptions.ClientError: as :func:`read_webhook_secret`.
    """
    old = read_webhook_secret(secretsmanager, name)
    if old is None:
        raise LookupError(f"no webhook secret {name}: deploy the pipeline first")
    moment = time.time() if now_s is None else now_s
    until = None if keep_previous_s is None else moment + keep_previous_s
    new = WebhookSecret(generate_secret(), old.current, until)
    secretsmanager.put_secret_value(SecretId=name, SecretString=new.to_json())
    return new


def finish_rotation(secretsmanager: Any, name: str) -> WebhookSecret:
    """End a rotation: only the current secret signs from now on.

    Raises:
        LookupError, ValueError, botocore.exceptions.ClientError: as :func:`rotate_webhook_secret`.
    """
    old = read_webhook_secret(secretsmanager, name)
    if old is None:
        raise LookupError(f"no webhook secret {name}: deploy the pipeline first")
    new = WebhookSecret(old.current)
    secretsmanager.put_secret_value(SecretId=name, SecretString=new.to_json())
    return new


# --- receiving ----------------------------------------------------------------------------------------


def verify_request(secrets: Sequence[str], headers: Mapping[str, str], body: bytes) -> Any:
    """Check a webhook request with the ``standardwebhooks`` library; the parsed body if any secret
    verifies it (a rotation: the old or the new one).

    Raises:
        standardwebhooks.webhooks.WebhookVerificationError: no secret verifies it, a header is missing, or
            the timestamp is more than 5 min from now (the library's tolerance).
    """
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    error: WebhookVerificationError | None = None
    for secret in secrets:
        try:
            return Webhook(secret).verify(body, dict(headers))
        except WebhookVerificationError as exc:
            error = exc
    raise error or WebhookVerificationError("no secret given")


def parse_saved_request(text: str) -> tuple[dict[str, str], bytes]:
    """Headers and body of a saved HTTP request (``curl --trace-ascii``-free form: an optional request line,
    ``Name: value`` lines, a blank line, the body), or headers alone when there is no blank line.

    Raises:
        ValueError: a header line without ``:``.
    """
    head, _, body = text.replace("\r\n", "\n").partition("\n\n")
    headers: dict[str, str] = {}
    for number, line in enumerate(head.splitlines()):
        if not line.strip() or (number == 0 and " HTTP/" in line):
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise ValueError(f"header line {number + 1} has no ':': {line[:40]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers, body.encode()


def watch_results(
    sqs: Any,
    queue_url: str,
    *,
    delete: bool = True,
    wait_s: int = 20,
    stop_when_empty: bool = False,
    until: Callable[[], bool] = lambda: False,
) -> Iterator[dict[str, Any]]:
    """Follow the results queue: yield each message (parsed) and delete it once the caller took it.

    Args:
        sqs: a boto3 SQS client.
        queue_url: the results queue.
        delete: delete each message after it was yielded (False: it comes back after the visibility
            timeout, for another reader).
        wait_s: SQS long-polling seconds per receive (0-20).
        stop_when_empty: stop after a receive that brought nothing (the queue is drained, as far as SQS's
            sampling shows).
        until: checked before each receive; True stops.

    Raises:
        botocore.exceptions.ClientError: SQS refused.
    """
    while not until():
        reply = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_s)
        if stop_when_empty and not reply.get("Messages"):
            return
        for message in reply.get("Messages", []):
            try:
                event = json.loads(message["Body"])
            except json.JSONDecodeError:
                logger.warning("results queue: message %s is not JSON; deleted", message["MessageId"])
                event = None
            if event is not None:
                yield event
            if delete or event is None:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


# --- the commands' side (settings -> AWS) -------------------------------------------------------------


def pipeline_webhook_secret(
    settings: Settings,
    name: str | None,
    *,
    rotate: bool = False,
    keep_previous_hours: float | None = DEFAULT_ROTATION_HOURS,
    finish: bool = False,
) -> WebhookSecret:
    """``pipeline webhook-secret``: read the pipeline's secret, or rotate it, or finish a rotation.

    Args:
        settings: region and profile.
        name: the pipeline (default ``default``).
        rotate: start a rotation (a new current secret; the old one keeps signing).
        keep_previous_hours: with ``rotate``, hours the old one keeps signing (``None``: until ``finish``).
        finish: end a rotation (only the current secret signs).

    Raises:
        SettingsError: a bad name, or both ``rotate`` and ``finish``.
        CloudError: no such secret (the pipeline is not deployed), or Secrets Manager refused.
        CredentialsError: credentials missing or rejected.
    """
    from gpu_transcribe.aws.clients import AwsContext, aws_errors, secretsmanager_client
    from gpu_transcribe.errors import CloudError, SettingsError
    from gpu_transcribe.pipeline.deploy import pipeline_name

    if rotate and finish:
        raise SettingsError("rotate", "--rotate", "--rotate and --finish-rotation exclude each other")
    secret_name = webhook_secret_name(pipeline_name(name))
    ctx = AwsContext.from_settings(settings)
    client = secretsmanager_client(ctx)
    with aws_errors(ctx, f"reading the webhook secret {secret_name}"):
        try:
            if rotate:
                keep_s = None if keep_previous_hours is None else keep_previous_hours * 3600.0
                return rotate_webhook_secret(client, secret_name, keep_s)
            if finish:
                return finish_rotation(client, secret_name)
            found = read_webhook_secret(client, secret_name)
        except (LookupError, ValueError) as exc:
            raise CloudError(f"{secret_name}: {exc}") from None
    if found is None:
        raise CloudError(f"no webhook secret {secret_name} in {ctx.region}: deploy the pipeline first")
    return found


def results_queue_url(settings: Settings, name: str | None) -> str:
    """The results queue of a deployed pipeline (from its stack's outputs).

    Raises:
        PipelineNotFoundError: no such pipeline in the region.
        CloudError: the stack predates the results queue (deploy it again).
        CredentialsError: credentials missing or rejected.
    """
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.models import PipelineOutputs, pipeline_stack_name
    from gpu_transcribe.aws.pipeline.stack import describe_stack
    from gpu_transcribe.errors import CloudError, PipelineNotFoundError
    from gpu_transcribe.pipeline.deploy import pipeline_name

    pipeline = pipeline_name(name)
    ctx = AwsContext.from_settings(settings)
    stack = describe_stack(ctx, pipeline_stack_name(pipeline))
    if stack is None:
        raise PipelineNotFoundError(pipeline, ctx.region)
    url = PipelineOutputs.from_stack(stack).results_queue_url
    if not url:
        raise CloudError(f"pipeline {pipeline} has no results queue: deploy it again with this version")
    return url
