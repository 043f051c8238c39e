"""The pipeline's SQS jobs queue: receive, heartbeat, release, delete, send, counts, and the S3 event
messages it carries.

Numbers from the SQS Developer Guide: at most 10 messages per ``ReceiveMessage``; long polling waits up to
20 s ("Amazon SQS short and long polling"); a visibility timeout between 0 and 12 hours, and
``ChangeMessageVisibility`` to 0 makes a message visible again at once ("Amazon SQS visibility timeout").

The messages are S3 event notifications (S3 User Guide, "Event message structure"): ``{"Records": [{"s3":
{"bucket": {"name": ...}, "object": {"key": ..., "size": ..., "eTag": ...}}}]}``, with the key URL-encoded
as in a form (``/`` may come as ``%2F``, a space as ``+``): decoded with :func:`urllib.parse.unquote_plus`,
as AWS's own examples do. When a notification is configured S3 sends one ``s3:TestEvent`` message, which
names no object. ``jobs retry`` and the dead-letter hand-over send the same event form, so the worker
parses one kind of message.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gpu_transcribe.aws.clients import AwsContext, aws_errors, error_code, sqs_client
from gpu_transcribe.aws.pipeline.models import QueueCounts

#: ``ReceiveMessage`` returns at most 10 messages.
MAX_MESSAGES = 10
#: The message attribute naming who put a message on the dead-letter queue: ``worker`` on the copy a worker
#: sends when it dead-letters a job itself (the row is ``dead_lettered`` already); absent on a message SQS's
#: redrive moved.
DEAD_LETTERED_BY = "dead-lettered-by"
#: The longest long poll, seconds.
MAX_WAIT_S = 20
#: The longest visibility timeout, 12 hours in seconds.
MAX_VISIBILITY_S = 43_200


@dataclass(frozen=True)
class S3Object:
    """An object an event message names.

    Attributes:
        bucket: the bucket's name.
        key: the object's key, decoded (``incoming/<job-id>/intervju 1.wav``).
        size_bytes: its size as the event gives it (0 if absent).
        etag: its ETag (no quotes; ``""`` if absent).
    """

    bucket: str
    key: str
    size_bytes: int = 0
    etag: str = ""


@dataclass(frozen=True)
class QueueMessage:
    """One received message.

    Attributes:
        message_id: SQS's id (the same for every delivery of this message).
        receipt_handle: the handle of this delivery, for visibility changes and delete.
        body: the message body as sent.
        receive_count: deliveries so far, this one included (``ApproximateReceiveCount``).
        objects: the S3 objects it names (empty for ``s3:TestEvent`` or a body we do not understand).
        test_event: it is S3's ``s3:TestEvent``.
        attributes: its string message attributes (``send(..., attributes=)``), e.g.
            :data:`DEAD_LETTERED_BY`.
    """

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    objects: tuple[S3Object, ...]
    test_event: bool = False
    attributes: Mapping[str, str] = field(default_factory=dict)


def parse_event_body(body: str) -> tuple[tuple[S3Object, ...], bool]:
    """The objects an S3 event notification body names, and whether it is ``s3:TestEvent``.

    A body that is not JSON or has no ``Records`` gives no objects; only ``ObjectCreated`` records count
    (a record without ``eventName`` counts too: the form ``jobs retry`` sends).
    """
    try:
        document = json.loads(body)
    except ValueError:
        return (), False
    if not isinstance(document, dict):
        return (), False
    if document.get("Event") == "s3:TestEvent":
        return (), True
    objects = []
    for record in document.get("Records") or []:
        try:
            if not str(record.get("eventName", "ObjectCreated")).startswith("ObjectCreated"):
                continue
            s3 = record["s3"]
            raw = s3["object"]
            objects.append(
                S3Object(
                    bucket=str(s3["bucket"]["name"]),
                    key=urllib.parse.unquote_plus(str(raw["key"])),
                    size_bytes=int(raw.get("size", 0) or 0),
                    etag=str(raw.get("eTag", raw.get("etag", "")) or "").strip('"'),
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
    return tuple(objects), False


def event_body(bucket: str, key: str, size_bytes: int = 0, etag: str = "") -> str:
    """An S3 ``ObjectCreated`` event notification body naming one object, its key encoded as S3 does."""
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "bucket": {"name": bucket},
            "object": {"key": urllib.parse.quote_plus(key, safe="/"), "size": size_bytes, "eTag": etag},
        },
    }
    return json.dumps({"Records": [record]})


def receive(
    ctx: AwsContext,
    queue_url: str,
    *,
    max_messages: int = MAX_MESSAGES,
    wait_s: int = MAX_WAIT_S,
    visibility_timeout_s: int | None = None,
) -> tuple[QueueMessage, ...]:
    """Receive up to ``max_messages`` (1-10), long polling up to ``wait_s`` (0-20) seconds.

    Args:
        visibility_timeout_s: how long the messages stay hidden from other receivers; ``None``: the queue's.

    Raises:
        CloudError, CredentialsError: the call failed.
    """
    kwargs: dict[str, Any] = {
        "QueueUrl": queue_url,
        "MaxNumberOfMessages": max(1, min(MAX_MESSAGES, max_messages)),
        "WaitTimeSeconds": max(0, min(MAX_WAIT_S, wait_s)),
        "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
        "MessageAttributeNames": ["All"],
    }
    if visibility_timeout_s is not None:
        kwargs["VisibilityTimeout"] = max(0, min(MAX_VISIBILITY_S, visibility_timeout_s))
    with aws_errors(ctx, f"receiving from queue {queue_url}"):
        reply = sqs_client(ctx).receive_message(**kwargs)
    messages = []
    for raw in reply.get("Messages", []):
        body = str(raw.get("Body", ""))
        objects, test_event = parse_event_body(body)
        messages.append(
            QueueMessage(
                message_id=str(raw["MessageId"]),
                receipt_handle=str(raw["ReceiptHandle"]),
                body=body,
                receive_count=int(raw.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
                objects=objects,
                test_event=test_event,
                attributes={
                    str(name): str(value.get("StringValue", ""))
                    for name, value in raw.get("MessageAttributes", {}).items()
                },
            )
        )
    return tuple(messages)


def change_visibility(ctx: AwsContext, queue_url: str, receipt_handle: str, timeout_s: int) -> bool:
    """Hide the message for ``timeout_s`` more seconds from now (a heartbeat), or 0: visible again at once.

    Returns:
        True if done; False if SQS no longer knows the delivery (deleted, or the handle expired:
        ``ReceiptHandleIsInvalid``, ``MessageNotInflight``).

    Raises:
        CloudError, CredentialsError: the call failed otherwise.
    """
    with aws_errors(ctx, f"changing the visibility of a message of {queue_url}"):
        try:
            sqs_client(ctx).change_message_visibility(
                QueueUrl=queue_url,
                ReceiptHandle=receipt_handle,
                VisibilityTimeout=max(0, min(MAX_VISIBILITY_S, timeout_s)),
            )
        except Exception as exc:
            if error_code(exc) in ("ReceiptHandleIsInvalid", "MessageNotInflight", "InvalidParameterValue"):
                return False
            raise
    return True


def delete(ctx: AwsContext, queue_url: str, receipt_handle: str) -> None:
    """Delete a received message (SQS: deleting an already deleted message succeeds).

    Raises:
        CloudError, CredentialsError: the call failed.
    """
    with aws_errors(ctx, f"deleting a message of {queue_url}"):
        sqs_client(ctx).delete_message(QueueUrl=queue_url, ReceiptHandle=receipt_handle)


def send(ctx: AwsContext, queue_url: str, body: str, attributes: Mapping[str, str] | None = None) -> str:
    """Send a message, with string message ``attributes`` if given; returns its id.

    Raises:
        CloudError, CredentialsError: the call failed.
    """
    extra: dict[str, Any] = {}
    if attributes:
        extra["MessageAttributes"] = {
            name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
        }
    with aws_errors(ctx, f"sending to queue {queue_url}"):
        reply = sqs_client(ctx).send_message(QueueUrl=queue_url, MessageBody=body, **extra)
    return str(reply["MessageId"])


def queue_counts(ctx: AwsContext, queue_url: str) -> QueueCounts:
    """The queue's approximate visible, in-flight and delayed message counts.

    Raises:
        CloudError, CredentialsError: the call failed (a deleted queue: ``QueueDoesNotExist``).
    """
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    with aws_errors(ctx, f"reading the counts of queue {queue_url}"):
        attributes = sqs_client(ctx).get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)[
            "Attributes"
        ]
    visible, in_flight, delayed = (int(attributes.get(n, 0)) for n in names)
    return QueueCounts(visible=visible, in_flight=in_flight, delayed=delayed)


def visibility_timeout_s(ctx: AwsContext, queue_url: str) -> int:
    """The queue's default visibility timeout, seconds.

    Raises:
        CloudError, CredentialsError: the call failed.
    """
    with aws_errors(ctx, f"reading the visibility timeout of queue {queue_url}"):
        attributes = sqs_client(ctx).get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["VisibilityTimeout"]
        )
    return int(attributes.get("Attributes", {}).get("VisibilityTimeout", 30))
