"""The synchronous transcription routes of ``gpu-transcribe serve``: OpenAI's
``POST /v1/audio/transcriptions`` and ``POST /v1/audio/translations`` (bodies:
:mod:`gpu_transcribe_api.formats`; ``stream=true``: :mod:`gpu_transcribe_api.streaming`), and the simple
``POST /transcribe`` (multipart ``audio``, or ``file`` as OpenAI names it; a JSON body with timings).

Each request is decoded in a worker thread, queued with the shared scheduler and awaited while the client
is watched (:mod:`gpu_transcribe_api.uploads`); a client that leaves gets nothing (status 499 in the log).
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, File, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from gpu_transcribe_api.api_errors import CLIENT_CLOSED_STATUS, ApiError
from gpu_transcribe_api.dependencies import StateDep
from gpu_transcribe_api.formats import (
    MEDIA_TYPES,
    STREAM_FORMATS,
    TEXT_FORMATS,
    openai_body,
    transcribe_body,
)
from gpu_transcribe_api.state import gpu_memory_used_bytes
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
    checked_format,
    checked_options,
    ready_and_decoded,
    transcribe_upload,
)

router = APIRouter()


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
    """Answer one OpenAI audio request for ``task`` (``transcribe`` or ``translate``).

    Raises:
        ApiError: 400 for a bad format, granularity, option or upload; 429 and 503 from the scheduler.
    """
    checked_format(response_format)
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


@router.post("/v1/audio/transcriptions")
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


@router.post("/v1/audio/translations")
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


@router.post("/transcribe")
async def transcribe(
    request: Request,
    state: StateDep,
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
