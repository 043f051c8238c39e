"""The HTTP API of ``gpu-transcribe serve``: :func:`create_app` builds the FastAPI application.

One process, one model: the lifespan starts a thread that loads the engine (``/health`` answers 503 until it
is loaded, then 200), then a :class:`~gpu_transcribe_api.scheduler.BatchScheduler` whose one consumer thread
feeds it. Routes (the contract is ``docs/server.md``):

- ``POST /v1/audio/transcriptions``, ``POST /v1/audio/translations``: OpenAI's API (``formats.py``;
  ``stream=true``: ``streaming.py``).
- ``GET /v1/models``, ``GET /v1/models/{id}``: the loaded model and its alias ``whisper-1``
  (``models_api.py``).
- ``POST /transcribe``: multipart ``audio`` (or ``file``, OpenAI's name), a JSON body with timings.
- ``GET /health`` (readiness, 503 until loaded), ``GET /livez`` (liveness), ``GET /metrics`` (Prometheus,
  one registry per application), ``GET /`` (``static/index.html`` when it exists).

Every error is OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, with OpenAI's status
codes (FastAPI's own validation errors too, as 400), and one line in the log. A plain ASGI middleware checks
the bearer key (``hmac.compare_digest``) and the upload size (``Content-Length``, then counted chunks) before
any of the body is read, and counts requests for ``/metrics`` and the idle timer.

The routes live in module-level routers, one module per area, that :func:`create_app` includes (FastAPI's
"bigger applications" layout); they reach the shared state through dependencies
(:mod:`gpu_transcribe_api.dependencies`):

- :mod:`gpu_transcribe_api.health_api`: ``/livez``, ``/health``, ``/metrics`` and ``/``.
- :mod:`gpu_transcribe_api.audio_api`: OpenAI's audio routes and ``/transcribe``.
- :mod:`gpu_transcribe_api.models_api`: ``/v1/models``.
- :mod:`gpu_transcribe_api.jobs_api`: ``/v1/jobs`` (async jobs; the service behind them is
  :mod:`gpu_transcribe_api.job_service`).

The rest lives by concern: :mod:`gpu_transcribe_api.api_errors`
(:class:`~gpu_transcribe_api.api_errors.ApiError`, OpenAI's error shape, the exception handlers),
:mod:`gpu_transcribe_api.state` (:class:`~gpu_transcribe_api.state.ServerState`: config, engine, scheduler,
metrics, the idle timer), :mod:`gpu_transcribe_api.guard` (:class:`~gpu_transcribe_api.guard.Guard`, the
middleware: key, size, counting) and :mod:`gpu_transcribe_api.uploads` (decoding uploads, waiting for a
transcript while watching the client, the multipart fields).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from gpu_transcribe_api import audio_api, health_api, jobs_api, models_api
from gpu_transcribe_api.api_errors import add_error_handlers
from gpu_transcribe_api.config import ServerConfig
from gpu_transcribe_api.guard import Guard
from gpu_transcribe_api.job_service import JobService
from gpu_transcribe_api.power_off import PowerOffWatch
from gpu_transcribe_api.state import EngineLoader, ServerState, load_whisper_engine


def create_app(config: ServerConfig, load_engine: EngineLoader | None = None) -> FastAPI:
    """Build the application for ``config`` (checked with :meth:`ServerConfig.checked`).

    Args:
        config: the server's config.
        load_engine: loads the engine in the loader thread; default
            :func:`~gpu_transcribe_api.state.load_whisper_engine`. Tests pass
            one that returns an engine already loaded, or waits on an event first.

    Returns:
        The FastAPI application; its state is ``app.state.server``
        (:class:`~gpu_transcribe_api.state.ServerState`) and ``app.state.jobs``
        (:class:`~gpu_transcribe_api.job_service.JobService`). The model starts loading when the application
        starts (ASGI lifespan), in a thread, so ``/health`` answers meanwhile; the job service opens then
        too, and closes after the scheduler has stopped.

    Raises:
        ServerConfigError: the config is not usable.
    """
    config.checked()
    state = ServerState(config, load_engine or load_whisper_engine)
    jobs = JobService(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader = threading.Thread(target=state.load, name="model-loader", daemon=True)
        loader.start()
        for hook in state.startup_hooks:
            hook()
        watch = PowerOffWatch.for_state(state)
        if watch is not None:
            watch.start()
        try:
            await run_in_threadpool(jobs.open, state)
            app.state.jobs = jobs
            state.shutdown_hooks.append(jobs.close)
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
    app.add_middleware(Guard, state=state)
    add_error_handlers(app)
    app.include_router(health_api.router)
    app.include_router(audio_api.router)
    app.include_router(jobs_api.router)
    app.include_router(models_api.router)
    if health_api.INDEX_HTML.is_file():
        app.mount("/static", StaticFiles(directory=health_api.STATIC_DIR), name="static")
    return app
