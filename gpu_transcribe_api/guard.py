"""The ASGI middleware in front of every HTTP request of ``gpu-transcribe serve``: :class:`Guard`.

A plain ASGI middleware (not ``BaseHTTPMiddleware``), so it decides before any of the body is read: it checks
the bearer key (``hmac.compare_digest``; :data:`PUBLIC_PATHS` need none), refuses an upload over the size
limit (``Content-Length``, then counted chunks), holds the idle timer while an API request is open
(:data:`UNTIMED_PATHS` do not), and counts every answer for ``/metrics``. Its errors are OpenAI's shape
(:mod:`gpu_transcribe_api.api_errors`).
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gpu_transcribe_api.api_errors import (
    ApiError,
    UploadTooLargeError,
    auth_error,
    send_error,
    too_large_message,
)

if TYPE_CHECKING:
    from gpu_transcribe_api.state import ServerState

logger = logging.getLogger("gpu_transcribe_api")

PUBLIC_PATHS = frozenset({"/livez", "/health", "/"})
"""Paths that need no key; ``/static/...`` neither."""
UNTIMED_PATHS = frozenset({"/livez", "/health", "/metrics", "/"})
"""Requests that do not reset the idle timer (monitoring must not keep an idle machine alive)."""


class Guard:
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
                error = auth_error("no API key given; send the header Authorization: Bearer KEY")
                await _drain_small_body(scope, receive)
                await send_error(scope, receive, send, error)
                return
            if not hmac.compare_digest(token.strip().encode(), self.key):
                await _drain_small_body(scope, receive)
                await send_error(scope, receive, send, auth_error("incorrect API key provided"))
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
            await send_error(
                scope, receive, send, ApiError(413, too_large_message(limit), code="upload_too_large")
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
            await send_error(
                scope, receive, send, ApiError(413, too_large_message(limit), code="upload_too_large")
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


#: The most request body read (and dropped) before a 401, bytes. A server that closes a connection with
#: request bytes still unread makes the kernel send a TCP reset, and a client still writing its upload then
#: sees "connection reset" instead of the 401; a small body is read first so the client gets the answer.
#: A larger or undeclared body is not read (an unauthenticated client does not get to upload it).
DRAIN_BEFORE_REFUSAL_BYTES = 4 * 1024 * 1024


async def _drain_small_body(scope: Scope, receive: Receive) -> None:
    """Read and drop the request body when its ``Content-Length`` is at most
    :data:`DRAIN_BEFORE_REFUSAL_BYTES`; nothing otherwise."""
    headers = {name.lower(): value for name, value in scope["headers"]}
    try:
        declared = int(headers.get(b"content-length", b""))
    except ValueError:
        return
    if not 0 < declared <= DRAIN_BEFORE_REFUSAL_BYTES:
        return
    received = 0
    while received < declared:
        message = await receive()
        if message["type"] != "http.request":
            return
        received += len(message.get("body", b""))
        if not message.get("more_body", False):
            return
