"""``gpu-transcribe worker``: take jobs from the pipeline's queue and transcribe them, with one model load for
the worker's life; the same code runs under systemd on the fleet's instances and on any other machine.

One round of the loop:

1. receive up to 10 messages (long polling, :mod:`gpu_transcribe.aws.pipeline.queue`);
2. claim each message's job by a conditional update
(:func:`~gpu_transcribe.aws.pipeline.jobs_table.claim_job`): a
   duplicate delivery stops there (if the job is finished, its end is published again, with the same event
   id, and its message deleted; if another worker holds it, its message is hidden until the holder's lease
   ends, so it can rescue the job if that worker dies); a file put into ``incoming/`` by anything else gets
   its row here, with the pipeline's default options;
3. jobs that an earlier worker lost (it vanished holding them: :func:`lost_attempts`) are suspects: the
   others are worked as one batch first, then each suspect alone (:func:`_isolate_suspects`), so a job that
   kills its worker again dies alone, after the rest of the batch is done, and costs it no receives; for
   each batch:
   download the audio to its job's folder under the base name of its ``file_name`` (a name with none, such
   as ``..``, fails the job), decode it (bad audio: the job fails at once with the engine's one-line reason,
   and its message is deleted), transcribe the batch with
   :meth:`gpu_transcribe_engine.engine.WhisperEngine.transcribe_many`;
4. for each transcript: upload the outputs to ``results/<job-id>/<stem>.<fmt>``, mark the job succeeded only
   if this worker still holds it, publish the job event, and delete the message last, so a crash at any
   step means redelivery, never a lost or half-written job.

Every end of a job this worker wrote (``job.succeeded``, ``job.failed``, ``job.dead_lettered``) is published
with :func:`gpu_transcribe.pipeline.results.publish_final_job` (from the row) right after the table's
conditional write and before the message is deleted: on the results queue, and on the webhooks queue when
the pipeline or the job has a webhook URL. A failed publish is logged and dropped (the table holds the
truth); a crash between the write and the publish (or the delete) publishes the same event again on
redelivery, with the same id (the row's ``updated_at``): the next worker finds the row final, publishes,
then deletes the message. Receivers dedupe by id.

Meanwhile a heartbeat thread extends the messages' visibility and the jobs' leases every third of the
visibility timeout, and a watcher thread reads the spot interruption notice (IMDSv2, every 5 s, AWS's advice:
docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-instance-termination-notices.html) and the stop flag a
signal sets: on either it stops receiving, marks the batch's jobs ``interrupted`` and makes their messages
visible again at once (table first, so the next worker's claim succeeds), and the engine stops at its next
batch. An engine failure hands the job back for another worker until ``max_attempts`` engine failures (the
count is in the table: SQS's receive count also counts interruptions and lost workers), then the job is
dead-lettered: status ``dead_lettered`` and its message moved to the dead-letter queue (send, then delete).

Inside the pipeline's Auto Scaling group (the pipeline names a group and the instance has an id) the worker
protects itself from scale-in while it holds jobs and, idle for ``--exit-when-idle``, leaves through
``TerminateInstanceInAutoScalingGroup`` with the desired capacity decremented.

The maximum lifetime (``--max-lifetime-h``; the fleet's unit passes 12 h) is the backstop against a worker
that never goes idle on a busy queue, or a process that degrades over days: once it is reached the worker
receives no more messages, finishes the batch in hand (or, if that batch is still running
:data:`LIFETIME_GRACE_S` later, hands it back as interrupted) and leaves the group as an idle worker does.
The scaler starts a fresh instance if the backlog still needs one.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpu_transcribe.common import ProgressEvent
from gpu_transcribe.errors import GpuTranscribeError
from gpu_transcribe.pipeline.jobs import (
    PipelineConfig,
    UnsafeFileNameError,
    external_job_id,
    job_id_for_key,
    local_file_name,
)
from gpu_transcribe_engine.utc import iso_utc

if TYPE_CHECKING:
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.pipeline.jobs_table import JobRecord
    from gpu_transcribe.aws.pipeline.queue import QueueMessage
    from gpu_transcribe.correct.correct import CorrectionConfig
    from gpu_transcribe_engine.engine import WhisperEngine

#: Seconds between reads of the spot interruption notice (AWS recommends every 5 s, see above).
NOTICE_CHECK_S = 5.0
#: Seconds between checks of the stop flag by the watcher thread.
STOP_CHECK_S = 0.2
#: The lease ends this many seconds before the message's visibility, so a message that comes back finds
#: its job's lease already over and can be claimed at once.
LEASE_MARGIN_S = 2
#: Extra seconds a duplicate's message stays hidden past the holder's lease.
DUPLICATE_GRACE_S = 2
#: Seconds a batch may still run after the maximum lifetime before its jobs are handed back (interrupted):
#: long enough for a batch of ten 20-minute files on a GPU (about 2 minutes at 100x real time:
#: ../shared/notes/engine-speed.md), short against a spot instance's hourly price.
LIFETIME_GRACE_S = 900.0
#: The reason a worker stopped at its maximum lifetime (:attr:`WorkerReport.reason`).
MAX_LIFETIME = "max-lifetime"
#: Test seam: this machine's instance id (instead of IMDS ``meta-data/instance-id``).
INSTANCE_ID_ENV = "GPU_TRANSCRIBE_WORKER_INSTANCE_ID"


class WorkerError(GpuTranscribeError):
    """The worker cannot go on (the model cannot be loaded); its jobs were handed back first."""


class _Stopped(Exception):
    """Raised from the engine's progress callback to stop it when the worker is stopping."""


@dataclass(frozen=True)
class WorkerOptions:
    """How the worker runs.

    Attributes:
        model: the Whisper model (hub id or local directory), loaded once, on the first job.
        device: ``auto``, ``cpu`` or ``cuda``.
        exit_when_idle_s: exit after this many seconds with nothing received (``None``: never).
        max_lifetime_s: stop receiving this many seconds after the start, finish the batch and exit
            (``None``: no limit; the CLI takes hours, ``--max-lifetime-h``).
        lifetime_grace_s: seconds the batch in hand may still run after ``max_lifetime_s`` before it is
            handed back.
        worker_id: this worker's name in the table's ``owner``; ``""``: host name and process id.
        notice_check_s: seconds between spot notice reads.
        wait_s: long-poll seconds per receive (at most 20).
        correction: model, region and rails of the Bedrock correction of jobs that ask for it
            (``correct`` in their options); ``None``: such jobs succeed uncorrected, with that reason.
    """

    model: str
    device: str = "auto"
    exit_when_idle_s: float | None = None
    max_lifetime_s: float | None = None
    lifetime_grace_s: float = LIFETIME_GRACE_S
    worker_id: str = ""
    notice_check_s: float = NOTICE_CHECK_S
    wait_s: int = 20
    correction: CorrectionConfig | None = None


@dataclass(frozen=True)
class WorkerReport:
    """What a worker did before it exited.

    Attributes:
        worker_id: its name.
        reason: why it stopped: ``idle``, ``max-lifetime``, ``spot-notice`` or a signal's name.
        succeeded: job ids it finished.
        failed: job ids it failed (bad audio, options) or dead-lettered.
        released: job ids it handed back (interruptions, engine failures below the limit).
        left_group: it left its Auto Scaling group.
        leave_failed: it should have left its group (idle or at the maximum lifetime) and could not: the
            ``worker`` command exits 1 so that systemd restarts it, and the fleet's dead-man switch powers
            the instance off if it never leaves.
    """

    worker_id: str
    reason: str
    succeeded: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    released: tuple[str, ...] = ()
    left_group: bool = False
    leave_failed: bool = False


@dataclass
class _Job:
    """One claimed job of the current batch (mutable; guarded by the worker's lock)."""

    record: JobRecord
    message: QueueMessage
    duplicates: list[QueueMessage] = field(default_factory=list)
    state: str = "working"  # working -> finishing | released | lost | done
    path: Path | None = None
    samples: Any = None
    transcribe_s: float | None = None  # seconds the engine spent on the job's batch


def lost_attempts(record: JobRecord) -> int:
    """Attempts on the job before the current one that ended without a hand-back or an engine failure: its
    worker vanished while holding it (killed, out of memory, the instance gone). ``attempts`` counts the
    current claim too."""
    return max(0, record.attempts - 1 - record.interruptions - record.engine_failures)


def _isolate_suspects(batch: list[_Job]) -> list[list[_Job]]:
    """The order a claimed batch is worked in: the jobs no worker lost before, transcribed together, then
    each suspect (a job with :func:`lost_attempts`: it may be what killed its worker) alone, fewest lost
    attempts first. A job that kills its worker every time then dies last and alone, with the rest of the
    batch finished and deleted, so its neighbours spend no more receives on it (SQS dead-letters a message
    after ``maxReceiveCount`` receives, however they ended)."""
    fresh = [job for job in batch if lost_attempts(job.record) == 0]
    suspects = sorted(
        (job for job in batch if lost_attempts(job.record) > 0), key=lambda j: lost_attempts(j.record)
    )
    return ([fresh] if fresh else []) + [[job] for job in suspects]


class Worker:
    """The worker loop; :meth:`run` until idle or stopped, :meth:`request_stop` from a signal handler.

    Args:
        ctx: where AWS calls go.
        config: the pipeline (resources, attempts, visibility timeout, defaults).
        options: see :class:`WorkerOptions`.
        on_event: progress (one line per step: claims, results, releases), never required.
        engine_loader: loads the engine (default :meth:`gpu_transcribe_engine.engine.WhisperEngine.load`).
    """

    def __init__(
        self,
        ctx: AwsContext,
        config: PipelineConfig,
        options: WorkerOptions,
        on_event: Callable[[ProgressEvent], None] | None = None,
        engine_loader: Callable[[str, str], WhisperEngine] | None = None,
    ) -> None:
        self._ctx, self.config, self.options = ctx, config, options
        self._owner_thread = threading.current_thread()
        self._local = threading.local()
        self._on_event = on_event or (lambda event: None)
        self._engine_loader = engine_loader
        self._engine: WhisperEngine | None = None
        self._lock = threading.Lock()
        self._batch: list[_Job] = []
        self._stop_reason = ""
        self._stop = threading.Event()
        self._succeeded: list[str] = []
        self._failed: list[str] = []
        self._released: list[str] = []
        self._started = time.monotonic()
        self.instance_id = self._instance_id()
        self.worker_id = options.worker_id or f"{self.instance_id or socket.gethostname()}-{os.getpid()}"
        self.in_group = bool(config.resources.group and self.instance_id)

    @property
    def ctx(self) -> AwsContext:
        """The calling thread's AWS context: the one given for the thread that made the worker, a copy (its
        own boto3 session) for the heartbeat and watcher threads, since a boto3 session is not thread-safe
        (boto3 documentation, "Multithreading or multiprocessing with clients")."""
        if threading.current_thread() is self._owner_thread:
            return self._ctx
        if not hasattr(self._local, "ctx"):
            self._local.ctx = dataclasses.replace(self._ctx)
        ctx: AwsContext = self._local.ctx
        return ctx

    # --- public --------------------------------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """Stop receiving and hand the batch's jobs back as interrupted (done by the watcher thread within
        :data:`STOP_CHECK_S`); safe to call from a signal handler."""
        if not self._stop_reason:
            self._stop_reason = reason
        self._stop.set()

    def lifetime_left_s(self) -> float | None:
        """Seconds until the maximum lifetime (negative once past it), ``None`` without one."""
        if self.options.max_lifetime_s is None:
            return None
        return self.options.max_lifetime_s - (time.monotonic() - self._started)

    def run(self) -> WorkerReport:
        """Receive and work until idle for ``exit_when_idle_s``, at the maximum lifetime, or stopped.

        Returns:
            What was done, and why it stopped.

        Raises:
            WorkerError: the model cannot be loaded (the batch's jobs were handed back first).
            CloudError, CredentialsError: an AWS call of the loop failed (the jobs in hand come back to the
                queue when their visibility ends).
        """
        from gpu_transcribe.aws.pipeline import queue

        watcher = threading.Thread(target=self._watch, name="worker-watcher", daemon=True)
        watcher.start()
        idle_since = time.monotonic()
        self._say("start", f"worker {self.worker_id} waiting for jobs on {self.config.resources.queue_url}")
        try:
            while not self._stop.is_set():
                wait_s = self.options.wait_s
                lifetime_s = self.lifetime_left_s()
                if lifetime_s is not None:
                    if lifetime_s <= 0:  # between batches: nothing in hand to finish or hand back
                        self._say("max-lifetime", f"{self.options.max_lifetime_s:.0f} s reached; stopping")
                        self.request_stop(MAX_LIFETIME)
                        break
                    wait_s = max(1, min(wait_s, int(lifetime_s + 0.999)))
                if self.options.exit_when_idle_s is not None:
                    left_s = self.options.exit_when_idle_s - (time.monotonic() - idle_since)
                    if left_s <= 0:
                        self.request_stop("idle")
                        break
                    wait_s = max(1, min(wait_s, int(left_s + 0.999)))
                messages = queue.receive(
                    self.ctx,
                    self.config.resources.queue_url,
                    wait_s=wait_s,
                    visibility_timeout_s=self.config.visibility_timeout_s,
                )
                if not messages:
                    continue
                if self._stop.is_set():  # received while stopping: hand them straight back
                    for message in messages:
                        queue.change_visibility(
                            self.ctx, self.config.resources.queue_url, message.receipt_handle, 0
                        )
                    break
                self._work(messages)
                idle_since = time.monotonic()
        finally:
            self._stop.set()
            watcher.join(timeout=10)
        left = leave_failed = False
        if self._stop_reason in ("idle", MAX_LIFETIME) and self.in_group:
            left = self._leave_group()
            leave_failed = not left
        return WorkerReport(
            self.worker_id,
            self._stop_reason or "stopped",
            tuple(self._succeeded),
            tuple(self._failed),
            tuple(self._released),
            left,
            leave_failed,
        )

    # --- one batch -----------------------------------------------------------------------------------------

    def _work(self, messages: tuple[QueueMessage, ...]) -> None:
        batch = self._claim_all(messages)
        if not batch:
            return
        with self._lock:
            self._batch = batch
        heartbeat_stop = threading.Event()
        heartbeat = threading.Thread(target=self._heartbeat, args=(heartbeat_stop,), daemon=True)
        heartbeat.start()
        self._protect(True)
        try:
            with tempfile.TemporaryDirectory(prefix="gpu-transcribe-worker-") as tmp:
                for group in _isolate_suspects(batch):
                    if self._stop.is_set():
                        break
                    ready = self._prepare(group, Path(tmp))
                    if ready:
                        self._transcribe(ready, Path(tmp))
        finally:
            if self._stop.is_set():  # a stop that came between the watcher's hand-back and this batch
                for job in batch:
                    try:
                        self._release(job, interrupted=True)  # no-op for jobs already ended or released
                    except GpuTranscribeError as exc:
                        self._say("note", f"could not hand back job {job.record.job_id}: {exc}")
            heartbeat_stop.set()
            heartbeat.join(timeout=10)
            with self._lock:
                self._batch = []
            self._protect(False)

    def _claim_all(self, messages: tuple[QueueMessage, ...]) -> list[_Job]:
        from gpu_transcribe.aws.pipeline import jobs_table, queue

        table, url = self.config.resources.table, self.config.resources.queue_url
        batch: dict[str, _Job] = {}
        for message in messages:
            if self._stop.is_set():  # stopping: what is not claimed yet goes straight back
                queue.change_visibility(self.ctx, url, message.receipt_handle, 0)
                continue
            if message.test_event or not message.objects:
                what = "S3's test event" if message.test_event else "a message naming no S3 object"
                self._say("skip", f"deleting {what} ({message.message_id})")
                queue.delete(self.ctx, url, message.receipt_handle)
                continue
            obj = message.objects[0]
            if obj.key.endswith("/"):  # a "folder" the S3 console made: no audio
                self._say("skip", f"deleting a message for s3://{obj.bucket}/{obj.key}: a folder marker")
                queue.delete(self.ctx, url, message.receipt_handle)
                continue
            if obj.bucket != self.config.resources.bucket or not obj.key.startswith("incoming/"):
                self._say("skip", f"deleting a message for s3://{obj.bucket}/{obj.key}: not this pipeline's")
                queue.delete(self.ctx, url, message.receipt_handle)
                continue
            job_id, submitted = job_id_for_key(obj.key, obj.etag)
            if job_id in batch:  # the same job twice in one receive: transcribed once, both deleted
                batch[job_id].duplicates.append(message)
                self._say("duplicate", f"job {job_id}: a duplicate delivery in this batch")
                continue
            record = jobs_table.get_job(self.ctx, table, job_id)
            if record is None or record.input_key != obj.key:
                if submitted and record is not None:  # an id-like folder of another uploader's
                    job_id = external_job_id(obj.key, obj.etag)
                self._create_row(job_id, obj.key)
            claimed = jobs_table.claim_job(
                self.ctx, table, job_id, self.worker_id, self.config.visibility_timeout_s - LEASE_MARGIN_S
            )
            if claimed is None:
                self._not_claimed(job_id, message)
                continue
            self._say("claim", f"job {job_id} ({claimed.file_name}): attempt {claimed.attempts}")
            batch[job_id] = _Job(claimed, message)
        return list(batch.values())

    def _create_row(self, job_id: str, key: str) -> None:
        from gpu_transcribe.aws.pipeline import jobs_table

        now = iso_utc(timespec="milliseconds")
        record = jobs_table.JobRecord(
            job_id=job_id,
            status=jobs_table.QUEUED,
            file_name=key.rsplit("/", 1)[-1],
            input_key=key,
            options=jobs_table.JobOptions(correct=self.config.default_correct),
            created_at=now,
            updated_at=now,
        )
        if jobs_table.create_job(self.ctx, self.config.resources.table, record):
            self._say(
                "new-job", f"job {job_id} for s3://{self.config.resources.bucket}/{key} (default options)"
            )

    def _not_claimed(self, job_id: str, message: QueueMessage) -> None:
        """A claim refused: a redelivery of a finished job has its end published again (the same event id:
        the worker that ended it may have died between the final write and the publish) and is deleted; one
        of a job another worker holds is hidden until that worker's lease ends (then it rescues the job if
        the holder died)."""
        from gpu_transcribe.aws.pipeline import jobs_table, queue

        url = self.config.resources.queue_url
        current = jobs_table.get_job(self.ctx, self.config.resources.table, job_id)
        if current is None or current.status in jobs_table.FINAL_STATUSES:
            status = current.status if current else "gone"
            self._say("duplicate", f"job {job_id} is {status}: deleting a duplicate delivery")
            if current is not None:
                self._publish(current)  # before the delete, as for the first end: a crash here redelivers
            queue.delete(self.ctx, url, message.receipt_handle)
            return
        lease_left_s = (current.lease_expires_at or 0) - time.time()
        hide_s = int(max(1.0, lease_left_s + DUPLICATE_GRACE_S))
        self._say(
            "duplicate", f"job {job_id} is held by {current.owner or 'another worker'}: back in {hide_s} s"
        )
        queue.change_visibility(self.ctx, url, message.receipt_handle, hide_s)

    def _prepare(self, batch: list[_Job], tmp: Path) -> list[_Job]:
        """Download and decode each job's audio; bad audio fails its job at once."""
        from gpu_transcribe.aws.pipeline import job_objects
        from gpu_transcribe_engine.audio import decode_audio
        from gpu_transcribe_engine.errors import AudioDecodeError

        ready = []
        for job in batch:
            if self._stop.is_set():
                break
            record = job.record
            try:
                name = local_file_name(record.file_name, f"job {record.job_id}'s file name")
            except UnsafeFileNameError as exc:
                self._fail(job, str(exc))
                continue
            folder = tmp / record.job_id
            folder.mkdir()
            path = folder / name
            source = f"s3://{self.config.resources.bucket}/{record.input_key}"
            if not job_objects.download(self.ctx, self.config.resources.bucket, record.input_key, path):
                self._fail(job, f"{source}: the audio is not in the bucket (or not readable)")
                continue
            if record.options.model and record.options.model != self.options.model:
                self._fail(
                    job,
                    f"the job asks for model {record.options.model!r}; this pipeline's workers run "
                    f"{self.options.model!r}",
                )
                continue
            try:
                job.samples = decode_audio(path)
            except AudioDecodeError as exc:
                self._fail(job, str(exc).replace(str(path), source))
                continue
            job.path = path
            ready.append(job)
        return ready

    def _transcribe(self, ready: list[_Job], tmp: Path) -> None:
        from gpu_transcribe_engine.engine import AudioRequest
        from gpu_transcribe_engine.errors import BadOptionError
        from gpu_transcribe_engine.options import TranscribeOptions

        if self._stop.is_set():
            return  # stopping: the watcher hands the jobs back; no model load for nothing
        engine = self._load_engine(ready)
        if self._stop.is_set():
            return  # stopped while the model loaded: the jobs are handed back already

        def progress(done_s: float, duration_s: float) -> None:
            """The engine's progress callback: stops the engine once the worker is stopping."""
            if self._stop.is_set():
                raise _Stopped

        requests = [
            AudioRequest(
                job.samples,
                TranscribeOptions(language=job.record.options.language or self.config.default_language),
                audio=job.record.file_name,
                progress=progress,
            )
            for job in ready
        ]
        started = time.perf_counter()
        try:
            results: list[Any] = list(engine.transcribe_many(requests))
        except _Stopped:
            return  # the watcher handed the jobs back
        except Exception as exc:  # the engine broke on the batch: each job counts one engine failure
            results = [exc] * len(ready)
        batch_s = time.perf_counter() - started
        self._say("transcribed", f"{len(ready)} file(s) in {batch_s:.1f} s")
        for job, result in zip(ready, results, strict=True):
            job.transcribe_s = round(batch_s, 3)
            try:
                if isinstance(result, ValueError | BadOptionError):
                    self._fail(job, f"{job.record.file_name}: {result}")
                elif isinstance(result, Exception):
                    self._engine_failure(job, result)
                else:
                    self._succeed(job, result, tmp)
            except GpuTranscribeError as exc:  # AWS failed on this job: it comes back when its lease ends
                with self._lock:
                    job.state = "lost"  # no more heartbeats for it
                self._say("note", f"job {job.record.job_id}: {exc}; it comes back to the queue")

    def _load_engine(self, ready: list[_Job]) -> WhisperEngine:
        if self._engine is not None:
            return self._engine
        self._say("model", f"loading {self.options.model} on {self.options.device}")
        try:
            if self._engine_loader is not None:
                self._engine = self._engine_loader(self.options.model, self.options.device)
            else:
                from gpu_transcribe_engine.engine import WhisperEngine

                self._engine = WhisperEngine.load(self.options.model, device=self.options.device)
        except Exception as exc:
            with self._lock:
                held = list(self._batch)  # the later groups' jobs too (_isolate_suspects)
            for job in held:
                self._release(job, interrupted=True)  # a no-op for a job already ended
            raise WorkerError(f"cannot load model {self.options.model!r}: {exc}") from exc
        self._say(
            "model",
            f"loaded {self.options.model} ({self._engine.info.device}, {self._engine.info.load_s:.1f} s)",
        )
        return self._engine

    # --- ends of a job -------------------------------------------------------------------------------------

    def _take(self, job: _Job) -> bool:
        """Move ``job`` from working to finishing; False if the watcher released it (or it was lost)."""
        with self._lock:
            if job.state != "working":
                return False
            job.state = "finishing"
            return True

    def _delete_messages(self, job: _Job) -> None:
        from gpu_transcribe.aws.pipeline import queue

        for message in (job.message, *job.duplicates):
            queue.delete(self.ctx, self.config.resources.queue_url, message.receipt_handle)

    def _expires_at(self) -> int:
        return int(time.time()) + self.config.job_retention_days * 86400

    def _succeed(self, job: _Job, transcript: Any, tmp: Path) -> None:
        from gpu_transcribe.aws.pipeline import job_objects, jobs_table
        from gpu_transcribe_engine.errors import BadOptionError, OutputWriteError
        from gpu_transcribe_engine.writers import write_outputs

        record = job.record
        formats = tuple(record.options.formats or self.config.default_formats)
        if record.options.correct and "json" not in formats:  # the correction reads the raw JSON
            formats = (*formats, "json")
        out = tmp / record.job_id / "out"
        out.mkdir(exist_ok=True)
        try:
            stem = Path(local_file_name(record.file_name)).stem  # checked in _prepare
            written = write_outputs(transcript, out / stem, formats)
        except BadOptionError as exc:  # a format no writer knows: the job's options are wrong
            self._fail(job, f"{record.file_name}: {exc}")
            return
        except OutputWriteError as exc:  # this machine's disk: another worker may do better
            self._engine_failure(job, exc)
            return
        if not self._take(job):
            return
        paths = list(written.values())
        correction = None
        if record.options.correct:
            correction = self._correct(job, written["json"], formats)
            paths += [Path(p) for p in correction.get("outputs", {}).values()]
        keys = []
        for path in paths:
            key = job_objects.result_key(record.job_id, path.name)
            job_objects.upload(
                self.ctx, self.config.resources.bucket, key, path, metadata={"job-id": record.job_id}
            )
            keys.append(key)
        if correction is not None:  # the row names the objects, not this worker's temporary files
            corrected = correction.get("outputs", {}).items()
            correction["outputs"] = {
                f: job_objects.result_key(record.job_id, Path(p).name) for f, p in corrected
            }
            correction["source"] = job_objects.result_key(record.job_id, written["json"].name)
        done = jobs_table.finish_job(
            self.ctx,
            self.config.resources.table,
            record.job_id,
            self.worker_id,
            status=jobs_table.SUCCEEDED,
            result_keys=keys,
            duration_s=float(transcript.duration_s),
            expires_at=self._expires_at(),
            correction=correction,
        )
        if done is None:  # another worker took it over (our lease ran out): its message is its business
            self._say("lost", f"job {record.job_id}: no longer ours; leaving its message")
            job.state = "lost"
            return
        self._publish(done, transcribe_s=job.transcribe_s)
        self._delete_messages(job)
        job.state = "done"
        self._succeeded.append(record.job_id)
        self._say("succeeded", f"job {record.job_id} ({record.file_name}): {', '.join(keys)}")

    def _correct(self, job: _Job, raw_json: Path, formats: tuple[str, ...]) -> dict[str, Any]:
        """Correct the job's transcript with Bedrock (:func:`gpu_transcribe.correct.correct.correct_file`),
        writing
        ``<stem>.corrected.<fmt>`` beside the raw files; what it did (``CorrectionResult.to_dict()``). Never
        raises: a Bedrock failure is a ``failed`` status with the reason, and the job still succeeds."""
        from gpu_transcribe.correct.correct import correct_file

        config = self.options.correction
        if config is None:
            return {"status": "skipped", "reason": "this worker has no correction configured", "outputs": {}}
        try:
            result = correct_file(raw_json, formats, config)
        except Exception as exc:  # correct_file never raises; a bug there must not lose the transcript
            return {"status": "failed", "reason": f"correction crashed: {exc!r}", "outputs": {}}
        summary: dict[str, Any] = result.to_dict()
        line = f"job {job.record.job_id}: correction {result.status}"
        self._say("corrected", f"{line} ({result.reason})" if result.reason else line)
        return summary

    def _fail(self, job: _Job, reason: str) -> None:
        """Bad input: the job fails at once (not retried), its message is deleted."""
        from gpu_transcribe.aws.pipeline import jobs_table

        if not self._take(job):
            return
        done = jobs_table.finish_job(
            self.ctx,
            self.config.resources.table,
            job.record.job_id,
            self.worker_id,
            status=jobs_table.FAILED,
            error=reason,
            expires_at=self._expires_at(),
        )
        if done is not None:
            self._publish(done, transcribe_s=job.transcribe_s)
            self._delete_messages(job)
            self._failed.append(job.record.job_id)
        job.state = "done"
        self._say("failed", f"job {job.record.job_id}: {reason}")

    def _engine_failure(self, job: _Job, exc: Exception) -> None:
        """Handed back for another worker below ``max_attempts`` engine failures; at it, dead-lettered."""
        from gpu_transcribe.aws.pipeline import jobs_table, queue

        reason = " ".join(f"{job.record.file_name}: {exc}".split())
        failures = job.record.engine_failures + 1
        if failures < self.config.max_attempts:
            limit = self.config.max_attempts
            self._say("engine-failure", f"job {job.record.job_id}: {reason} ({failures}/{limit})")
            self._release(job, interrupted=False, error=reason)
            return
        if not self._take(job):
            return
        done = jobs_table.finish_job(
            self.ctx,
            self.config.resources.table,
            job.record.job_id,
            self.worker_id,
            status=jobs_table.DEAD_LETTERED,
            error=reason,
            engine_failure=True,
            expires_at=self._expires_at(),
        )
        if done is not None:
            queue.send(
                self.ctx,
                self.config.resources.dead_letter_queue_url,
                job.message.body,
                attributes={queue.DEAD_LETTERED_BY: "worker"},
            )
            self._publish(done, transcribe_s=job.transcribe_s)
            self._delete_messages(job)
            self._failed.append(job.record.job_id)
        job.state = "done"
        self._say("dead-lettered", f"job {job.record.job_id}: {reason} (engine failure {failures})")

    def _publish(self, record: JobRecord, *, transcribe_s: float | None = None) -> None:
        """Publish the end of a job (``record``: its row after the final write) on the results queue and,
        if a webhook applies, the webhooks queue (:func:`~gpu_transcribe.pipeline.results.publish_final_job`:
        the event id comes from the row, so a republished event has the same id). Never raises: a
        notification must not fail a job."""
        from gpu_transcribe.aws.clients import sqs_client
        from gpu_transcribe.pipeline.results import ResultsChannel, publish_final_job

        resources = self.config.resources
        channel = ResultsChannel(
            resources.results_queue_url, resources.webhooks_queue_url, self.config.pipeline_webhook
        )
        if not channel.results_queue_url and not channel.webhooks_queue_url:
            return
        timings = {} if transcribe_s is None else {"transcribe_s": transcribe_s}
        try:
            sent = publish_final_job(sqs_client(self.ctx), channel, resources.bucket, record, timings=timings)
        except Exception as exc:  # a client that cannot be made, or anything else: the job is done anyway
            sent = None
            self._say("note", f"job {record.job_id}: the {record.status} event not published: {exc!r}")
        if sent is not None:
            self._say("event", f"job {record.job_id}: {sent['type']} published ({sent['id']})")

    def _release(self, job: _Job, *, interrupted: bool, error: str = "") -> None:
        """Hand the job back: the row first (so a claim succeeds), then the message visible at once."""
        from gpu_transcribe.aws.pipeline import jobs_table, queue

        with self._lock:
            if job.state != "working":
                return
            job.state = "released"
        jobs_table.release_job(
            self.ctx,
            self.config.resources.table,
            job.record.job_id,
            self.worker_id,
            interrupted=interrupted,
            error=error,
        )
        url = self.config.resources.queue_url
        queue.change_visibility(self.ctx, url, job.message.receipt_handle, 0)
        for duplicate in job.duplicates:
            queue.change_visibility(self.ctx, url, duplicate.receipt_handle, 0)
        self._released.append(job.record.job_id)
        how = "interrupted" if interrupted else "queued again"
        self._say("released", f"job {job.record.job_id}: {how}, its message visible again")

    # --- background threads --------------------------------------------------------------------------------

    def _watch(self) -> None:
        """Reads the spot notice every ``notice_check_s``; on a notice, a stop request, or a batch still
        running ``lifetime_grace_s`` past the maximum lifetime, hands the batch back."""
        from gpu_transcribe.instance.spot_watch import IMDS_ENDPOINT_ENV, read_local_spot_notice

        next_notice = time.monotonic()
        handed_back = False
        # Off EC2 nothing answers at 169.254.169.254: read notices only on an instance or at the test seam.
        read_notices = bool(self.instance_id or os.environ.get(IMDS_ENDPOINT_ENV, "").strip())
        while True:
            stopping = self._stop.wait(STOP_CHECK_S)
            if read_notices and not stopping and time.monotonic() >= next_notice:
                next_notice = time.monotonic() + self.options.notice_check_s
                notice = read_local_spot_notice()
                if notice is not None:
                    self._say("spot-notice", f"EC2 will {notice.action} this instance at {notice.time}")
                    self.request_stop("spot-notice")
                    stopping = True
            lifetime_s = self.lifetime_left_s()
            if not stopping and lifetime_s is not None and lifetime_s < -self.options.lifetime_grace_s:
                self._say("max-lifetime", "the batch outlived the maximum lifetime's grace; handing it back")
                self.request_stop(MAX_LIFETIME)
                stopping = True
            if stopping and not handed_back and self._stop_reason not in ("", "idle"):
                handed_back = True
                with self._lock:
                    batch = list(self._batch)
                for job in batch:
                    try:
                        self._release(job, interrupted=True)
                    except GpuTranscribeError as exc:
                        self._say("note", f"could not hand back job {job.record.job_id}: {exc}")
            if stopping and not self._batch:
                return
            if stopping:  # the stop event no longer waits: pace the loop until the batch is over
                time.sleep(STOP_CHECK_S)

    def _heartbeat(self, stop: threading.Event) -> None:
        """Every third of the visibility timeout: the messages hidden for another full timeout and the leases
        extended, for every job still in hand."""
        from gpu_transcribe.aws.pipeline import jobs_table, queue

        visibility_s = self.config.visibility_timeout_s
        while not stop.wait(max(1.0, visibility_s / 3)):
            with self._lock:
                jobs = [job for job in self._batch if job.state in ("working", "finishing")]
            for job in jobs:
                try:
                    for message in (job.message, *job.duplicates):
                        queue.change_visibility(
                            self.ctx, self.config.resources.queue_url, message.receipt_handle, visibility_s
                        )
                    held = jobs_table.extend_lease(
                        self.ctx,
                        self.config.resources.table,
                        job.record.job_id,
                        self.worker_id,
                        visibility_s - LEASE_MARGIN_S,
                    )
                except GpuTranscribeError as exc:
                    self._say("note", f"heartbeat of job {job.record.job_id} failed: {exc}")
                    continue
                if not held:
                    with self._lock:
                        if job.state == "working":
                            job.state = "lost"
                    self._say("lost", f"job {job.record.job_id}: the lease is no longer ours")

    # --- the Auto Scaling group ----------------------------------------------------------------------------

    def _instance_id(self) -> str:
        given = os.environ.get(INSTANCE_ID_ENV, "").strip()
        if given:
            return given
        from gpu_transcribe.instance.spot_watch import read_imds

        return (read_imds("meta-data/instance-id", timeout_s=1.0) or "").strip()

    def _protect(self, protected: bool) -> None:
        if not self.in_group:
            return
        from gpu_transcribe.aws.pipeline.fleet_member import set_scale_in_protection

        try:
            set_scale_in_protection(self.ctx, self.config.resources.group, self.instance_id, protected)
        except GpuTranscribeError as exc:
            self._say("note", f"could not set scale-in protection: {exc}")

    def _leave_group(self) -> bool:
        from gpu_transcribe.aws.pipeline.fleet_member import leave_group

        try:
            leave_group(self.ctx, self.instance_id)
        except GpuTranscribeError as exc:
            self._say("note", f"could not leave the Auto Scaling group: {exc}")
            return False
        self._say("leave", f"left group {self.config.resources.group} (desired capacity decremented)")
        return True

    def _say(self, stage: str, message: str) -> None:
        self._on_event(ProgressEvent(stage, message))
