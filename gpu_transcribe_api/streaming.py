"""Streamed transcriptions: ``stream=true`` on ``/v1/audio/transcriptions`` (and ``translations``) answers
OpenAI's server-sent events for streamed transcription.

The request is queued like any other, with an ``on_segments`` callback
(:data:`gpu_transcribe_engine.engine.SegmentsCallback`): the engine calls it on the scheduler's thread with
each decoded
window's segments, in time order, and :func:`stream_transcription` sends each segment's text as one
``{"type": "transcript.text.delta", "delta"}`` event as soon as it arrives, then
``{"type": "transcript.text.done", "text"}`` with the whole text once the transcript is complete. A piece
after the first starts with the space that joins it to the one before, so the deltas concatenated equal
``text``, which equals the ``json`` answer's ``text`` for the same audio.

Every check (format, upload, queue) is made before the response starts, so those errors keep their HTTP
status. An engine failure after that is one ``event: error`` whose data is OpenAI's error body (the official
client raises ``APIError`` with its message). When the client disconnects, Starlette cancels the response's
iterator; it then cancels the ticket, so the engine drops that request's windows not yet decoded (the other
requests of the same engine call go on).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.responses import StreamingResponse

from gpu_transcribe_api.api_errors import ApiError
from gpu_transcribe_api.scheduler import Ticket
from gpu_transcribe_api.state import ServerState, server_state
from gpu_transcribe_api.uploads import engine_error
from gpu_transcribe_engine.options import TranscribeOptions
from gpu_transcribe_engine.transcript import Segment, Transcript
from gpu_transcribe_engine.writers import sanitize

logger = logging.getLogger("gpu_transcribe_api")

SSE_MEDIA_TYPE = "text/event-stream"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
"""No caching, and no buffering by a reverse proxy (nginx), so each event reaches the client at once."""


def sse_event(data: dict[str, Any], event: str | None = None) -> bytes:
    """One server-sent event: an optional ``event:`` line, a ``data:`` line of compact JSON, a blank line."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


def delta_event(delta: str) -> bytes:
    """``transcript.text.delta`` carrying ``delta``."""
    return sse_event({"type": "transcript.text.delta", "delta": delta})


def done_event(text: str) -> bytes:
    """``transcript.text.done`` carrying the whole ``text``."""
    return sse_event({"type": "transcript.text.done", "text": text})


def error_event(error: ApiError) -> bytes:
    """``event: error`` with OpenAI's error body, ``{"error": {"message", "type", "param", "code"}}``."""
    body = {"message": error.message, "type": error.error_type, "param": error.param, "code": error.code}
    return sse_event({"error": body}, event="error")


async def stream_transcription(
    request: Request,
    samples: np.ndarray,
    options: TranscribeOptions,
    audio: str,
    decode_s: float,
    started: float,
) -> StreamingResponse:
    """Queue decoded audio and answer its transcript as server-sent events (see the module's docstring).

    Args:
        request: the HTTP request (its server state).
        samples: 1-D float32 16 kHz samples.
        options: checked options.
        audio: the upload's name, for the transcript and errors.
        decode_s: seconds spent decoding the upload.
        started: ``time.perf_counter()`` when the request arrived (for the metrics).

    Returns:
        A ``text/event-stream`` response.

    Raises:
        ApiError: 503 while the model loads or the server stops, 429 when the queue is full (before the
            response starts).
    """
    state = server_state(request)
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[list[Segment]] = asyncio.Queue()

    def on_segments(segments: list[Segment]) -> None:  # on the scheduler's thread
        with contextlib.suppress(RuntimeError):  # the event loop has closed: nobody listens
            loop.call_soon_threadsafe(pieces.put_nowait, segments)

    ticket = state.submit(samples, options, audio=audio, decode_s=decode_s, on_segments=on_segments)
    return StreamingResponse(
        _events(state, ticket, pieces, started), media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS
    )


async def _events(
    state: ServerState, ticket: Ticket, pieces: asyncio.Queue[list[Segment]], started: float
) -> AsyncIterator[bytes]:
    """The events of one streamed request; cancels its ticket when the client leaves (the iterator is
    cancelled or closed before the end)."""
    future: asyncio.Future[Any] = asyncio.wrap_future(ticket.future)
    sent: list[str] = []
    finished = False
    getter: asyncio.Future[Any] | None = None
    try:
        while not future.done():
            getter = asyncio.ensure_future(pieces.get())
            await asyncio.wait({getter, future}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                for chunk in _deltas(getter.result(), sent):
                    yield chunk
            else:
                getter.cancel()
            getter = None
        # Every callback was scheduled on the loop before the result was: what is queued is all there is.
        while not pieces.empty():
            for chunk in _deltas(pieces.get_nowait(), sent):
                yield chunk
        try:
            transcript = _result(future)
        except ApiError as error:
            finished = True
            yield error_event(error)
            return
        text = sanitize(transcript).text
        if not sent and text:  # an algorithm that gives its transcript whole (sequential)
            yield delta_event(text)
        finished = True
        _count(state, transcript, started)
        yield done_event(text)
    finally:
        if getter is not None:
            getter.cancel()
        if not finished and ticket.cancel():
            state.metrics.dropped.inc()
        if not finished:
            logger.warning("a streamed request's client disconnected; its remaining windows are dropped")


def _deltas(segments: list[Segment], sent: list[str]) -> list[bytes]:
    """Delta events for ``segments`` (white space runs collapsed as
    :func:`gpu_transcribe_engine.writers.sanitize` does;
    empty texts skipped); each text is appended to ``sent``."""
    out: list[bytes] = []
    for segment in segments:
        text = " ".join(segment.text.split())
        if text:
            out.append(delta_event(text if not sent else " " + text))
            sent.append(text)
    return out


def _result(future: asyncio.Future[Any]) -> Transcript:
    """The transcript, or the :class:`ApiError` for the engine's error (:func:`uploads.engine_error`)."""
    error = future.exception()
    if error is None:
        return future.result()
    raise engine_error(error)


def _count(state: ServerState, transcript: Transcript, started: float) -> None:
    """Record a served request in the metrics, as a synchronous answer is."""
    state.requests_served += 1
    state.metrics.audio_seconds.inc(transcript.duration_s)
    state.metrics.transcription_seconds.observe(time.perf_counter() - started)
