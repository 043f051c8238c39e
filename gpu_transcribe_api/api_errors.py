"""OpenAI's error shape for ``gpu-transcribe serve``: :class:`ApiError` and the answers built from it.

Every error the server answers is ``{"error": {"message", "type", "param", "code"}}`` with OpenAI's status
codes, and one line in the log (:func:`log_error`). This module holds the exception, the ready-made errors
(401 for the key, 413 for the upload size, 429 for a full queue) and :func:`add_error_handlers`, which makes
FastAPI's own errors (404, 405, validation as 400) take the same shape. The ASGI guard
(:mod:`gpu_transcribe_api.guard`) answers with :func:`send_error` before any route runs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

if TYPE_CHECKING:
    from gpu_transcribe_api.scheduler import QueueFullError

logger = logging.getLogger("gpu_transcribe_api")

CLIENT_CLOSED_STATUS = 499
"""nginx's status for a client that closed the connection before the answer (logged and counted only)."""


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


def log_error(scope: Scope, error: ApiError) -> None:
    """The one log line of an error answer: method, path, status, message."""
    logger.warning(
        "%s %s -> %d %s", scope.get("method", "?"), scope.get("path", "?"), error.status_code, error
    )


async def send_error(scope: Scope, receive: Receive, send: Send, error: ApiError) -> None:
    """Log ``error`` and answer it straight over ASGI (for middleware, before any route runs)."""
    log_error(scope, error)
    await error.response()(scope, receive, send)


class UploadTooLargeError(StarletteHTTPException):
    """The body grew past ``max_upload_bytes`` while it was read (raised from the guarded ``receive``)."""

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(413, too_large_message(limit_bytes))


def too_large_message(limit_bytes: int) -> str:
    """The 413 message: the limit in MiB and bytes, and what to do."""
    return (
        f"the upload is larger than this server's limit of {limit_bytes / 2**20:.1f} MiB "
        f"({limit_bytes} bytes); send a shorter or more compressed file, or start the server with a "
        "larger --max-upload-mb"
    )


def auth_error(message: str) -> ApiError:
    """401 ``invalid_api_key`` with ``WWW-Authenticate: Bearer``."""
    return ApiError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def queue_full(exc: QueueFullError) -> ApiError:
    """429 ``rate_limit_exceeded`` with the scheduler's ``Retry-After``."""
    return ApiError(
        429, str(exc), code="rate_limit_exceeded", headers={"Retry-After": str(exc.retry_after_s)}
    )


def add_error_handlers(app: FastAPI) -> None:
    """Answer :class:`ApiError`, Starlette's HTTP errors and FastAPI's validation errors (as 400) in
    OpenAI's shape, each with one log line."""

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        log_error(request.scope, exc)
        return exc.response()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed", 413: "upload_too_large"}.get(exc.status_code)
        error = ApiError(exc.status_code, str(exc.detail), code=code, headers=dict(exc.headers or {}))
        log_error(request.scope, error)
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
        log_error(request.scope, error)
        return error.response()

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
