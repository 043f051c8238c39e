"""Async jobs over HTTP: ``POST /v1/jobs`` and ``GET /v1/jobs/{id}`` (docs/server.md), for files too long
to hold a request open (gateways time out, and OpenAI's client retries a request after 600 s).

:data:`router` is the module-level ``APIRouter`` that :func:`gpu_transcribe_api.app.create_app` includes; its
routes reach the :class:`~gpu_transcribe_api.job_service.JobService` (store, webhook sender, decode threads)
and the server state through dependencies (:mod:`gpu_transcribe_api.dependencies`).

A job's life:

1. ``POST /v1/jobs``: the options are checked (400; a ``callback_url`` whose host resolves to a non-public
   address without ``--allow-private-callbacks`` too), a full queue answers 429 with ``Retry-After`` and a
   model still loading 503, exactly as the synchronous routes do. Jobs accepted and not finished are bounded
   (:meth:`~gpu_transcribe_api.job_service.JobService.reserve`): beyond ``max_pending_jobs`` of them or
   ``max_pending_bytes`` of their uploads, 429 with ``Retry-After``; when storing the upload would leave less
   than ``min_free_disk_bytes`` free in the jobs directory, 507. Then the upload is stored in the job's
   directory and the answer is 202 ``{"id", "status": "queued"}`` with ``Location: /v1/jobs/{id}``.
2. A worker thread (:data:`~gpu_transcribe_api.job_service.DECODE_WORKERS` of them) decodes the upload, marks
   the job ``running`` with the audio's duration and submits it to the same
   :class:`~gpu_transcribe_api.scheduler.BatchScheduler` as the synchronous requests, so jobs share the
   engine's batches. If the queue has filled up meanwhile, the thread waits the scheduler's ``Retry-After``
   and submits again (the job was accepted; it is not dropped).
3. When the scheduler's future completes, the transcript is stored (or the error, one line), the upload is
   removed and, with a ``callback_url``, a signed ``job.succeeded``/``job.failed`` webhook is queued.
4. ``GET /v1/jobs/{id}`` renders the stored transcript in any response format until the job expires
   (``job_ttl_s`` after it finished); then, as for an unknown id, 404.

While a job is accepted and unfinished, and while its webhook is being delivered, the server counts as busy
for the idle power-off (:meth:`~gpu_transcribe_api.state.ServerState.request_started`).

The webhook signing secret: see :mod:`gpu_transcribe_api.job_service`.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from gpu_transcribe_api.api_errors import ApiError
from gpu_transcribe_api.dependencies import JobsDep, StateDep
from gpu_transcribe_api.formats import openai_body
from gpu_transcribe_api.job_service import JOBS_PATH
from gpu_transcribe_api.jobs import JobStoreError
from gpu_transcribe_api.uploads import (
    FileField,
    FormatField,
    GranularitiesField,
    LanguageField,
    MaxLineCountField,
    MaxLineWidthField,
    ModelField,
    PromptField,
    TemperatureField,
    checked_format,
    checked_options,
    ready_with_room,
)
from gpu_transcribe_api.webhooks import check_callback_url

logger = logging.getLogger("gpu_transcribe_api.jobs")

CallbackField = Annotated[
    str | None, Form(description="http(s) URL that gets a signed job.succeeded or job.failed webhook.")
]

router = APIRouter(tags=["jobs"])


def _not_found(job_id: str, ttl_s: float) -> ApiError:
    return ApiError(
        404,
        f"no job {job_id!r}: it does not exist, or it expired (finished jobs are kept {ttl_s / 3600:g} h)",
        param="id",
        code="job_not_found",
    )


@router.post(JOBS_PATH, status_code=202)
async def create_job(
    service: JobsDep,
    state: StateDep,
    file: FileField,
    model: ModelField = "",
    language: LanguageField = None,
    prompt: PromptField = None,
    response_format: FormatField = "json",
    temperature: TemperatureField = 0.0,
    callback_url: CallbackField = None,
    timestamp_granularities: GranularitiesField = None,
    max_line_width: MaxLineWidthField = None,
    max_line_count: MaxLineCountField = None,
) -> Response:
    """Accept a transcription to run in the background: 202 ``{"id", "status"}``."""
    del model
    config = state.config
    checked_format(response_format)
    word_timestamps = "word" in (timestamp_granularities or ())
    checked_options(language, "transcribe", prompt, word_timestamps, max_line_width, max_line_count)
    if callback_url:
        try:  # resolves the host: not on the event loop
            callback_url = await run_in_threadpool(
                check_callback_url, callback_url, config.allow_private_callbacks
            )
        except ValueError as exc:
            raise ApiError(400, str(exc), param="callback_url") from None
    scheduler = ready_with_room(state)
    assert service.store is not None
    options: dict[str, Any] = {
        "language": language or None,
        "prompt": prompt,
        "word_timestamps": word_timestamps,
        "max_line_width": max_line_width,
        "max_line_count": max_line_count,
        "response_format": response_format,
        "temperature": temperature,
    }
    size_bytes = file.size if file.size is not None else file.file.seek(0, 2)  # the spooled upload's
    await file.seek(0)
    key = await run_in_threadpool(service.reserve, size_bytes, scheduler.retry_after_s())
    try:
        record = await run_in_threadpool(
            service.store.create,
            file.file,
            filename=file.filename or "upload",
            options=options,
            callback_url=callback_url or None,
        )
    except JobStoreError as exc:
        service.release(key)
        logger.error("%s", exc)
        raise ApiError(500, "the server cannot store the job; see its log", code="job_store_error") from None
    except BaseException:
        service.release(key)
        raise
    service.accept(record, key)
    return JSONResponse(
        {"id": record.id, "status": record.status},
        status_code=202,
        headers={"Location": f"{JOBS_PATH}/{record.id}"},
    )


@router.get(JOBS_PATH + "/{job_id}")
async def get_job(
    service: JobsDep,
    job_id: str,
    response_format: Annotated[
        str | None, Query(description="json, text, srt, vtt or verbose_json; default: as submitted.")
    ] = None,
) -> Response:
    """A job's status and, once it succeeded, its result in ``response_format``."""
    store = service.store
    assert store is not None
    record = store.get(job_id)
    if record is None:
        raise _not_found(job_id, store.ttl_s)
    submitted = (record.options or {}).get("response_format") or "json"
    fmt = checked_format(response_format or submitted)
    result: str | dict[str, Any] | None = None
    if record.status == "succeeded":
        transcript = await run_in_threadpool(store.result, job_id)
        if transcript is None:  # expired between the two reads
            raise _not_found(job_id, store.ttl_s)
        result = await run_in_threadpool(openai_body, transcript, fmt, "transcribe")
    return JSONResponse(
        {
            "id": record.id,
            "status": record.status,
            "created_at": record.created_at,
            "finished_at": record.finished_at,
            "error": record.error,
            "duration": record.duration_s,
            "response_format": fmt,
            "result": result,
        }
    )
