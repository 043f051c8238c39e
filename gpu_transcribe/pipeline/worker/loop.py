"""The worker loop (:class:`Worker`): receive, claim, prepare, transcribe, and hand each job to its ending
(:mod:`.endings`), with the watcher and heartbeat threads of :mod:`.watchers` beside it; the rounds are
described in :mod:`gpu_transcribe.pipeline.worker`."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpu_transcribe.aws.pipeline import job_objects, jobs_table, queue
from gpu_transcribe.aws.pipeline.fleet_member import leave_group, set_scale_in_protection
from gpu_transcribe.errors import GpuTranscribeError
from gpu_transcribe.pipeline.job_ids import (
    UnsafeFileNameError,
    external_job_id,
    job_id_for_key,
    local_file_name,
)
from gpu_transcribe.pipeline.worker.endings import JobEndings
from gpu_transcribe.pipeline.worker.options import (
    DUPLICATE_GRACE_S,
    LEASE_MARGIN_S,
    MAX_LIFETIME,
    WorkerError,
    WorkerOptions,
    WorkerReport,
)
from gpu_transcribe.pipeline.worker.state import (
    Job,
    WorkerState,
    isolate_suspects,
    job_transcribe_options,
)
from gpu_transcribe.pipeline.worker.watchers import heartbeat, read_instance_id, watch
from gpu_transcribe_engine.utc import iso_utc

if TYPE_CHECKING:
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.pipeline.queue import QueueMessage
    from gpu_transcribe.common import ProgressEvent
    from gpu_transcribe.pipeline.config import PipelineConfig
    from gpu_transcribe_engine.engine import WhisperEngine


class _Stopped(Exception):
    """Raised from the engine's progress callback to stop it when the worker is stopping."""


class Worker:
    """The worker loop; :meth:`run` until idle or stopped, :meth:`request_stop` from a signal handler.

    Args:
        ctx: where AWS calls go.
        config: the pipeline (resources, attempts, visibility timeout, defaults).
        options: see :class:`~.options.WorkerOptions`.
        on_event: progress (one line per step: claims, results, releases), never required.
        engine_loader: loads the engine (default :meth:`gpu_transcribe_engine.engine.WhisperEngine.load`).

    Attributes:
        worker_id, instance_id, in_group: as :class:`~.state.WorkerState` has them.
    """

    def __init__(
        self,
        ctx: AwsContext,
        config: PipelineConfig,
        options: WorkerOptions,
        on_event: Callable[[ProgressEvent], None] | None = None,
        engine_loader: Callable[[str, str], WhisperEngine] | None = None,
    ) -> None:
        self.config, self.options = config, options
        self._state = WorkerState(ctx, config, options, on_event or (lambda event: None), read_instance_id())
        self._endings = JobEndings(self._state)
        self._engine_loader = engine_loader
        self._engine: WhisperEngine | None = None
        self.instance_id = self._state.instance_id
        self.worker_id = self._state.worker_id
        self.in_group = self._state.in_group

    @property
    def ctx(self) -> AwsContext:
        """The calling thread's AWS context (:attr:`~.state.WorkerState.ctx`)."""
        return self._state.ctx

    # --- public --------------------------------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """Stop receiving and hand the batch's jobs back as interrupted (done by the watcher thread within
        :data:`~.options.STOP_CHECK_S`); safe to call from a signal handler."""
        self._state.request_stop(reason)

    def lifetime_left_s(self) -> float | None:
        """Seconds until the maximum lifetime (negative once past it), ``None`` without one."""
        return self._state.lifetime_left_s()

    def run(self) -> WorkerReport:
        """Receive and work until idle for ``exit_when_idle_s``, at the maximum lifetime, or stopped.

        Returns:
            What was done, and why it stopped.

        Raises:
            WorkerError: the model cannot be loaded (the batch's jobs were handed back first).
            CloudError, CredentialsError: an AWS call of the loop failed (the jobs in hand come back to the
                queue when their visibility ends).
        """
        state = self._state
        watcher = threading.Thread(
            target=watch, args=(state, self._endings), name="worker-watcher", daemon=True
        )
        watcher.start()
        idle_since = time.monotonic()
        self._say("start", f"worker {self.worker_id} waiting for jobs on {self.config.resources.queue_url}")
        try:
            while not state.stop.is_set():
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
                if state.stop.is_set():  # received while stopping: hand them straight back
                    for message in messages:
                        queue.change_visibility(
                            self.ctx, self.config.resources.queue_url, message.receipt_handle, 0
                        )
                    break
                self._work(messages)
                idle_since = time.monotonic()
        finally:
            state.stop.set()
            watcher.join(timeout=10)
        left = leave_failed = False
        if state.stop_reason in ("idle", MAX_LIFETIME) and self.in_group:
            left = self._leave_group()
            leave_failed = not left
        return WorkerReport(
            self.worker_id,
            state.stop_reason or "stopped",
            tuple(state.succeeded),
            tuple(state.failed),
            tuple(state.released),
            left,
            leave_failed,
        )

    # --- one batch -----------------------------------------------------------------------------------------

    def _work(self, messages: tuple[QueueMessage, ...]) -> None:
        batch = self._claim_all(messages)
        if not batch:
            return
        with self._state.lock:
            self._state.batch = batch
        heartbeat_stop = threading.Event()
        beating = threading.Thread(target=heartbeat, args=(self._state, heartbeat_stop), daemon=True)
        beating.start()
        self._protect(True)
        try:
            with tempfile.TemporaryDirectory(prefix="gpu-transcribe-worker-") as tmp:
                for group in isolate_suspects(batch):
                    if self._state.stop.is_set():
                        break
                    ready = self._prepare(group, Path(tmp))
                    if ready:
                        self._transcribe(ready, Path(tmp))
        finally:
            if self._state.stop.is_set():  # a stop that came between the watcher's hand-back and this batch
                for job in batch:  # a no-op for the jobs already ended or released
                    try:
                        self._endings.release(job, interrupted=True)
                    except GpuTranscribeError as exc:
                        self._say("note", f"could not hand back job {job.record.job_id}: {exc}")
            heartbeat_stop.set()
            beating.join(timeout=10)
            with self._state.lock:
                self._state.batch = []
            self._protect(False)

    def _claim_all(self, messages: tuple[QueueMessage, ...]) -> list[Job]:
        table, url = self.config.resources.table, self.config.resources.queue_url
        batch: dict[str, Job] = {}
        for message in messages:
            if self._state.stop.is_set():  # stopping: what is not claimed yet goes straight back
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
            batch[job_id] = Job(claimed, message)
        return list(batch.values())

    def _create_row(self, job_id: str, key: str) -> None:
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
        url = self.config.resources.queue_url
        current = jobs_table.get_job(self.ctx, self.config.resources.table, job_id)
        if current is None or current.status in jobs_table.FINAL_STATUSES:
            status = current.status if current else "gone"
            self._say("duplicate", f"job {job_id} is {status}: deleting a duplicate delivery")
            if current is not None:  # before the delete, as for the first end: a crash here redelivers
                self._endings.publish(current)
            queue.delete(self.ctx, url, message.receipt_handle)
            return
        lease_left_s = (current.lease_expires_at or 0) - time.time()
        hide_s = int(max(1.0, lease_left_s + DUPLICATE_GRACE_S))
        self._say(
            "duplicate", f"job {job_id} is held by {current.owner or 'another worker'}: back in {hide_s} s"
        )
        queue.change_visibility(self.ctx, url, message.receipt_handle, hide_s)

    def _prepare(self, batch: list[Job], tmp: Path) -> list[Job]:
        """Download and decode each job's audio; bad audio fails its job at once."""
        from gpu_transcribe_engine.audio import decode_audio
        from gpu_transcribe_engine.errors import AudioDecodeError

        ready = []
        for job in batch:
            if self._state.stop.is_set():
                break
            record = job.record
            try:
                name = local_file_name(record.file_name, f"job {record.job_id}'s file name")
            except UnsafeFileNameError as exc:
                self._endings.fail(job, str(exc))
                continue
            folder = tmp / record.job_id
            folder.mkdir()
            path = folder / name
            source = f"s3://{self.config.resources.bucket}/{record.input_key}"
            if not job_objects.download(self.ctx, self.config.resources.bucket, record.input_key, path):
                self._endings.fail(job, f"{source}: the audio is not in the bucket (or not readable)")
                continue
            if record.options.model and record.options.model != self.options.model:
                self._endings.fail(
                    job,
                    f"the job asks for model {record.options.model!r}; this pipeline's workers run "
                    f"{self.options.model!r}",
                )
                continue
            try:
                job.samples = decode_audio(path)
            except AudioDecodeError as exc:
                self._endings.fail(job, str(exc).replace(str(path), source))
                continue
            job.path = path
            ready.append(job)
        return ready

    def _transcribe(self, ready: list[Job], tmp: Path) -> None:
        from gpu_transcribe_engine.engine import AudioRequest
        from gpu_transcribe_engine.errors import BadOptionError

        if self._state.stop.is_set():
            return  # stopping: the watcher hands the jobs back; no model load for nothing
        engine = self._load_engine(ready)
        if self._state.stop.is_set():
            return  # stopped while the model loaded: the jobs are handed back already

        def progress(done_s: float, duration_s: float) -> None:
            """The engine's progress callback: stops the engine once the worker is stopping."""
            if self._state.stop.is_set():
                raise _Stopped

        requests = [
            AudioRequest(
                job.samples,
                job_transcribe_options(job.record, self.config.default_language),
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
                    self._endings.fail(job, f"{job.record.file_name}: {result}")
                elif isinstance(result, Exception):
                    self._endings.engine_failure(job, result)
                else:
                    self._endings.succeed(job, result, tmp)
            except GpuTranscribeError as exc:  # AWS failed on this job: it comes back when its lease ends
                with self._state.lock:
                    job.state = "lost"  # no more heartbeats for it
                self._say("note", f"job {job.record.job_id}: {exc}; it comes back to the queue")

    def _load_engine(self, ready: list[Job]) -> WhisperEngine:
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
            with self._state.lock:
                held = list(self._state.batch)  # the later groups' jobs too (isolate_suspects)
            for job in held:
                self._endings.release(job, interrupted=True)  # a no-op for a job already ended
            raise WorkerError(f"cannot load model {self.options.model!r}: {exc}") from exc
        self._say(
            "model",
            f"loaded {self.options.model} ({self._engine.info.device}, {self._engine.info.load_s:.1f} s)",
        )
        return self._engine

    # --- the Auto Scaling group ----------------------------------------------------------------------------

    def _protect(self, protected: bool) -> None:
        if not self.in_group:
            return
        try:
            set_scale_in_protection(self.ctx, self.config.resources.group, self.instance_id, protected)
        except GpuTranscribeError as exc:
            self._say("note", f"could not set scale-in protection: {exc}")

    def _leave_group(self) -> bool:
        try:
            leave_group(self.ctx, self.instance_id)
        except GpuTranscribeError as exc:
            self._say("note", f"could not leave the Auto Scaling group: {exc}")
            return False
        self._say("leave", f"left group {self.config.resources.group} (desired capacity decremented)")
        return True

    def _say(self, stage: str, message: str) -> None:
        self._state.say(stage, message)
