"""What every route of ``gpu-transcribe serve`` shares: :class:`ServerState` (``app.state.server``).

The state holds the config, the engine (loaded by :meth:`ServerState.load` in the lifespan's loader thread,
with the :data:`EngineLoader` given to ``create_app``; :func:`load_whisper_engine` by default), the
:class:`~gpu_transcribe_api.scheduler.BatchScheduler` in front of it, the Prometheus :class:`Metrics`, and the
activity count behind the idle timer. Routes get it with :func:`server_state`. The GPU and memory facts that
``/health`` and ``/transcribe`` report are here too (:func:`gpu_memory_used_bytes`, :func:`rss_bytes`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gpu_transcribe_api.api_errors import ApiError, queue_full
from gpu_transcribe_api.config import ServerConfig
from gpu_transcribe_api.scheduler import BatchScheduler, QueueFullError, SchedulerStoppedError, Ticket
from gpu_transcribe_engine.engine import SegmentsCallback
from gpu_transcribe_engine.errors import EngineFailure
from gpu_transcribe_engine.options import TranscribeOptions

logger = logging.getLogger("gpu_transcribe_api")

LOADING_RETRY_AFTER_S = 10
"""``Retry-After`` on 503 while the model loads (whisper-small loads in about 10 s from a local disk)."""

EngineLoader = Callable[[ServerConfig], Any]
"""Loads the engine for a config (blocking; runs in the loader thread); returns a ``WhisperEngine``, or any
object with its ``transcribe_many`` and ``info``."""


def load_whisper_engine(config: ServerConfig) -> Any:
    """The default :data:`EngineLoader`: :meth:`gpu_transcribe_engine.engine.WhisperEngine.load` with the
    config's model,
    revision, device and decoding loop
    (:func:`gpu_transcribe_engine.compiled_decoding.resolve_decode_loop`).

    Raises:
        ModelLoadError: the model cannot be found or loaded.
        ValueError: the device is unknown, or ``cuda`` without a GPU; ``compiled`` off the fast path.
    """
    from gpu_transcribe_engine.engine import WhisperEngine

    return WhisperEngine.load(
        config.model,
        revision=config.revision,
        device=config.device,
        decode_loop=config.decode_loop,
    )


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
        created_unix_s: Unix seconds at creation (the ``created`` of ``GET /v1/models``).
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
        self.created_unix_s = int(time.time())
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

    def submit(
        self,
        samples: np.ndarray,
        options: TranscribeOptions,
        audio: str,
        decode_s: float,
        on_segments: SegmentsCallback | None = None,
    ) -> Ticket:
        """Queue decoded audio with the scheduler (``on_segments``: see :meth:`BatchScheduler.submit`).

        Raises:
            ApiError: 503 while the model loads or is stopping; 429 with ``Retry-After`` when the queue
                is full.
        """
        scheduler = self.require_ready()
        try:
            return scheduler.submit(samples, options, audio=audio, decode_s=decode_s, on_segments=on_segments)
        except QueueFullError as exc:
            raise queue_full(exc) from None
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


def _gpu_facts() -> GpuFacts:
    """Whether torch sees a CUDA GPU, and its memory; imports torch (the loader thread does it anyway)."""
    try:
        import torch
    except ImportError:
        return GpuFacts(available=False)
    if not torch.cuda.is_available():
        return GpuFacts(available=False)
    return GpuFacts(available=True, total_bytes=int(torch.cuda.get_device_properties(0).total_memory))


def gpu_memory_used_bytes(state: ServerState) -> int | None:
    """``torch.cuda.memory_allocated()`` when the engine runs on CUDA, else ``None``."""
    info = getattr(state.engine, "info", None)
    if getattr(info, "device", None) != "cuda":
        return None
    import torch

    return int(torch.cuda.memory_allocated())


def rss_bytes() -> int | None:
    """This process's resident memory in bytes, from ``/proc/self/statm`` (Linux), else ``None``."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
