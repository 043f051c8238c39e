"""``gpu-transcribe submit``: one job row per file, then the audio into ``incoming/<job-id>/<name>``.

The row is written before the upload, so the worker that receives the upload's event finds the job's
options; a row whose upload failed is marked ``failed`` with the reason (no audio, so no message would ever
come for it). After the uploads, :func:`wake_fleet` runs the pipeline's scaler in-process, so the fleet is
raised from the backlog at once instead of at the scheduled scaler's next minute. No printing: the CLI
prints the ids these return.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpu_transcribe.errors import GpuTranscribeError
from gpu_transcribe.pipeline.config import PipelineConfig
from gpu_transcribe.pipeline.job_ids import new_job_id
from gpu_transcribe.pipeline.jobs import PipelineInputError
from gpu_transcribe_engine.utc import iso_utc

if TYPE_CHECKING:
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.pipeline.jobs_table import JobOptions


@dataclass(frozen=True)
class SubmittedJob:
    """One file submitted.

    Attributes:
        job_id: its job id.
        path: the local file.
        input_key: where its audio went in the bucket.
    """

    job_id: str
    path: Path
    input_key: str


def check_files(paths: Sequence[Path]) -> tuple[Path, ...]:
    """The files to submit, each an existing, non-empty regular file.

    Raises:
        PipelineInputError: one is not (the message names it).
    """
    for path in paths:
        if not path.is_file():
            raise PipelineInputError(f"{path}: not a file; submit takes audio files")
        if path.stat().st_size == 0:
            raise PipelineInputError(f"{path}: empty file")
    return tuple(paths)


def submit_files(
    ctx: AwsContext,
    config: PipelineConfig,
    paths: Sequence[Path],
    options: JobOptions,
    on_submitted: Callable[[SubmittedJob], None] | None = None,
    webhook_url: str = "",
) -> tuple[SubmittedJob, ...]:
    """For each file: create its job row (``queued``), then upload it to ``incoming/<job-id>/<name>``
    (SSE-S3). The bucket's notification turns each upload into a queue message.

    Args:
        options: the jobs' options (language, formats, model, word timestamps, prompt, subtitle limits).
        on_submitted: called after each file's upload (progress).
        webhook_url: the jobs' own webhook (``--webhook-url``), stored in each row's ``webhook_url``; it is
            checked here with :func:`~gpu_transcribe.pipeline.webhooks.check_webhook_url` against the
            pipeline's ``allow_private_webhooks`` (``""``: none; the pipeline's, if it has one).

    Raises:
        PipelineInputError: a path is not a non-empty file, or the webhook URL is refused (both checked
            before anything is written).
        CloudError, CredentialsError: a call failed; the files before it are submitted (a failed upload's
            row is marked ``failed`` first).
    """
    from gpu_transcribe.aws.pipeline import job_objects, jobs_table
    from gpu_transcribe.pipeline.webhooks import WebhookUrlError, check_webhook_url

    files = check_files(paths)
    if webhook_url:
        try:
            webhook_url = check_webhook_url(webhook_url, config.allow_private_webhooks)
        except WebhookUrlError as exc:
            raise PipelineInputError(f"--webhook-url: {exc}") from None
    submitted = []
    for path in files:
        job_id = new_job_id()
        key = job_objects.incoming_key(job_id, path.name)
        now = iso_utc(timespec="milliseconds")
        record = jobs_table.JobRecord(
            job_id=job_id,
            status=jobs_table.QUEUED,
            file_name=path.name,
            input_key=key,
            options=options,
            created_at=now,
            updated_at=now,
            expires_at=int(time.time()) + config.job_retention_days * 86400 * 2,
            webhook_url=webhook_url,
        )
        while not jobs_table.create_job(ctx, config.resources.table, record):  # an id taken: draw again
            job_id = new_job_id()
            key = job_objects.incoming_key(job_id, path.name)
            record = jobs_table.JobRecord(**{**record.__dict__, "job_id": job_id, "input_key": key})
        try:
            job_objects.upload(ctx, config.resources.bucket, key, path, metadata={"job-id": job_id})
        except GpuTranscribeError as exc:  # no audio, so no message: say so in the row, then stop
            jobs_table.abandon_job(
                ctx, config.resources.table, job_id, f"upload failed: {exc}; submit it again"
            )
            raise
        job = SubmittedJob(job_id, path, key)
        submitted.append(job)
        if on_submitted is not None:
            on_submitted(job)
    return tuple(submitted)


def wake_fleet(ctx: AwsContext, config: PipelineConfig) -> dict[str, Any] | None:
    """Raise the worker group's desired capacity from the queue's backlog now: the scaler Lambda's own code
    and settings, run here (:func:`gpu_transcribe.aws.pipeline.deployment.run_scaler`). Never lowers it.

    Returns:
        The scaler's answer (``visible``, ``desired_before``, ``desired``, ``raised``), or ``None`` when the
        pipeline names no group or no scaler (a description file; the scheduled scaler still runs).

    Raises:
        CloudError, CredentialsError: a call failed (the jobs are queued all the same; the scheduled scaler
            wakes the fleet within a minute).
    """
    resources = config.resources
    if not resources.group or not resources.scaler_function:
        return None
    from gpu_transcribe.aws.pipeline.deployment import run_scaler

    return run_scaler(ctx, resources.queue_url, resources.group, resources.scaler_function)
