"""``gpu-transcribe worker``: take jobs from the pipeline's queue and transcribe them, with one model load for
the worker's life; the same code runs under systemd on the fleet's instances and on any other machine.

One round of the loop (:mod:`.loop`):

1. receive up to 10 messages (long polling, :mod:`gpu_transcribe.aws.pipeline.queue`);
2. claim each message's job by a conditional update
   (:func:`~gpu_transcribe.aws.pipeline.jobs_table.claim_job`): a duplicate delivery stops there (if the
   job is finished, its end is published again, with the same event id, and its message deleted; if
   another worker holds it, its message is hidden until the holder's lease ends, so it can rescue the job
   if that worker dies); a file put into ``incoming/`` by anything else gets its row here, with the
   pipeline's default options;
3. jobs that an earlier worker lost (it vanished holding them: :func:`~.state.lost_attempts`) are
   suspects: the others are worked as one batch first, then each suspect alone
   (:func:`~.state.isolate_suspects`), so a job that kills its worker again dies alone, after the rest of
   the batch is done, and costs it no receives; for each batch: download the audio to its job's folder
   under the base name of its ``file_name`` (a name with none, such as ``..``, fails the job), decode it
   (bad audio: the job fails at once with the engine's one-line reason, and its message is deleted),
   transcribe the batch with :meth:`gpu_transcribe_engine.engine.WhisperEngine.transcribe_many`, each job
   with its row's options (word timestamps, prompt, subtitle limits; the engine batches only requests whose
   decode options agree);
4. for each transcript: upload the outputs to ``results/<job-id>/<stem>.<fmt>``, mark the job succeeded only
   if this worker still holds it, publish the job event, and delete the message last, so a crash at any
   step means redelivery, never a lost or half-written job.

Every end of a job this worker wrote (``job.succeeded``, ``job.failed``, ``job.dead_lettered``) goes through
one sequence (:mod:`.endings`) and is published with
:func:`gpu_transcribe.pipeline.results.publish_final_job` (from the row) right after the table's
conditional write and before the message is deleted: on the results queue, and on the webhooks queue when
the pipeline or the job has a webhook URL. A failed publish is logged and dropped (the table holds the
truth); a crash between the write and the publish (or the delete) publishes the same event again on
redelivery, with the same id (the row's ``updated_at``): the next worker finds the row final, publishes,
then deletes the message. Receivers dedupe by id.

Meanwhile (:mod:`.watchers`) a heartbeat thread extends the messages' visibility and the jobs' leases every
third of the visibility timeout, and a watcher thread reads the spot interruption notice (IMDSv2, every
5 s, AWS's advice: docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-instance-termination-notices.html) and
the stop flag a signal sets: on either it stops receiving, marks the batch's jobs ``interrupted`` and makes
their messages visible again at once (table first, so the next worker's claim succeeds), and the engine
stops at its next batch. An engine failure hands the job back for another worker until ``max_attempts``
engine failures (the count is in the table: SQS's receive count also counts interruptions and lost
workers), then the job is dead-lettered: status ``dead_lettered`` and its message moved to the dead-letter
queue (send, then delete).

Inside the pipeline's Auto Scaling group (the pipeline names a group and the instance has an id) the worker
protects itself from scale-in while it holds jobs and, idle for ``--exit-when-idle``, leaves through
``TerminateInstanceInAutoScalingGroup`` with the desired capacity decremented.

The maximum lifetime (``--max-lifetime-h``; the fleet's unit passes 12 h) is the backstop against a worker
that never goes idle on a busy queue, or a process that degrades over days: once it is reached the worker
receives no more messages, finishes the batch in hand (or, if that batch is still running
:data:`~.options.LIFETIME_GRACE_S` later, hands it back as interrupted) and leaves the group as an idle
worker does. The scaler starts a fresh instance if the backlog still needs one.

The package: :mod:`.loop` (:class:`Worker`: receive, claim, prepare, transcribe, the Auto Scaling group),
:mod:`.endings` (the ends of a job), :mod:`.watchers` (the watcher and heartbeat threads, the instance id),
:mod:`.state` (what they share, the batch's order), :mod:`.options` (options, report, numbers).
"""

from gpu_transcribe.pipeline.worker.loop import Worker
from gpu_transcribe.pipeline.worker.options import (
    INSTANCE_ID_ENV,
    LIFETIME_GRACE_S,
    MAX_LIFETIME,
    NOTICE_CHECK_S,
    WorkerError,
    WorkerOptions,
    WorkerReport,
)
from gpu_transcribe.pipeline.worker.state import lost_attempts

__all__ = [
    "INSTANCE_ID_ENV",
    "LIFETIME_GRACE_S",
    "MAX_LIFETIME",
    "NOTICE_CHECK_S",
    "Worker",
    "WorkerError",
    "WorkerOptions",
    "WorkerReport",
    "lost_attempts",
]
