"""The HTTP API of ``gpu-transcribe serve``: :func:`create_app` builds the FastAPI application.

One process, one model: the lifespan starts a thread that loads the engine (``/health`` answers 503 until it
is loaded, then 200), then a :class:`~remote.server.scheduler.BatchScheduler` whose one consumer thread
feeds it. Routes (the contract is ``docs/server.md``):

- ``POST /v1/audio/transcriptions``, ``POST /v1/audio/translations``: OpenAI's API (``formats.py``).
- ``POST /transcribe``: multipart ``audio``, a JSON body with timings.
- ``GET /health`` (readiness, 503 until loaded), ``GET /livez`` (liveness), ``GET /metrics`` (Prometheus,
  one registry per application), ``GET /`` (``static/index.html`` when it exists).

Every error is OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, with OpenAI's status
codes (FastAPI's own validation errors too, as 400), and one line in the log. :class:`_Guard`, a plain ASGI
middleware, checks the bearer key (``hmac.compare_digest``) and the upload size (``Content-Length``, then
counted chunks) before any of the body is read, and counts requests for ``/metrics`` and the idle timer.

More routers (async jobs) are added with ``app.include_router(router)``; they reach the shared state with
:func:`server_state` and reuse :func:`decode_upload`, :meth:`ServerState.submit` and :class:`ApiError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from remote.errors import AudioDecodeError, EngineFailure
from remote.options import TranscribeOptions
from remote.server.config import ServerConfig
from remote.server.formats import RESPONSE_FORMATS, TEXT_FORMATS, openai_body, transcribe_body
from remote.server.scheduler import (
    BatchScheduler,
    QueueFullError,
    SchedulerStoppedError,
    Ticket,
)
from remote.transcript import Transcript

logger = logging.getLogger("remote.server")

STATIC_DIR = Path(__file__).parent / "static"
INDEX_HTML = STATIC_DIR / "index.html"
PUBLIC_PATHS = frozenset({"/livez", "/health", "/"})
"""Paths that need no key; ``/static/...`` neither."""
UNTIMED_PATHS = frozenset({"/livez", "/health", "/metrics", "/"})
"""Requests that do not reset the idle timer (monitoring must not keep an idle machine alive)."""
DISCONNECT_POLL_S = 0.25
"""How often a waiting request checks whether its client is still connected."""
LOADING_RETRY_AFTER_S = 10
"""``Retry-After`` on 503 while the model loads (whisper-small loads in about 10 s from a local disk)."""
CLIENT_CLOSED_STATUS = 499
"""nginx's status for a client that closed the connection before the answer (logged and counted only)."""

EngineLoader = Callable[[ServerConfig], Any]
"""Loads the engine for a config (blocking; runs in the loader thread); returns a ``WhisperEngine``, or any
object with its ``transcribe_many`` and ``info``."""


def load_whisper_engine(config: ServerConfig) -> Any:
    """The default :data:`EngineLoader`: :meth:`remote.engine.WhisperEngine.load` with the config's model,
    revision and device.

    Raises:
        ModelLoadError: the model cannot be found or loaded.
        ValueError: the device is unknown, or ``cuda`` without a GPU.
    """
    from remote.engine import WhisperEngine

    return WhisperEngine.load(config.model, revision=config.revision, device=config.device)


# --- errors ---------------------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answered in OpenAI's shape.

    Attributes:
        status_code: the HTTP status.
        message: one line saying what is wrong and what to do.
        param: the request field at fault, or ``None``.
        code: a stable machine-readable code (``invalid_api_key``, ``rate_limit_exceeded``...), or ``None``.
        error_type: OpenAI's ``type``: ``invalid_request_error`` (4xx), ``server_error`` (5xx) or
            ``rate_limit_error`` (429).
        headers: extra response headers (``Retry-After``).
    """

    def __init__(
        self,
        status_code: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status_code = status_code
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}
        super().__init__(message)

    @property
    def error_type(self) -> str:
        """OpenAI's ``type`` for this status."""
        if self.status_code == 429:
            return "rate_limit_error"
        return "server_error" if self.status_code >= 500 else "invalid_request_error"

    def response(self) -> JSONResponse:
        """The JSON response: ``{"error": {"message", "type", "param", "code"}}`` and the headers."""
        body = {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }
        return JSONResponse(body, status_code=self.status_code, headers=self.headers)


def _log_error(scope: Scope, error: ApiError) -> None:
    """The one log line of an error answer: method, path, status, message."""
    logger.warning(
        "%s %s -> %d %s", scope.get("method", "?"), scope.get("path", "?"), error.status_code, error
    )


async def _send_error(scope: Scope, receive: Receive, send: Send, error: ApiError) -> None:
    _log_error(scope, error)
    await error.response()(scope, receive, send)


# --- state and metrics ----------------------------------------------------------------------------------


class Metrics:
    """The application's Prometheus metrics, in a registry of its own (several apps may live in one process).

    Attributes:
        registry: what ``GET /metrics`` exposes.
        requests: ``gpu_transcribe_requests_total{route, status}``: HTTP answers by route template and status.
        queue_depth: ``gpu_transcribe_queue_depth``: transcriptions waiting for the engine.
        audio_seconds: ``gpu_transcribe_audio_seconds_total``: seconds of audio transcribed.
        transcription_seconds: ``gpu_transcribe_transcription_seconds``: per request, seconds from the
            upload's arrival to its transcript (decoding, queueing and transcription).
        batch_windows: ``gpu_transcribe_batch_windows``: windows per decoded batch (from the engine).
        batch_requests: ``gpu_transcribe_batch_requests``: requests whose windows share a decoded batch.
        dropped: ``gpu_transcribe_dropped_requests_total``: queued requests dropped because the client left.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gpu_transcribe_requests",
            "HTTP requests answered, by route template and status code",
            ["route", "status"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "gpu_transcribe_queue_depth", "Transcriptions waiting for the engine", registry=self.registry
        )
        self.audio_seconds = Counter(
            "gpu_transcribe_audio_seconds", "Seconds of audio transcribed", registry=self.registry
        )
        self.transcription_seconds = Histogram(
            "gpu_transcribe_transcription_seconds",
            "Seconds from an upload's arrival to its transcript (decode, queue, transcribe)",
            buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
            registry=self.registry,
        )
        self.batch_windows = Histogram(
            "gpu_transcribe_batch_windows",
            "30 s windows per decoded batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "gpu_transcribe_batch_requests",
            "Requests whose windows share one decoded batch",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
            registry=self.registry,
        )
        self.dropped = Counter(
            "gpu_transcribe_dropped_requests",
            "Queued transcriptions dropped because their client disconnected",
            registry=self.registry,
        )

    def on_batch(self, info: Any) -> None:
        """Record one engine batch (``BatchInfo(windows, requests)``); called on the consumer thread."""
        self.batch_windows.observe(info.windows)
        self.batch_requests.observe(info.requests)


@dataclass
class GpuFacts:
    """What ``/health`` says of the GPU: whether torch sees one, and its memory in bytes (``None`` on CPU)."""

    available: bool | None = None
    total_bytes: int | None = None


class ServerState:
    """Everything the routes share; ``app.state.server``. Get it with :func:`server_state`.

    Attributes:
        config: the server's config.
        metrics: its Prometheus metrics.
        engine: the loaded engine, ``None`` until loaded.
        scheduler: the batch scheduler, ``None`` until the engine is loaded.
        load_error: one line saying why the model failed to load, or ``None``.
        loaded: set once the engine and scheduler are ready, or the load failed.
        requests_served: transcriptions answered successfully.
        started_at: ``time.monotonic()`` at creation (for ``uptime_s``).
        startup_hooks: called (no arguments) when the application starts, while the model loads (a router's
            background threads: job expiry, webhook delivery).
        shutdown_hooks: called (no arguments) when the application stops, after the scheduler stops.
    """

    def __init__(self, config: ServerConfig, loader: EngineLoader) -> None:
        self.config = config
        self.loader = loader
        self.metrics = Metrics()
        self.engine: Any = None
        self.scheduler: BatchScheduler | None = None
        self.load_error: str | None = None
        self.loaded = threading.Event()
        self.gpu = GpuFacts()
        self.requests_served = 0
        self.started_at = time.monotonic()
        self.startup_hooks: list[Callable[[], None]] = []
        self.shutdown_hooks: list[Callable[[], None]] = []
        self._activity_lock = threading.Lock()
        self._last_activity = self.started_at
        self._open_requests = 0
        self.metrics.queue_depth.set_function(lambda: float(self.queue_depth))

    # -- the engine ----------------------------------------------------------------------------------

    def load(self) -> None:
        """Load the engine and start the scheduler (the loader thread's body). A failure is logged as one
        line and kept in :attr:`load_error`; ``/health`` then answers 503 with it."""
        try:
            self.gpu = _gpu_facts()
            logger.info("loading model %s on %s", self.config.model, self.config.device)
            engine = self.loader(self.config)
            scheduler = BatchScheduler(
                engine,
                max_queue=self.config.max_queue,
                max_batch_requests=self.config.max_batch_requests,
                max_call_audio_s=self.config.max_call_audio_s,
                batch_wait_s=self.config.batch_wait_s,
                on_batch=self.metrics.on_batch,
            ).start()
            self.engine, self.scheduler = engine, scheduler
            with self._activity_lock:  # the idle time counts from when requests can be answered
                self._last_activity = time.monotonic()
            info = getattr(engine, "info", None)
            logger.info(
                "model %s loaded on %s in %.1f s; serving",
                self.config.model,
                getattr(info, "device", "?"),
                getattr(info, "load_s", 0.0),
            )
        except Exception as exc:
            text = str(exc) if isinstance(exc, EngineFailure | ValueError) else f"{type(exc).__name__}: {exc}"
            self.load_error = (text.strip().splitlines() or [type(exc).__name__])[0]
            logger.error("the model failed to load: %s", self.load_error)
        finally:
            self.loaded.set()

    @property
    def ready(self) -> bool:
        """True once the engine is loaded and the scheduler runs."""
        return self.scheduler is not None

    @property
    def queue_depth(self) -> int:
        """Transcriptions waiting for the engine (0 before it is loaded)."""
        return self.scheduler.queue_depth if self.scheduler is not None else 0

    def require_ready(self) -> BatchScheduler:
        """The scheduler, or :class:`ApiError` 503 while the model loads (or after it failed to)."""
        if self.scheduler is not None:
            return self.scheduler
        if self.load_error is not None:
            raise ApiError(503, f"the model failed to load ({self.load_error})", code="model_load_failed")
        raise ApiError(
            503,
            f"the model {self.config.model} is still loading; retry in a few seconds",
            code="model_loading",
            headers={"Retry-After": str(LOADING_RETRY_AFTER_S)},
        )

    def submit(self, samples: np.ndarray, options: TranscribeOptions, audio: str, decode_s: float) -> Ticket:
        """Queue decoded audio with the scheduler.

        Raises:
            ApiError: 503 while the model loads or is stopping; 429 with ``Retry-After`` when the queue
                is full.
        """
        scheduler = self.require_ready()
        try:
            return scheduler.submit(samples, options, audio=audio, decode_s=decode_s)
        except QueueFullError as exc:
            raise _queue_full(exc) from None
        except SchedulerStoppedError as exc:
            raise ApiError(503, str(exc), code="shutting_down") from None

    # -- activity (the idle timer) ------------------------------------------------------------------

    def request_started(self) -> None:
        """An API request arrived: the server is not idle until it ends."""
        with self._activity_lock:
            self._open_requests += 1
            self._last_activity = time.monotonic()

    def request_ended(self) -> None:
        """An API request was answered; the idle time counts from now."""
        with self._activity_lock:
            self._open_requests -= 1
            self._last_activity = time.monotonic()

    @property
    def idle_s(self) -> float:
        """Seconds since the last API request ended, or since the model was loaded (``/health``,
        ``/livez``, ``/metrics`` and ``/`` do not count); 0 while the model loads, a request is open, or a
        transcription is queued or running."""
        scheduler = self.scheduler
        if not self.loaded.is_set():  # a slow model load is not idleness (--max-lifetime-h still applies)
            return 0.0
        with self._activity_lock:
            if self._open_requests > 0 or (
                scheduler is not None and (scheduler.busy or scheduler.queue_depth)
            ):
                return 0.0
            return time.monotonic() - self._last_activity

    @property
    def uptime_s(self) -> float:
        """Seconds since the application was created."""
        return time.monotonic() - self.started_at

    def stop(self) -> None:
        """Stop the scheduler (queued requests fail with 503) and run the shutdown hooks."""
        if self.scheduler is not None:
            self.scheduler.stop()
        for hook in self.shutdown_hooks:
            try:
                hook()
            except Exception as exc:
                logger.error("shutdown hook %r failed: %s", hook, exc)


def server_state(request: Request) -> ServerState:
    """The :class:`ServerState` of the application serving ``request``."""
    state: ServerState = request.app.state.server
    return state


def _queue_full(exc: QueueFullError) -> ApiError:
    return ApiError(
        429, str(exc), code="rate_limit_exceeded", headers={"Retry-After": str(exc.retry_after_s)}
    )


def _gpu_facts() -> GpuFacts:
    """Whether torch sees a CUDA GPU, and its memory; imports torch (the loader thread does it anyway)."""
    try:
        import torch
    except ImportError:
        return GpuFacts(available=False)
    if not torch.cuda.is_available():
        return GpuFacts(available=False)
    return GpuFacts(available=True, total_bytes=int(torch.cuda.get_device_properties(0).total_memory))


def _gpu_memory_used_bytes(state: ServerState) -> int | None:
    """``torch.cuda.memory_allocated()`` when the engine runs on CUDA, else ``None``."""
    info = getattr(state.engine, "info", None)
    if getattr(info, "device", None) != "cuda":
        return None
    import torch

    return int(torch.cuda.memory_allocated())


def _rss_bytes() -> int | None:
    """This process's resident memory in bytes, from ``/proc/self/statm`` (Linux), else ``None``."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


# --- the ASGI guard: key, size, counting ----------------------------------------------------------------


class UploadTooLargeError(StarletteHTTPException):
    """The body grew past ``max_upload_bytes`` while it was read (raised from the guarded ``receive``)."""

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(413, _too_large_message(limit_bytes))


def _too_large_message(limit_bytes: int) -> str:
    return (
        f"the upload is larger than this server's limit of {limit_bytes / 2**20:.1f} MiB "
        f"({limit_bytes} bytes); send a shorter or more compressed file, or start the server with a "
        "larger --max-upload-mb"
    )


class _Guard:
    """Pure ASGI middleware in front of every HTTP request.

    1. Without the bearer key (when one is set) on a non-public path: 401, the body unread.
    2. An authorized request to an API path holds the idle timer (``/health``, ``/livez``, ``/metrics``,
       ``/`` and anything refused for its key do not: a scanner or a monitor must not keep an idle
       machine up).
    3. ``Content-Length`` over ``max_upload_bytes``: 413, the body unread. Otherwise the body's chunks are
       counted as the application reads them; past the limit, reading raises :class:`UploadTooLargeError`
       (answered 413 by the exception handler, or here when it escapes before a response started).
    4. Counts the answer for ``/metrics`` by route template (``other`` for a path no route serves, so
       the label's values stay bounded) and status.
    """

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state
        self.key = state.config.api_key.encode() if state.config.api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._authorized(scope, receive, send_counted)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or _route_template(scope)
            self.state.metrics.requests.labels(route=template, status=str(status[0])).inc()

    async def _authorized(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        public = path in PUBLIC_PATHS or path.startswith("/static/")
        if self.key is not None and not public:
            given = ""
            for name, value in scope["headers"]:
                if name.lower() == b"authorization":
                    given = value.decode("latin-1")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                error = _auth_error("no API key given; send the header Authorization: Bearer KEY")
                await _send_error(scope, receive, send, error)
                return
            if not hmac.compare_digest(token.strip().encode(), self.key):
                await _send_error(scope, receive, send, _auth_error("incorrect API key provided"))
                return
        timed = not public and path not in UNTIMED_PATHS
        if timed:
            self.state.request_started()
        try:
            await self._limited(scope, receive, send)
        finally:
            if timed:
                self.state.request_ended()

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        limit = self.state.config.max_upload_bytes
        try:
            declared = int(headers["content-length"]) if "content-length" in headers else None
        except ValueError:
            declared = None
        if declared is not None and declared > limit:
            await _send_error(
                scope, receive, send, ApiError(413, _too_large_message(limit), code="upload_too_large")
            )
            return
        received = [0]
        started = [False]

        async def receive_counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                received[0] += len(message.get("body", b""))
                if received[0] > limit:
                    raise UploadTooLargeError(limit)
            return message

        async def send_tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                started[0] = True
            await send(message)

        try:
            await self.app(scope, receive_counted, send_tracked)
        except UploadTooLargeError:
            if started[0]:
                raise
            await _send_error(
                scope, receive, send, ApiError(413, _too_large_message(limit), code="upload_too_large")
            )
        except Exception as exc:  # a bug: one line in the log and a 500 in OpenAI's shape, no traceback spew
            if started[0]:
                raise
            error = ApiError(500, f"internal error ({type(exc).__name__}: {exc}); see the server log")
            logger.error("%s %s -> 500 unexpected %s: %s", scope.get("method"), path, type(exc).__name__, exc)
            logger.debug("the traceback of that 500", exc_info=exc)
            await error.response()(scope, receive, send)


def _route_template(scope: Scope) -> str:
    """The path when a route of the application serves it exactly, else ``other`` (requests answered
    before routing: 401, 413)."""
    app = scope.get("app")
    paths = {getattr(route, "path", None) for route in getattr(app, "routes", ())}
    path: str = scope["path"]
    return path if path in paths else "other"


def _auth_error(message: str) -> ApiError:
    return ApiError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


# --- uploads ------------------------------------------------------------------------------------------


def _spool_and_decode(source: Any, filename: str, upload_dir: Path | None) -> tuple[np.ndarray, float]:
    """Copy the upload to a temporary file (kept only while it is decoded) and decode it (blocking).

    Returns:
        ``(samples, decode_s)``: 1-D float32 16 kHz samples, and the seconds the copy and decoding took.

    Raises:
        AudioDecodeError: not decodable audio; the message names ``filename``, not the temporary path.
    """
    from remote.audio import decode_audio

    started = time.perf_counter()
    # The extension helps FFmpeg guess the format; only letters and digits of it reach the file system.
    suffix = "".join(c for c in Path(filename).suffix[:16] if c.isascii() and (c.isalnum() or c == "."))
    fd, tmp_path = tempfile.mkstemp(prefix="upload-", suffix=suffix, dir=upload_dir)
    try:
        with os.fdopen(fd, "wb") as handle:
            source.seek(0)
            shutil.copyfileobj(source, handle, 1024 * 1024)
        try:
            samples = decode_audio(tmp_path)
        except AudioDecodeError as exc:
            raise AudioDecodeError(str(exc).replace(tmp_path, filename or "the upload")) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp_path)
    return samples, time.perf_counter() - started


async def decode_upload(state: ServerState, upload: UploadFile, param: str) -> tuple[np.ndarray, float]:
    """Decode an uploaded file in a worker thread (never on the event loop).

    Args:
        state: the server state (its config's ``upload_dir``).
        upload: the multipart file part.
        param: the form field's name, named in errors.

    Returns:
        ``(samples, decode_s)`` as :func:`_spool_and_decode`.

    Raises:
        ApiError: 400 naming the problem (not audio, empty, truncated...).
    """
    filename = upload.filename or "upload"
    try:
        return await run_in_threadpool(_spool_and_decode, upload.file, filename, state.config.upload_dir)
    except AudioDecodeError as exc:
        raise ApiError(400, str(exc), param=param, code="invalid_audio") from None


async def wait_for(request: Request, ticket: Ticket) -> Transcript | None:
    """Wait for a ticket's transcript, checking every :data:`DISCONNECT_POLL_S` whether the client left.

    Returns:
        The transcript, or ``None`` when the client disconnected while the request waited in the queue (the
        request is then dropped and never transcribed; a running one is finished and its answer dropped).

    Raises:
        ApiError: the engine's error for this request: 400 for a bad option, 503 when shutting down, 500
            for a failure inside the model.
    """
    state = server_state(request)
    future = asyncio.wrap_future(ticket.future)
    dropped = False
    while True:
        try:
            done, _pending = await asyncio.wait({future}, timeout=DISCONNECT_POLL_S)
        except asyncio.CancelledError:  # the server is stopping, or the task was cancelled: leave the queue
            ticket.cancel()
            raise
        if done:
            break
        if not dropped and await request.is_disconnected():
            if ticket.cancel():
                state.metrics.dropped.inc()
                logger.warning(
                    "%s %s: the client disconnected while its request waited; dropped it",
                    request.method,
                    request.url.path,
                )
                return None
            dropped = True  # already running: let it finish, nobody reads the answer
    if future.cancelled():
        return None
    error = future.exception()
    if error is None:
        return future.result()
    if isinstance(error, ValueError):  # an option the engine refused (they are checked before, so rare)
        raise ApiError(400, str(error))
    if isinstance(error, SchedulerStoppedError):
        raise ApiError(503, str(error), code="shutting_down")
    logger.error("transcription failed: %s: %s", type(error).__name__, error)
    raise ApiError(500, f"the transcription failed: {error}", code=getattr(error, "code", "engine_error"))


def _options(language: str | None, task: str) -> TranscribeOptions:
    """Validated options: ``language`` ``None`` or empty means detect (OpenAI's default).

    Raises:
        ApiError: 400 for an unknown language.
    """
    try:
        return TranscribeOptions(language=language or "auto", task=task).validated()  # type: ignore[arg-type]
    except ValueError as exc:
        raise ApiError(400, str(exc).removeprefix("--language: "), param="language") from None


async def _transcribe(
    request: Request, upload: UploadFile, param: str, options: TranscribeOptions
) -> tuple[Transcript | None, float]:
    """Decode, queue and wait: ``(transcript or None if the client left, seconds since arrival)``."""
    state = server_state(request)
    started = time.perf_counter()
    scheduler = state.require_ready()
    if scheduler.queue_depth >= scheduler.max_queue:  # refuse before spending a thread on decoding
        retry_s = scheduler.retry_after_s()
        message = (
            f"the transcription queue is full ({scheduler.max_queue} requests waiting); retry in {retry_s} s"
        )
        raise _queue_full(QueueFullError(message, retry_s))
    samples, decode_s = await decode_upload(state, upload, param)
    ticket = state.submit(samples, options, audio=upload.filename or "upload", decode_s=decode_s)
    del samples
    transcript = await wait_for(request, ticket)
    elapsed_s = time.perf_counter() - started
    if transcript is not None:
        state.requests_served += 1
        state.metrics.audio_seconds.inc(transcript.duration_s)
        state.metrics.transcription_seconds.observe(elapsed_s)
    return transcript, elapsed_s


# --- the application -----------------------------------------------------------------------------------


def create_app(config: ServerConfig, load_engine: EngineLoader | None = None) -> FastAPI:
    """Build the application for ``config`` (checked with :meth:`ServerConfig.checked`).

    Args:
        config: the server's config.
        load_engine: loads the engine in the loader thread; default :func:`load_whisper_engine`. Tests pass
            one that returns an engine already loaded, or waits on an event first.

    Returns:
        The FastAPI application; its state is ``app.state.server`` (:class:`ServerState`). The model starts
        loading when the application starts (ASGI lifespan), in a thread, so ``/health`` answers meanwhile.

    Raises:
        ServerConfigError: the config is not usable.
    """
    config.checked()
    state = ServerState(config, load_engine or load_whisper_engine)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        loader = threading.Thread(target=state.load, name="model-loader", daemon=True)
        loader.start()
        for hook in state.startup_hooks:
            hook()
        from remote.server.run import PowerOffWatch

        watch = PowerOffWatch.for_state(state)
        if watch is not None:
            watch.start()
        try:
            yield
        finally:
            if watch is not None:
                watch.stop()
            await run_in_threadpool(state.stop)

    app = FastAPI(
        title="gpu-transcribe",
        summary="Whisper transcription: OpenAI's audio API on one loaded model",
        lifespan=lifespan,
    )
    app.state.server = state
    app.add_middleware(_Guard, state=state)
    _add_error_handlers(app)
    _add_routes(app)
    from remote.server.jobs_api import jobs_router  # here: jobs_api imports this module

    app.include_router(jobs_router(config))
    return app


def _add_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        _log_error(request.scope, exc)
        return exc.response()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed", 413: "upload_too_large"}.get(exc.status_code)
        error = ApiError(exc.status_code, str(exc.detail), code=code, headers=dict(exc.headers or {}))
        _log_error(request.scope, error)
        return error.response()

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = exc.errors()
        first = problems[0] if problems else {}
        loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
        param = loc[-1] if loc else None
        message = (
            f"{param}: {first.get('msg', 'invalid')}" if param else str(first.get("msg", "invalid request"))
        )
        error = ApiError(400, message.replace("Field required", "this field is required"), param=param)
        _log_error(request.scope, error)
        return error.response()

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)


# OpenAI's multipart fields, declared once for both audio routes.
FileField = Annotated[UploadFile, File(description="The audio file (any format FFmpeg reads).")]
ModelField = Annotated[str, Form(description="Any name (whisper-1); the loaded model answers.")]
LanguageField = Annotated[str | None, Form(description="ISO-639-1 code; omitted: detected.")]
PromptField = Annotated[str | None, Form(description="Accepted; this engine does not condition on it.")]
FormatField = Annotated[str, Form(description="json, text, srt, vtt or verbose_json.")]
TemperatureField = Annotated[
    float, Form(ge=0.0, le=1.0, description="Accepted (0..1); the engine uses OpenAI's fallback schedule.")
]
GranularitiesField = Annotated[
    list[str] | None, Form(alias="timestamp_granularities[]", description="segment (word is not supported).")
]
StreamField = Annotated[bool, Form(description="Streaming is not supported; false only.")]


def _add_routes(app: FastAPI) -> None:
    @app.get("/livez")
    async def livez() -> dict[str, str]:
        """Liveness: 200 while the process answers."""
        return {"status": "alive"}

    @app.get("/health")
    async def health(request: Request) -> Response:
        """Readiness: 200 once the model is loaded, 503 before (or when its load failed)."""
        state = server_state(request)
        info = getattr(state.engine, "info", None)
        body: dict[str, Any] = {
            "status": "ok" if state.ready else ("failed" if state.load_error else "loading"),
            "gpu_available": state.gpu.available,
            "model_loaded": state.ready,
            "model": state.config.model,
            "device": getattr(info, "device", None),
            "memory_usage": {
                "rss_bytes": _rss_bytes(),
                "gpu_allocated_bytes": _gpu_memory_used_bytes(state),
                "gpu_total_bytes": state.gpu.total_bytes,
            },
            "queue_depth": state.queue_depth,
            "requests_served": state.requests_served,
            "idle_s": round(state.idle_s, 3),
            "uptime_s": round(state.uptime_s, 3),
        }
        if state.load_error:
            body["error"] = state.load_error
        return JSONResponse(body, status_code=200 if state.ready else 503)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        """Prometheus text exposition of this application's registry."""
        registry = server_state(request).metrics.registry
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def openai_route(
        request: Request,
        task: str,
        file: UploadFile,
        language: str | None,
        response_format: str,
        granularities: list[str] | None,
        stream: bool,
    ) -> Response:
        if response_format not in RESPONSE_FORMATS:
            raise ApiError(
                400,
                f"response_format: {response_format!r} is not one of {', '.join(RESPONSE_FORMATS)}",
                param="response_format",
            )
        for granularity in granularities or ():
            if granularity == "word":
                raise ApiError(
                    400,
                    "timestamp_granularities[]: word timestamps are not supported by this server; "
                    "ask for segment (the default)",
                    param="timestamp_granularities[]",
                )
            if granularity != "segment":
                raise ApiError(
                    400,
                    f"timestamp_granularities[]: {granularity!r} is not one of segment, word",
                    param="timestamp_granularities[]",
                )
        if stream:
            raise ApiError(
                400, "stream: streaming is not supported by this server; send stream=false", "stream"
            )
        options = _options(language, task)
        transcript, _elapsed_s = await _transcribe(request, file, "file", options)
        if transcript is None:
            return Response(status_code=CLIENT_CLOSED_STATUS)
        body = openai_body(transcript, response_format, task)
        if response_format in TEXT_FORMATS:
            return PlainTextResponse(str(body))
        return JSONResponse(body)

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(
        request: Request,
        file: FileField,
        model: ModelField = "",
        language: LanguageField = None,
        prompt: PromptField = None,
        response_format: FormatField = "json",
        temperature: TemperatureField = 0.0,
        timestamp_granularities: GranularitiesField = None,
        stream: StreamField = False,
    ) -> Response:
        """OpenAI's transcription: the speech in its own language."""
        del model, prompt, temperature
        return await openai_route(
            request, "transcribe", file, language, response_format, timestamp_granularities, stream
        )

    @app.post("/v1/audio/translations")
    async def translations(
        request: Request,
        file: FileField,
        model: ModelField = "",
        language: LanguageField = None,
        prompt: PromptField = None,
        response_format: FormatField = "json",
        temperature: TemperatureField = 0.0,
        timestamp_granularities: GranularitiesField = None,
        stream: StreamField = False,
    ) -> Response:
        """OpenAI's translation: the speech translated into English."""
        del model, prompt, temperature
        return await openai_route(
            request, "translate", file, language, response_format, timestamp_granularities, stream
        )

    @app.post("/transcribe")
    async def transcribe(
        request: Request,
        audio: Annotated[UploadFile, File(description="The audio file (any format FFmpeg reads).")],
        language: LanguageField = None,
    ) -> Response:
        """The simple API: text, duration, language, model, timings and segments."""
        state = server_state(request)
        transcript, elapsed_s = await _transcribe(request, audio, "audio", _options(language, "transcribe"))
        if transcript is None:
            return Response(status_code=CLIENT_CLOSED_STATUS)
        return JSONResponse(
            transcribe_body(transcript, state.config.model, elapsed_s, _gpu_memory_used_bytes(state))
        )

    if INDEX_HTML.is_file():
        from fastapi.staticfiles import StaticFiles

        @app.get("/", include_in_schema=False)
        async def index() -> Response:
            """The web page (``static/index.html``)."""
            return FileResponse(INDEX_HTML, media_type="text/html")

        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
