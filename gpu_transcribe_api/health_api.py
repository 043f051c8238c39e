"""The monitoring routes of ``gpu-transcribe serve`` and its web page: ``GET /livez`` (liveness),
``GET /health`` (readiness: 503 until the model is loaded), ``GET /metrics`` (Prometheus, one registry per
application) and ``GET /`` (``static/index.html``, when it exists; :func:`gpu_transcribe_api.app.create_app`
mounts the rest of ``static/`` at ``/static``).

These paths need no key, except ``/metrics``, and do not reset the idle timer
(:data:`gpu_transcribe_api.guard.PUBLIC_PATHS`, :data:`~gpu_transcribe_api.guard.UNTIMED_PATHS`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gpu_transcribe_api.dependencies import StateDep
from gpu_transcribe_api.state import gpu_memory_used_bytes, rss_bytes

STATIC_DIR = Path(__file__).parent / "static"
INDEX_HTML = STATIC_DIR / "index.html"

router = APIRouter()


@router.get("/livez")
async def livez() -> dict[str, str]:
    """Liveness: 200 while the process answers."""
    return {"status": "alive"}


@router.get("/health")
async def health(state: StateDep) -> Response:
    """Readiness: 200 once the model is loaded, 503 before (or when its load failed)."""
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


@router.get("/metrics")
async def metrics(state: StateDep) -> Response:
    """Prometheus text exposition of this application's registry."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


if INDEX_HTML.is_file():

    @router.get("/", include_in_schema=False)
    async def index() -> Response:
        """The web page (``static/index.html``)."""
        return FileResponse(INDEX_HTML, media_type="text/html")
