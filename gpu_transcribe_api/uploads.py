"""From an uploaded file to a transcript, for the routes of ``gpu-transcribe serve``.

:func:`decode_upload` spools the multipart file to a temporary file and decodes it in a worker thread (never
on the event loop); :func:`checked_format` checks ``response_format``; :func:`checked_options` turns the
form's ``language`` and the route's task into checked options; :func:`wait_for` awaits a queued request's
transcript, polling every :data:`DISCONNECT_POLL_S` whether the client left (a request still queued is then
dropped); :func:`transcribe_upload` decodes, queues and waits for a synchronous route. The multipart fields
shared by the routes (``FileField``...) are declared here once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import File, Form, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from gpu_transcribe_api.api_errors import ApiError, queue_full
from gpu_transcribe_api.formats import RESPONSE_FORMATS
from gpu_transcribe_api.scheduler import BatchScheduler, QueueFullError, SchedulerStoppedError, Ticket
from gpu_transcribe_api.state import ServerState, server_state
from gpu_transcribe_engine.errors import AudioDecodeError
from gpu_transcribe_engine.options import TranscribeOptions
from gpu_transcribe_engine.transcript import Transcript

logger = logging.getLogger("gpu_transcribe_api")

DISCONNECT_POLL_S = 0.25
"""How often a waiting request checks whether its client is still connected."""

# OpenAI's multipart fields, declared once for the audio routes (app.py) and POST /v1/jobs (jobs_api.py).
FileField = Annotated[UploadFile, File(description="The audio file (any format FFmpeg reads).")]
ModelField = Annotated[str, Form(description="Any name (whisper-1); the loaded model answers.")]
LanguageField = Annotated[str | None, Form(description="ISO-639-1 code; omitted: detected.")]
PromptField = Annotated[
    str | None, Form(description="Text that conditions the decoding (names, jargon, spelling); optional.")
]
FormatField = Annotated[str, Form(description="json, text, srt, vtt or verbose_json.")]
TemperatureField = Annotated[
    float, Form(ge=0.0, le=1.0, description="Accepted (0..1); the engine uses OpenAI's fallback schedule.")
]
GranularitiesField = Annotated[
    list[str] | None,
    Form(alias="timestamp_granularities[]", description="segment and/or word (verbose_json gains words)."),
]
MaxLineWidthField = Annotated[
    int | None, Form(description="srt/vtt: characters per subtitle line (default 42 when a limit is set).")
]
MaxLineCountField = Annotated[
    int | None, Form(description="srt/vtt: lines per subtitle cue (default 2 when a limit is set).")
]
WordTimestampsField = Annotated[bool, Form(description="Time every word: segments gain words.")]
GranularitiesPlainField = Annotated[
    list[str] | None, Form(alias="timestamp_granularities", description="The same, spelled without [].")
]
StreamField = Annotated[
    bool, Form(description="true: server-sent events (response_format json or text; docs/server.md).")
]


def _spool_and_decode(source: Any, filename: str, upload_dir: Path | None) -> tuple[np.ndarray, float]:
    """Copy the upload to a temporary file (kept only while it is decoded) and decode it (blocking).

    Returns:
        ``(samples, decode_s)``: 1-D float32 16 kHz samples, and the seconds the copy and decoding took.

    Raises:
        AudioDecodeError: not decodable audio; the message names ``filename``, not the temporary path.
    """
    from gpu_transcribe_engine.audio import decode_audio

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
        The transcript, or ``None`` when the client disconnected (a request still queued is dropped and
        never transcribed; a running one stops after the batch decoding now, its other windows dropped).

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
            dropped = True  # running: the engine stops it after its current batch; nobody reads the answer
            logger.warning(
                "%s %s: the client disconnected during its transcription; its remaining windows are dropped",
                request.method,
                request.url.path,
            )
    if future.cancelled() or dropped:
        return None
    error = future.exception()
    if error is None:
        return future.result()
    raise engine_error(error)


def engine_error(error: BaseException) -> ApiError:
    """The :class:`ApiError` for the error the engine (or scheduler) gave a request: 400 for a bad option
    (they are checked before, so rare), 503 when shutting down, 500 for a model failure (logged)."""
    if isinstance(error, ValueError):
        return ApiError(400, str(error))
    if isinstance(error, SchedulerStoppedError):
        return ApiError(503, str(error), code="shutting_down")
    logger.error("transcription failed: %s: %s", type(error).__name__, error)
    return ApiError(500, f"the transcription failed: {error}", code=getattr(error, "code", "engine_error"))


def checked_format(response_format: str) -> str:
    """``response_format`` if OpenAI knows it (:data:`~gpu_transcribe_api.formats.RESPONSE_FORMATS`).

    Raises:
        ApiError: 400 naming ``response_format`` and the formats there are.
    """
    if response_format not in RESPONSE_FORMATS:
        raise ApiError(
            400,
            f"response_format: {response_format!r} is not one of {', '.join(RESPONSE_FORMATS)}",
            param="response_format",
        )
    return response_format


def checked_options(
    language: str | None,
    task: str,
    prompt: str | None = None,
    word_timestamps: bool = False,
    max_line_width: int | None = None,
    max_line_count: int | None = None,
) -> TranscribeOptions:
    """Validated options: ``language`` ``None`` or empty means detect (OpenAI's default).

    Raises:
        ApiError: 400 for an unknown language, a prompt too long or a subtitle limit out of range; ``param``
            names the form field.
    """
    try:
        return TranscribeOptions(
            language=language or "auto",
            task=task,  # type: ignore[arg-type]
            prompt=prompt or None,
            word_timestamps=word_timestamps,
            max_line_width=max_line_width,
            max_line_count=max_line_count,
        ).validated()
    except ValueError as exc:
        flag, _, reason = str(exc).partition(": ")
        raise ApiError(400, reason, param=flag.removeprefix("--").replace("-", "_")) from None


def ready_with_room(state: ServerState) -> BatchScheduler:
    """The scheduler, when the model is loaded and its queue has room for one more request.

    Raises:
        ApiError: 503 while the model loads (or after it failed to), 429 with ``Retry-After`` when the
            queue is full.
    """
    scheduler = state.require_ready()
    if scheduler.queue_depth >= scheduler.max_queue:
        retry_s = scheduler.retry_after_s()
        message = (
            f"the transcription queue is full ({scheduler.max_queue} requests waiting); retry in {retry_s} s"
        )
        raise queue_full(QueueFullError(message, retry_s))
    return scheduler


async def ready_and_decoded(request: Request, upload: UploadFile, param: str) -> tuple[np.ndarray, float]:
    """Check that the server can take the request (model loaded, queue not full), then decode the upload.

    Returns:
        ``(samples, decode_s)`` as :func:`decode_upload`.

    Raises:
        ApiError: 503 while the model loads, 429 when the queue is full (before any decoding), 400 for an
            upload that is not audio.
    """
    state = server_state(request)
    ready_with_room(state)  # refuse before spending a thread on decoding
    return await decode_upload(state, upload, param)


async def transcribe_upload(
    request: Request, upload: UploadFile, param: str, options: TranscribeOptions
) -> tuple[Transcript | None, float]:
    """Decode, queue and wait: ``(transcript or None if the client left, seconds since arrival)``."""
    state = server_state(request)
    started = time.perf_counter()
    samples, decode_s = await ready_and_decoded(request, upload, param)
    ticket = state.submit(samples, options, audio=upload.filename or "upload", decode_s=decode_s)
    del samples
    transcript = await wait_for(request, ticket)
    elapsed_s = time.perf_counter() - started
    if transcript is not None:
        state.requests_served += 1
        state.metrics.audio_seconds.inc(transcript.duration_s)
        state.metrics.transcription_seconds.observe(elapsed_s)
    return transcript, elapsed_s
