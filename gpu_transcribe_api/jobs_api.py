"""Async jobs over HTTP: ``POST /v1/jobs`` and ``GET /v1/jobs/{id}`` (docs/server.md), for files too long
to hold a request open (gateways time out, and OpenAI's client retries a request after 600 s).

:func:`jobs_router` returns an ``APIRouter`` that :func:`gpu_transcribe_api.app.create_app` includes. Its
lifespan
(merged into the application's by ``include_router``) opens the :class:`~gpu_transcribe_api.jobs.JobStore` and
starts the :class:`~gpu_transcribe_api.webhooks.WebhookSender`; a shutdown hook of the server state closes
them
after the scheduler has stopped.

A job's life:

1. ``POST /v1/jobs``: the options are checked (400; a ``callback_url`` whose host resolves to a non-public
   address without ``--allow-private-callbacks`` too), a full queue answers 429 with ``Retry-After`` and a
   model still loading 503, exactly as the synchronous routes do. Jobs accepted and not finished are
   bounded (:meth:`JobService.reserve`): beyond ``max_pending_jobs`` of them or ``max_pending_bytes`` of
   their uploads, 429 with ``Retry-After``; when storing the upload would leave less than
   ``min_free_disk_bytes`` free in the jobs directory, 507. Then the upload is stored in the job's
   directory and the answer is 202 ``{"id", "status": "queued"}`` with ``Location: /v1/jobs/{id}``.
2. A worker thread (:data:`DECODE_WORKERS` of them) decodes the upload, marks the job ``running`` with the
   audio's duration and submits it to the same :class:`~gpu_transcribe_api.scheduler.BatchScheduler` as the
   synchronous requests, so jobs share the engine's batches. If the queue has filled up meanwhile, the
   thread waits the scheduler's ``Retry-After`` and submits again (the job was accepted; it is not dropped).
3. When the scheduler's future completes, the transcript is stored (or the error, one line), the upload is
   removed and, with a ``callback_url``, a signed ``job.succeeded``/``job.failed`` webhook is queued.
4. ``GET /v1/jobs/{id}`` renders the stored transcript in any response format until the job expires
   (``job_ttl_s`` after it finished); then, as for an unknown id, 404.

While a job is accepted and unfinished, and while its webhook is being delivered, the server counts as busy
for the idle power-off (:meth:`~gpu_transcribe_api.state.ServerState.request_started`).

The signing secret (Standard Webhooks, ``whsec_`` + base64) is ``ServerConfig.webhook_secret`` if set, else
read from ``ServerConfig.webhook_secret_file`` (created there, mode 0600, if missing), else generated at
start-up into ``<jobs_dir>/webhook-secret`` (mode 0600). The secret is never logged or served; the log
names the file that holds it.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Form, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import Counter, Gauge
from starlette.concurrency import run_in_threadpool

from gpu_transcribe_api.api_errors import ApiError
from gpu_transcribe_api.config import MIB, ServerConfig
from gpu_transcribe_api.formats import RESPONSE_FORMATS, openai_body
from gpu_transcribe_api.jobs import JobRecord, JobStore, JobStoreError, one_line
from gpu_transcribe_api.state import ServerState, server_state
from gpu_transcribe_api.uploads import (
    FileField,
    FormatField,
    GranularitiesField,
    LanguageField,
    MaxLineCountField,
    MaxLineWidthField,
    ModelField,
    PromptField,
    TemperatureField,
    checked_options,
)
from gpu_transcribe_api.webhooks import (
    WebhookSender,
    check_callback_url,
    check_secret,
    load_or_create_secret,
)
from gpu_transcribe_engine.errors import AudioDecodeError
from gpu_transcribe_engine.options import TranscribeOptions
from gpu_transcribe_engine.transcript import Transcript

logger = logging.getLogger("gpu_transcribe_api.jobs")

JOBS_PATH = "/v1/jobs"
SECRET_FILE_NAME = "webhook-secret"
"""The generated secret's file in the jobs directory when neither a secret nor a secret file is given."""
DECODE_WORKERS = 2
"""Threads that decode uploads of jobs (PyAV decodes an hour of audio in a few seconds per core)."""
SHUTDOWN_FLUSH_S = 3.0
"""At shutdown, seconds given to the webhook callbacks still pending before they are dropped."""
QUEUE_FULL_WAIT_S = 1.0
"""Seconds a job waits for room in a full queue when the scheduler gives no ``Retry-After``."""
STOPPED_ERROR = "the server stopped before the job finished; submit it again"

CallbackField = Annotated[
    str | None, Form(description="http(s) URL that gets a signed job.succeeded or job.failed webhook.")
]


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

    Created by :func:`jobs_router`; :meth:`open` runs when the application starts, :meth:`close` after its
    scheduler stopped. Thread-safe.
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


def _service(request: Request) -> JobService:
    """The application's :class:`JobService`; 503 before it is open."""
    service: JobService | None = getattr(request.app.state, "jobs", None)
    if service is None or service.store is None:
        raise ApiError(503, "async jobs are not ready yet; retry in a few seconds", code="jobs_not_ready")
    return service


def _check_format(response_format: str) -> str:
    """``response_format`` if OpenAI knows it, else :class:`ApiError` 400."""
    if response_format not in RESPONSE_FORMATS:
        raise ApiError(
            400,
            f"response_format: {response_format!r} is not one of {', '.join(RESPONSE_FORMATS)}",
            param="response_format",
        )
    return response_format


def _not_found(job_id: str, ttl_s: float) -> ApiError:
    return ApiError(
        404,
        f"no job {job_id!r}: it does not exist, or it expired (finished jobs are kept {ttl_s / 3600:g} h)",
        param="id",
        code="job_not_found",
    )


def jobs_router(config: ServerConfig) -> APIRouter:
    """The async job routes for an application built from ``config``.

    Include it with ``app.include_router(jobs_router(config))``; its lifespan puts the
    :class:`JobService` at ``app.state.jobs`` and registers its :meth:`JobService.close` as a shutdown hook
    of ``app.state.server``.
    """
    service = JobService(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state: ServerState = app.state.server
        await run_in_threadpool(service.open, state)
        app.state.jobs = service
        state.shutdown_hooks.append(service.close)
        yield

    router = APIRouter(lifespan=lifespan, tags=["jobs"])

    @router.post(JOBS_PATH, status_code=202)
    async def create_job(
        request: Request,
        file: FileField,
        model: ModelField = "",
        language: LanguageField = None,
        prompt: PromptField = None,
        response_format: FormatField = "json",
        temperature: TemperatureField = 0.0,
        callback_url: CallbackField = None,
        timestamp_granularities: GranularitiesField = None,
        max_line_width: MaxLineWidthField = None,
        max_line_count: MaxLineCountField = None,
    ) -> Response:
        """Accept a transcription to run in the background: 202 ``{"id", "status"}``."""
        del model
        service = _service(request)
        state = server_state(request)
        _check_format(response_format)
        word_timestamps = "word" in (timestamp_granularities or ())
        checked_options(language, "transcribe", prompt, word_timestamps, max_line_width, max_line_count)
        if callback_url:
            try:  # resolves the host: not on the event loop
                callback_url = await run_in_threadpool(
                    check_callback_url, callback_url, config.allow_private_callbacks
                )
            except ValueError as exc:
                raise ApiError(400, str(exc), param="callback_url") from None
        scheduler = state.require_ready()
        if scheduler.queue_depth >= scheduler.max_queue:
            retry_s = scheduler.retry_after_s()
            raise ApiError(
                429,
                f"the transcription queue is full ({scheduler.max_queue} requests waiting); "
                f"retry in {retry_s} s",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(retry_s)},
            )
        assert service.store is not None
        options: dict[str, Any] = {
            "language": language or None,
            "prompt": prompt,
            "word_timestamps": word_timestamps,
            "max_line_width": max_line_width,
            "max_line_count": max_line_count,
            "response_format": response_format,
            "temperature": temperature,
        }
        size_bytes = file.size if file.size is not None else file.file.seek(0, 2)  # the spooled upload's
        await file.seek(0)
        key = await run_in_threadpool(service.reserve, size_bytes, scheduler.retry_after_s())
        try:
            record = await run_in_threadpool(
                service.store.create,
                file.file,
                filename=file.filename or "upload",
                options=options,
                callback_url=callback_url or None,
            )
        except JobStoreError as exc:
            service.release(key)
            logger.error("%s", exc)
            raise ApiError(
                500, "the server cannot store the job; see its log", code="job_store_error"
            ) from None
        except BaseException:
            service.release(key)
            raise
        service.accept(record, key)
        return JSONResponse(
            {"id": record.id, "status": record.status},
            status_code=202,
            headers={"Location": f"{JOBS_PATH}/{record.id}"},
        )

    @router.get(JOBS_PATH + "/{job_id}")
    async def get_job(
        request: Request,
        job_id: str,
        response_format: Annotated[
            str | None, Query(description="json, text, srt, vtt or verbose_json; default: as submitted.")
        ] = None,
    ) -> Response:
        """A job's status and, once it succeeded, its result in ``response_format``."""
        service = _service(request)
        store = service.store
        assert store is not None
        record = store.get(job_id)
        if record is None:
            raise _not_found(job_id, store.ttl_s)
        submitted = (record.options or {}).get("response_format") or "json"
        fmt = _check_format(response_format or submitted)
        result: str | dict[str, Any] | None = None
        if record.status == "succeeded":
            transcript = await run_in_threadpool(store.result, job_id)
            if transcript is None:  # expired between the two reads
                raise _not_found(job_id, store.ttl_s)
            result = await run_in_threadpool(openai_body, transcript, fmt, "transcribe")
        return JSONResponse(
            {
                "id": record.id,
                "status": record.status,
                "created_at": record.created_at,
                "finished_at": record.finished_at,
                "error": record.error,
                "duration": record.duration_s,
                "response_format": fmt,
                "result": result,
            }
        )

    return router
