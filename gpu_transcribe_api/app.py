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

This module keeps the application, its lifespan and its routes; the rest lives by concern:

- :mod:`gpu_transcribe_api.api_errors`: :class:`~gpu_transcribe_api.api_errors.ApiError`, OpenAI's error
shape, the
  ready-made errors (401, 413, 429) and the exception handlers.
- :mod:`gpu_transcribe_api.state`: :class:`~gpu_transcribe_api.state.ServerState` (config, engine, scheduler,
  metrics, the idle timer), :func:`~gpu_transcribe_api.state.server_state` and the engine loader.
- :mod:`gpu_transcribe_api.guard`: :class:`~gpu_transcribe_api.guard.Guard`, the middleware (key, size,
counting).
- :mod:`gpu_transcribe_api.uploads`: decoding uploads (:func:`~gpu_transcribe_api.uploads.decode_upload`),
waiting
  for a transcript while watching the client (:func:`~gpu_transcribe_api.uploads.wait_for`), and the multipart
  fields.

More routers (async jobs, :mod:`gpu_transcribe_api.jobs_api`) are added with ``app.include_router(router)``;
they
reach the shared state with :func:`~gpu_transcribe_api.state.server_state` and reuse
:func:`~gpu_transcribe_api.uploads.decode_upload`, :meth:`~gpu_transcribe_api.state.ServerState.submit` and
:class:`~gpu_transcribe_api.api_errors.ApiError`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from gpu_transcribe_api.api_errors import CLIENT_CLOSED_STATUS, ApiError, add_error_handlers
from gpu_transcribe_api.config import ServerConfig
from gpu_transcribe_api.formats import (
    MEDIA_TYPES,
    RESPONSE_FORMATS,
    STREAM_FORMATS,
    TEXT_FORMATS,
    openai_body,
    transcribe_body,
)
from gpu_transcribe_api.guard import Guard
from gpu_transcribe_api.jobs_api import jobs_router
from gpu_transcribe_api.models_api import models_router
from gpu_transcribe_api.state import (
    EngineLoader,
    ServerState,
    gpu_memory_used_bytes,
    load_whisper_engine,
    rss_bytes,
    server_state,
)
from gpu_transcribe_api.streaming import stream_transcription
from gpu_transcribe_api.uploads import (
    FileField,
    FormatField,
    GranularitiesField,
    GranularitiesPlainField,
    LanguageField,
    MaxLineCountField,
    MaxLineWidthField,
    ModelField,
    PromptField,
    StreamField,
    TemperatureField,
    WordTimestampsField,
    checked_options,
    ready_and_decoded,
    transcribe_upload,
)

STATIC_DIR = Path(__file__).parent / "static"
INDEX_HTML = STATIC_DIR / "index.html"


# --- the application -----------------------------------------------------------------------------------


def create_app(config: ServerConfig, load_engine: EngineLoader | None = None) -> FastAPI:
    """Build the application for ``config`` (checked with :meth:`ServerConfig.checked`).

    Args:
        config: the server's config.
        load_engine: loads the engine in the loader thread; default
            :func:`~gpu_transcribe_api.state.load_whisper_engine`. Tests pass
            one that returns an engine already loaded, or waits on an event first.

    Returns:
        The FastAPI application; its state is ``app.state.server``
        (:class:`~gpu_transcribe_api.state.ServerState`). The model starts
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
        from gpu_transcribe_api.run import PowerOffWatch

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
    app.add_middleware(Guard, state=state)
    add_error_handlers(app)
    _add_routes(app)
    app.include_router(jobs_router(config))
    app.include_router(models_router(config))
    return app


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
                "rss_bytes": rss_bytes(),
                "gpu_allocated_bytes": gpu_memory_used_bytes(state),
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
        prompt: str | None = None,
        max_line_width: int | None = None,
        max_line_count: int | None = None,
    ) -> Response:
        if response_format not in RESPONSE_FORMATS:
            raise ApiError(
                400,
                f"response_format: {response_format!r} is not one of {', '.join(RESPONSE_FORMATS)}",
                param="response_format",
            )
        # Timestamp granularities shape verbose_json only (OpenAI's documentation); other formats ignore them.
        for granularity in granularities or ():
            if granularity not in ("segment", "word"):
                raise ApiError(
                    400,
                    f"timestamp_granularities[]: {granularity!r} is not one of segment, word",
                    param="timestamp_granularities[]",
                )
        if stream and response_format not in STREAM_FORMATS:
            raise ApiError(
                400,
                f"stream: response_format {response_format!r} cannot be streamed; send stream=false, or "
                f"response_format {' or '.join(STREAM_FORMATS)}",
                param="stream",
            )
        words = "word" in (granularities or ()) and response_format == "verbose_json"
        options = checked_options(language, task, prompt, words, max_line_width, max_line_count)
        if stream:
            started = time.perf_counter()
            samples, decode_s = await ready_and_decoded(request, file, "file")
            return await stream_transcription(
                request, samples, options, file.filename or "upload", decode_s, started
            )
        transcript, _elapsed_s = await transcribe_upload(request, file, "file", options)
        if transcript is None:
            return Response(status_code=CLIENT_CLOSED_STATUS)
        body = openai_body(transcript, response_format, task)
        if response_format in TEXT_FORMATS:
            return PlainTextResponse(str(body), media_type=MEDIA_TYPES[response_format])
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
        timestamp_granularities_plain: GranularitiesPlainField = None,
        stream: StreamField = False,
        max_line_width: MaxLineWidthField = None,
        max_line_count: MaxLineCountField = None,
    ) -> Response:
        """OpenAI's transcription: the speech in its own language."""
        del model, temperature
        granularities = [*(timestamp_granularities or ()), *(timestamp_granularities_plain or ())]
        return await openai_route(
            request,
            "transcribe",
            file,
            language,
            response_format,
            granularities,
            stream,
            prompt,
            max_line_width,
            max_line_count,
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
        timestamp_granularities_plain: GranularitiesPlainField = None,
        stream: StreamField = False,
        max_line_width: MaxLineWidthField = None,
        max_line_count: MaxLineCountField = None,
    ) -> Response:
        """OpenAI's translation: the speech translated into English."""
        del model, temperature
        granularities = [*(timestamp_granularities or ()), *(timestamp_granularities_plain or ())]
        return await openai_route(
            request,
            "translate",
            file,
            language,
            response_format,
            granularities,
            stream,
            prompt,
            max_line_width,
            max_line_count,
        )

    @app.post("/transcribe")
    async def transcribe(
        request: Request,
        audio: Annotated[
            UploadFile | None,
            File(description="The audio file (any format FFmpeg reads); or send it as `file`."),
        ] = None,
        file: Annotated[
            UploadFile | None,
            File(description="The audio file under OpenAI's field name (instead of `audio`)."),
        ] = None,
        language: LanguageField = None,
        prompt: PromptField = None,
        word_timestamps: WordTimestampsField = False,
    ) -> Response:
        """The simple API: text, duration, language, model, timings and segments (with words if asked). The
        audio comes as the multipart field ``audio``, or ``file`` as in OpenAI's API (one of them)."""
        state = server_state(request)
        if audio is None and file is None:
            raise ApiError(
                400, "audio: this field is required (the audio file; `file` also works)", param="audio"
            )
        if audio is not None and file is not None:
            raise ApiError(400, "audio and file: send the audio file once, as one of them", param="file")
        upload, param = (audio, "audio") if audio is not None else (file, "file")
        assert upload is not None  # one of the two, checked above
        options = checked_options(language, "transcribe", prompt, word_timestamps)
        transcript, elapsed_s = await transcribe_upload(request, upload, param, options)
        if transcript is None:
            return Response(status_code=CLIENT_CLOSED_STATUS)
        return JSONResponse(
            transcribe_body(transcript, state.config.model, elapsed_s, gpu_memory_used_bytes(state))
        )

    if INDEX_HTML.is_file():
        from fastapi.staticfiles import StaticFiles

        @app.get("/", include_in_schema=False)
        async def index() -> Response:
            """The web page (``static/index.html``)."""
            return FileResponse(INDEX_HTML, media_type="text/html")

        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
