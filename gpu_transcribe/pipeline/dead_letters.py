"""The dead-letter queue brought in line with the jobs table (:func:`reconcile_dead_letters`), run by
``pipeline status``, ``jobs``, ``jobs retry`` and ``submit --wait``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpu_transcribe.aws.pipeline import jobs_table, queue
from gpu_transcribe.errors import GpuTranscribeError
from gpu_transcribe.pipeline.job_ids import external_job_id, job_id_for_key
from gpu_transcribe.pipeline.results import ResultsChannel, publish_final_job

if TYPE_CHECKING:
    from collections.abc import Callable

    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.pipeline.jobs_table import JobRecord
    from gpu_transcribe.aws.pipeline.queue import QueueMessage
    from gpu_transcribe.pipeline.config import PipelineConfig

#: Seconds a dead-letter message received by :func:`reconcile_dead_letters` stays hidden: one it leaves
#: (a job a live worker holds, a message naming no job) is back for the next reconciliation after that.
DEAD_LETTER_RECHECK_S = 30
#: The most dead-letter messages one reconciliation reads (10 per receive).
DEAD_LETTER_BATCH_MAX = 100
#: Why a job was marked dead-lettered by the reconciliation (the row's ``error``, the event's).
DEAD_LETTERED_BY_SQS = (
    "SQS moved its message to the dead-letter queue after the queue's maxReceiveCount receives (after "
    "{attempts} attempt(s)): its workers were killed, ran out of memory or kept being interrupted; "
    "`gpu-transcribe jobs retry {job_id}` queues it again"
)


@dataclass(frozen=True)
class DeadLetterResult:
    """What :func:`reconcile_dead_letters` did.

    Attributes:
        dead_lettered: ids of jobs it marked ``dead_lettered`` (their event published).
        removed: ids of jobs already final whose dead-letter message it deleted.
        left: messages it left in the dead-letter queue (a job a live worker holds, or a message that
            names no job of this pipeline).
        error: why it stopped early (an AWS call failed, e.g. a caller without permission on the dead-letter
            queue); ``""``: it read the queue to the end (or :data:`DEAD_LETTER_BATCH_MAX`).
    """

    dead_lettered: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    left: int = 0
    error: str = ""


def reconcile_dead_letters(ctx: AwsContext, config: PipelineConfig) -> DeadLetterResult:
    """Bring the jobs table in line with the dead-letter queue. SQS moves a message there by itself after
    the jobs queue's ``maxReceiveCount`` receives (a worker killed, out of memory or interrupted that many
    times), leaving its row ``queued``, ``running`` or ``interrupted`` for ever. For each message on the
    dead-letter queue (up to :data:`DEAD_LETTER_BATCH_MAX`):

    - a job not final is marked ``dead_lettered`` with the reason (:data:`DEAD_LETTERED_BY_SQS`) by a
      conditional write (:func:`~gpu_transcribe.aws.pipeline.jobs_table.dead_letter_stuck_job`: never a job a
      live
      worker holds), its ``job.dead_lettered`` event is published (as the worker publishes one:
      :func:`~gpu_transcribe.pipeline.results.publish_final_job`) and the message deleted;
    - the copy a worker sends when it dead-letters a job itself (message attribute
      :data:`~gpu_transcribe.aws.pipeline.queue.DEAD_LETTERED_BY` ``worker``) is deleted, whatever the row
      says;
    - a job already ``dead_lettered`` by another reconciliation has its event published again, with the
      same id (that reconciliation may have died before publishing), and the message is deleted; a job
      ``succeeded`` or ``failed`` has its message deleted;
    - anything else is left for later (hidden :data:`DEAD_LETTER_RECHECK_S`).

    Safe to run from several places at once (``pipeline status``, ``jobs``, ``jobs retry``, ``submit
    --wait``): a received message is hidden from the others, the row's writes are conditional, and events
    carry ids. Never raises for AWS trouble: the commands that run it read the jobs whatever happens here,
    so a failed call ends it with the reason in :attr:`DeadLetterResult.error`.
    """
    resources = config.resources
    if not resources.dead_letter_queue_url:
        return DeadLetterResult()
    channel = ResultsChannel(
        resources.results_queue_url, resources.webhooks_queue_url, config.pipeline_webhook
    )

    def publish(record: JobRecord) -> None:
        if channel.results_queue_url or channel.webhooks_queue_url:
            publish_final_job(ctx, channel, resources.bucket, record)

    dead: list[str] = []
    removed: list[str] = []
    left = [0]
    try:
        _reconcile(ctx, config, publish, dead, removed, left)
    except GpuTranscribeError as exc:
        return DeadLetterResult(tuple(dead), tuple(removed), left[0], str(exc))
    return DeadLetterResult(tuple(dead), tuple(removed), left[0])


def _reconcile(
    ctx: AwsContext,
    config: PipelineConfig,
    publish: Callable[[JobRecord], None],
    dead: list[str],
    removed: list[str],
    left: list[int],
) -> None:
    """The loop of :func:`reconcile_dead_letters`, appending to ``dead``, ``removed`` and ``left[0]``."""
    resources = config.resources
    seen = 0
    while seen < DEAD_LETTER_BATCH_MAX:
        messages = queue.receive(
            ctx, resources.dead_letter_queue_url, wait_s=0, visibility_timeout_s=DEAD_LETTER_RECHECK_S
        )
        if not messages:
            break
        seen += len(messages)
        for message in messages:
            record = _dead_letter_job(ctx, config, message)
            if record is None:
                left[0] += 1
                continue
            if message.attributes.get(queue.DEAD_LETTERED_BY) == "worker":
                # The copy a worker sent after its own final write and before its publish (a crash between
                # is redelivered to a worker, which publishes): nothing to do but remove it, whatever the
                # row says now (`jobs retry` may have queued the job again since).
                queue.delete(ctx, resources.dead_letter_queue_url, message.receipt_handle)
                removed.append(record.job_id)
                continue
            if record.status not in jobs_table.FINAL_STATUSES:
                reason = DEAD_LETTERED_BY_SQS.format(attempts=record.attempts, job_id=record.job_id)
                expires_at = int(time.time()) + config.job_retention_days * 86400
                written = jobs_table.dead_letter_stuck_job(
                    ctx, resources.table, record.job_id, reason, expires_at=expires_at
                )
                if written is not None:
                    publish(written)
                    queue.delete(ctx, resources.dead_letter_queue_url, message.receipt_handle)
                    dead.append(record.job_id)
                    continue
                record = jobs_table.get_job(ctx, resources.table, record.job_id)
                if record is None or record.status not in jobs_table.FINAL_STATUSES:
                    left[0] += 1  # a live worker holds it: its own message decides
                    continue
            if record.status == jobs_table.DEAD_LETTERED:
                publish(record)
            queue.delete(ctx, resources.dead_letter_queue_url, message.receipt_handle)
            removed.append(record.job_id)


def _dead_letter_job(ctx: AwsContext, config: PipelineConfig, message: QueueMessage) -> JobRecord | None:
    """The row of the job a dead-letter message is for (the worker's mapping of keys to jobs), or
    ``None``: the message names no object of this pipeline's ``incoming/``, or no job has it."""
    if message.test_event or not message.objects:
        return None
    obj = message.objects[0]
    if obj.bucket != config.resources.bucket or not obj.key.startswith("incoming/"):
        return None
    job_id, submitted = job_id_for_key(obj.key, obj.etag)
    record = jobs_table.get_job(ctx, config.resources.table, job_id)
    if record is not None and record.input_key != obj.key and submitted:
        record = jobs_table.get_job(ctx, config.resources.table, external_job_id(obj.key, obj.etag))
    return record if record is not None and record.input_key == obj.key else None
