"""Run the server: :func:`serve` (uvicorn in this process, one worker) with :func:`log_config`; the idle and
lifetime power-off is :class:`gpu_transcribe_api.power_off.PowerOffWatch`, started by the application.

One worker on purpose: each uvicorn worker would load its own copy of the model; batching in one process is
what uses the GPU well (``gpu_transcribe_api.scheduler``).
"""

from __future__ import annotations

import logging
import logging.config
import threading
import time
from typing import TYPE_CHECKING, Any

from gpu_transcribe_api.config import ServerConfig
from gpu_transcribe_engine.errors import ModelLoadError

if TYPE_CHECKING:
    from gpu_transcribe_api.state import ServerState

logger = logging.getLogger("gpu_transcribe_api")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_config() -> dict[str, Any]:
    """``logging.config.dictConfig`` for ``serve``: every line on stderr with a time stamp (uvicorn's access
    lines too, which uvicorn sends to stdout by default), the ``gpu_transcribe_api`` and
    ``gpu_transcribe_engine`` loggers at INFO."""
    stderr = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": LOG_FORMAT},
            "access": {
                "()": "uvicorn.logging.AccessFormatter",
                "fmt": '%(asctime)s %(levelname)s access: %(client_addr)s "%(request_line)s" %(status_code)s',
                "use_colors": False,
            },
        },
        "handlers": {"plain": {**stderr, "formatter": "plain"}, "access": {**stderr, "formatter": "access"}},
        "loggers": {
            "uvicorn": {"handlers": ["plain"], "level": "INFO", "propagate": False},
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
            "gpu_transcribe_api": {"handlers": ["plain"], "level": "INFO", "propagate": False},
            "gpu_transcribe_engine": {"handlers": ["plain"], "level": "INFO", "propagate": False},
        },
    }


def serve(config: ServerConfig) -> None:
    """Run the server for ``config`` in this process until SIGINT or SIGTERM (uvicorn's handlers: it shuts
    down cleanly, then re-raises the signal, so the process ends with the signal's status).

    Logs go to stderr (:func:`log_config`): uvicorn's access lines, the model load, one line per error.

    Raises:
        ServerConfigError: the config is not usable (checked before anything starts).
        ModelLoadError: the model failed to load; the server stops (exit) instead of answering 503 forever.
    """
    config.checked()
    logging.config.dictConfig(log_config())
    from gpu_transcribe_engine.engine import quiet_library_output

    quiet_library_output()
    import uvicorn

    from gpu_transcribe_api.app import create_app

    app = create_app(config)
    state: ServerState = app.state.server
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.bind,
            port=config.port,
            workers=1,
            log_config=log_config(),
            timeout_graceful_shutdown=30,
        )
    )

    def stop_when_load_fails() -> None:
        state.loaded.wait()
        if state.load_error is not None:
            server.should_exit = True

    threading.Thread(target=stop_when_load_fails, name="load-watch", daemon=True).start()
    started = time.monotonic()
    server.run()
    if state.load_error is not None:
        raise ModelLoadError(f"the model failed to load: {state.load_error}")
    logger.info("server stopped after %.0f s", time.monotonic() - started)
