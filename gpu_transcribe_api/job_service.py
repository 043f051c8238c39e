"""The async jobs' service behind ``/v1/jobs`` (:mod:`gpu_transcribe_api.jobs_api`): :class:`JobService`
holds the :class:`~gpu_transcribe_api.jobs.JobStore`, the :class:`~gpu_transcribe_api.webhooks.WebhookSender`
and the threads that decode and submit jobs.

:func:`gpu_transcribe_api.app.create_app` creates one per application; its lifespan opens it (after the
model loader started) and registers :meth:`JobService.close` as a shutdown hook of the server state, so it
closes after the scheduler has stopped. The life of a job is described in :mod:`gpu_transcribe_api.jobs_api`.

The signing secret (Standard Webhooks, ``whsec_`` + base64) is ``ServerConfig.webhook_secret`` if set, else
read from ``ServerConfig.webhook_secret_file`` (created there, mode 0600, if missing), else generated at
start-up into ``<jobs_dir>/webhook-secret`` (mode 0600). The secret is never logged or served; the log
names the file that holds it.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from prometheus_client import Counter, Gauge

from gpu_transcribe_api.api_errors import ApiError
from gpu_transcribe_api.config import MIB, ServerConfig
from gpu_transcribe_api.jobs import JobRecord, JobStore, JobStoreError, one_line
from gpu_transcribe_api.state import ServerState
from gpu_transcribe_api.webhooks import WebhookSender, check_secret, load_or_create_secret
from gpu_transcribe_engine.errors import AudioDecodeError
from gpu_transcribe_engine.options import TranscribeOptions
from gpu_transcribe_engine.transcript import Transcript

logger = logging.getLogger("gpu_transcribe_api.jobs")

JOBS_PATH = "/v1/jobs"
"""Where the job routes live; a job's result is at ``f"{JOBS_PATH}/{id}"``."""
SECRET_FILE_NAME = "webhook-secret"
"""The generated secret's file in the jobs directory when neither a secret nor a secret file is given."""
DECODE_WORKERS = 2
"""Threads that decode uploads of jobs (PyAV decodes an hour of audio in a few seconds per core)."""
SHUTDOWN_FLUSH_S = 3.0
"""At shutdown, seconds given to the webhook callbacks still pending before they are dropped."""
QUEUE_FULL_WAIT_S = 1.0
"""Seconds a job waits for room in a full queue when the scheduler gives no ``Retry-After``."""
STOPPED_ERROR = "the server stopped before the job finished; submit it again"


def resolve_webhook_secret(config: ServerConfig, jobs_dir: Path) -> tuple[str, Path | None]:
    """The signing secret and the file that holds it (``None`` when it came in the config itself).

    Raises:
        ValueError: the secret (given or in its file) is not ``whsec_`` + base64 of 24 to 64 bytes.
        OSError: the secret file can be neither read nor created.
    """
    if config.webhook_secret:
        try:
            return check_secret(config.webhook_secret), None
        except ValueError as exc:
            raise ValueError(f"webhook_secret: {exc}") from None
    path = config.webhook_secret_file or jobs_dir / SECRET_FILE_NAME
    try:
        return load_or_create_secret(path), path
    except ValueError as exc:
        raise ValueError(f"--webhook-secret-file {path}: {exc}") from None


class JobService:
    """The job store, the webhook sender and the threads that run jobs; one per application.

    Created by :func:`~gpu_transcribe_api.app.create_app`; :meth:`open` runs when the application starts,
    :meth:`close` after its scheduler stopped. Thread-safe.
    """

    def __init__(self, config: ServerConfig) -> None:
        """Hold ``config``; nothing is created before :meth:`open`."""
        self.config = config
        self.state: ServerState | None = None
        self.store: JobStore | None = None
        self.sender: WebhookSender | None = None
        self.secret_file: Path | None = None
        self._own_dir: Path | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._active: set[str] = set()
        """Jobs accepted and not finished; each holds the server busy (idle timer)."""
        self._held: dict[str, int] = {}
        """Upload bytes per job accepted and not finished, and per reservation of one being stored."""
        self._jobs_finished: Counter | None = None
        self._callbacks: Counter | None = None

    def open(self, state: ServerState) -> None:
        """Open the store (a private temporary directory if ``jobs_dir`` is not set), load the secret and
        start the sweeper, the sender and the decode threads.

        Raises:
            JobStoreError: the jobs directory cannot be created.
            ValueError, OSError: see :func:`resolve_webhook_secret`.
        """
        self.state = state
        if self.config.jobs_dir is not None:
            jobs_dir = Path(self.config.jobs_dir)
        else:
            jobs_dir = self._own_dir = Path(tempfile.mkdtemp(prefix="gpu-transcribe-jobs-"))  # mode 0700
        self.store = JobStore(jobs_dir, ttl_s=self.config.job_ttl_s)
        secret, self.secret_file = resolve_webhook_secret(self.config, jobs_dir)
        self.sender = WebhookSender(secret, allow_private=self.config.allow_private_callbacks)
        self.sender.start()
        self.store.start_sweeper(interval_s=min(60.0, max(0.05, self.config.job_ttl_s / 10)))
        self._executor = ThreadPoolExecutor(max_workers=DECODE_WORKERS, thread_name_prefix="job-decode")
        self._add_metrics(state)
        where = f"the file {self.secret_file}" if self.secret_file else "the server's config"
        logger.info("async jobs in %s; webhooks are signed with the secret in %s", jobs_dir, where)

    def _add_metrics(self, state: ServerState) -> None:
        """Register the job metrics in the application's registry (``GET /metrics``):
        ``gpu_transcribe_jobs_finished_total{status}``, ``gpu_transcribe_jobs_active`` (accepted, not
        finished) and ``gpu_transcribe_job_callbacks_total{outcome}`` (``delivered`` or ``failed``)."""
        registry = state.metrics.registry
        self._jobs_finished = Counter(
            "gpu_transcribe_jobs_finished", "Async jobs finished, by status", ["status"], registry=registry
        )
        self._callbacks = Counter(
            "gpu_transcribe_job_callbacks",
            "Job webhooks delivered (2xx) or given up on",
            ["outcome"],
            registry=registry,
        )
        active = Gauge(
            "gpu_transcribe_jobs_active", "Async jobs accepted and not finished", registry=registry
        )
        active.set_function(lambda: float(len(self._active)))

    def close(self) -> None:
        """Fail the jobs still unfinished, give pending webhooks :data:`SHUTDOWN_FLUSH_S`, stop every thread
        and remove the jobs directory if it was a temporary one. Safe to call twice."""
        self._stop.set()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            unfinished = list(self._active)
        for job_id in unfinished:
            try:
                self._finish(job_id, error=STOPPED_ERROR)
            except JobStoreError as exc:  # keep closing: the threads must stop
                logger.error("%s", exc)
        if self.sender is not None:
            self.sender.join(SHUTDOWN_FLUSH_S)
            self.sender.close()
        if self.store is not None:
            self.store.close()
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)

    # -- admitting a job ----------------------------------------------------------------------------

    def reserve(self, size_bytes: int, retry_after_s: int) -> str:
        """Hold room for one more job whose upload is ``size_bytes`` long; return the reservation's key,
        for :meth:`accept` (the job was stored) or :meth:`release` (it was not).

        Args:
            size_bytes: the upload's size in bytes.
            retry_after_s: the ``Retry-After`` of a 429, whole seconds (the scheduler's estimate).

        Raises:
            ApiError: 429 when ``max_pending_jobs`` jobs are accepted and not finished, or their uploads
                and this one would be over ``max_pending_bytes``; 507 when storing this upload would leave
                less than ``min_free_disk_bytes`` free on the jobs directory's file system.
        """
        assert self.store is not None
        config = self.config
        with self._lock:
            held_bytes = sum(self._held.values())
            if len(self._held) >= config.max_pending_jobs:
                why = f"{len(self._held)} jobs are accepted and not finished (--max-pending-jobs)"
            elif held_bytes + size_bytes > config.max_pending_bytes:
                why = (
                    f"the unfinished jobs' uploads ({held_bytes / MIB:.1f} MiB) and this one "
                    f"({size_bytes / MIB:.1f} MiB) would be over {config.max_pending_bytes / MIB:.1f} MiB "
                    "(--max-pending-gb)"
                )
            else:
                why = ""
                key = "reservation-" + secrets.token_hex(8)
                self._held[key] = size_bytes
        if why:
            raise ApiError(
                429,
                f"too many async jobs waiting: {why}; retry in {retry_after_s} s",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(retry_after_s)},
            )
        try:
            free_bytes = shutil.disk_usage(self.store.root).free
        except OSError as exc:
            self.release(key)
            raise ApiError(500, f"the server cannot read its free disk space ({exc})") from None
        if free_bytes - size_bytes < config.min_free_disk_bytes:
            self.release(key)
            logger.warning(
                "job refused: %.1f MiB free in %s, the upload is %.1f MiB, the floor %.1f MiB",
                free_bytes / MIB,
                self.store.root,
                size_bytes / MIB,
                config.min_free_disk_bytes / MIB,
            )
            raise ApiError(
                507,
                "the server's disk is too full to store this job; retry later, once finished jobs expire",
                code="insufficient_storage",
            )
        return key

    def release(self, key: str) -> None:
        """Give back a reservation whose job was not stored."""
        with self._lock:
            self._held.pop(key, None)

    # -- running a job (worker threads) -------------------------------------------------------------

    def accept(self, record: JobRecord, key: str) -> None:
        """Count the new job (stored under the reservation ``key``) as activity and hand it to a decode
        thread."""
        assert self.state is not None and self._executor is not None
        with self._lock:
            self._active.add(record.id)
            self._held[record.id] = self._held.pop(key, 0)
        self.state.request_started()
        try:
            self._executor.submit(self._run, record.id)
        except RuntimeError:  # shut down meanwhile
            self._finish(record.id, error=STOPPED_ERROR)

    def _run(self, job_id: str) -> None:
        """Decode the job's upload and submit it to the scheduler (a decode thread's task)."""
        try:
            self._decode_and_submit(job_id)
        except Exception as exc:  # never lose a job silently
            logger.exception("job %s: unexpected error", job_id)
            self._finish(job_id, error=f"internal error ({type(exc).__name__}: {one_line(str(exc))})")

    def _decode_and_submit(self, job_id: str) -> None:
        from gpu_transcribe_engine.audio import SAMPLE_RATE_HZ, decode_audio

        assert self.store is not None and self.state is not None
        record = self.store.get(job_id)
        path = self.store.audio_path(job_id)
        if record is None or path is None:  # finished already, or the upload vanished from the disk
            self._finish(job_id, error="the upload is no longer on the server's disk; submit it again")
            return
        name = record.filename or "upload"
        options = dict(record.options or {})
        started = time.perf_counter()
        try:
            samples = decode_audio(path)
        except AudioDecodeError as exc:
            self._finish(job_id, error=str(exc).replace(str(path), name))
            return
        decode_s = time.perf_counter() - started
        self.store.mark_running(job_id, duration_s=round(samples.shape[0] / SAMPLE_RATE_HZ, 3))
        transcribe_options = TranscribeOptions(
            language=options.get("language") or "auto",
            prompt=options.get("prompt") or None,
            word_timestamps=bool(options.get("word_timestamps")),
            max_line_width=options.get("max_line_width"),
            max_line_count=options.get("max_line_count"),
        ).validated()
        while True:
            try:
                ticket = self.state.submit(samples, transcribe_options, audio=name, decode_s=decode_s)
                break
            except ApiError as exc:
                if exc.status_code != 429:
                    self._finish(job_id, error=exc.message)
                    return
                wait_s = float(exc.headers.get("Retry-After", QUEUE_FULL_WAIT_S))
                if self._stop.wait(wait_s):
                    return  # close() fails it
        del samples
        ticket.future.add_done_callback(lambda future: self._completed(job_id, future))

    def _completed(self, job_id: str, future: Future[Transcript]) -> None:
        """Store the scheduler's result (runs on the thread that completed the future)."""
        if future.cancelled():
            self._finish(job_id, error=STOPPED_ERROR)
            return
        error = future.exception()
        if error is not None:
            self._finish(job_id, error=f"the transcription failed: {error}")
            return
        transcript = future.result()
        try:
            self._finish(job_id, transcript=transcript)
        except JobStoreError as exc:
            logger.error("%s", exc)
            return
        if self.state is not None:
            self.state.requests_served += 1
            self.state.metrics.audio_seconds.inc(transcript.duration_s)

    def _finish(self, job_id: str, transcript: Transcript | None = None, error: str | None = None) -> None:
        """Mark the job succeeded or failed, end its activity and queue its webhook (once per job; a job
        finished already is left as it is).

        Raises:
            JobStoreError: the result could not be stored (the job is marked failed, its webhook sent).
        """
        assert self.store is not None
        with self._lock:
            if job_id not in self._active:  # finished already (by close(), or a late engine result)
                return
        try:
            if transcript is not None:
                record = self.store.mark_succeeded(job_id, transcript)
            else:
                record = self.store.mark_failed(job_id, error or "failed")
        except JobStoreError:
            record = self.store.get(job_id)
            self._finished(job_id, record)
            raise
        if record is not None:
            logger.info("job %s %s%s", job_id, record.status, f": {record.error}" if record.error else "")
            if self._jobs_finished is not None:
                self._jobs_finished.labels(status=record.status).inc()
        self._finished(job_id, record)

    def _finished(self, job_id: str, record: JobRecord | None) -> None:
        """End the job's activity and send its webhook, if it was still active."""
        with self._lock:
            if job_id not in self._active:
                return
            self._active.discard(job_id)
            self._held.pop(job_id, None)
        state = self.state
        if record is not None and record.finished and record.callback_url and self.sender is not None:
            if state is not None:
                state.request_started()  # the delivery keeps the server busy until it ends

            def on_done(delivered: bool) -> None:
                if self._callbacks is not None:
                    self._callbacks.labels(outcome="delivered" if delivered else "failed").inc()
                if state is not None:
                    state.request_ended()

            self.sender.submit(
                record.callback_url,
                f"job.{record.status}",
                {
                    "id": record.id,
                    "status": record.status,
                    "duration": record.duration_s,
                    "error": record.error,
                    "result_path": f"{JOBS_PATH}/{record.id}",
                },
                on_done=on_done,
            )
        if state is not None:
            state.request_ended()
