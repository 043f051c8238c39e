"""The ``jobs`` commands' side: list jobs, fetch their outputs, retry them, wait for them. No printing here:
the CLI renders what these functions return. Where the pipeline is: :mod:`gpu_transcribe.pipeline.config`;
job ids and file names: :mod:`gpu_transcribe.pipeline.job_ids`; the dead-letter reconciliation that
``jobs retry`` and :func:`wait_for_jobs` run first: :mod:`gpu_transcribe.pipeline.dead_letters`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpu_transcribe.aws.pipeline import job_objects, jobs_table, queue
from gpu_transcribe.errors import GpuTranscribeError
from gpu_transcribe.pipeline.dead_letters import reconcile_dead_letters
from gpu_transcribe.pipeline.job_ids import local_file_name
from gpu_transcribe_engine.files import replace_atomically

if TYPE_CHECKING:
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.pipeline.jobs_table import JobRecord
    from gpu_transcribe.pipeline.config import PipelineConfig


class FetchExistsError(GpuTranscribeError):
    """``jobs fetch`` found outputs that exist already (and no ``--overwrite``); nothing was downloaded.

    Attributes:
        existing: the paths that exist.
    """

    def __init__(self, existing: Sequence[Path]) -> None:
        self.existing = tuple(existing)
        super().__init__(
            f"{existing[0]} exists ({len(existing)} output(s) in all); pass --overwrite to replace them"
        )


class PipelineInputError(GpuTranscribeError):
    """A value given to ``submit``, ``jobs`` or ``worker`` cannot be used (the message names the option)."""

    exit_code = 2


class JobNotFoundError(PipelineInputError):
    """A job id the table does not know.

    Attributes:
        job_id: the id.
    """

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job {job_id!r} in the pipeline's table; `gpu-transcribe jobs` lists them")


def parse_since(text: str, now: datetime | None = None) -> str:
    """``--since``: an age (``90m``, ``2h``, ``3d``) or an ISO 8601 time, as ISO 8601 UTC.

    Raises:
        PipelineInputError: neither.
    """
    moment = now or datetime.now(UTC)
    match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text)
    if match:
        seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        when = moment - timedelta(seconds=seconds)
    else:
        try:
            when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise PipelineInputError(
                f"--since: {text!r} is neither an age (90m, 2h, 3d) nor an ISO 8601 time"
            ) from None
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def list_jobs(
    ctx: AwsContext,
    config: PipelineConfig,
    job_ids: Sequence[str] = (),
    *,
    status: str | None = None,
    since: str | None = None,
) -> tuple[JobRecord, ...]:
    """The jobs asked for (all when no ids), filtered by ``status`` and ``since`` (``--since``'s text).

    Raises:
        JobNotFoundError: an id has no row.
        PipelineInputError: a bad ``--status`` or ``--since``.
        CloudError, CredentialsError: a call failed.
    """
    if status is not None and status not in jobs_table.STATUSES:
        raise PipelineInputError(f"--status: {status!r} is not one of {', '.join(jobs_table.STATUSES)}")
    since_iso = parse_since(since) if since else None
    if not job_ids:
        return jobs_table.list_jobs(ctx, config.resources.table, status=status, since_iso=since_iso)
    records = []
    for job_id in dict.fromkeys(job_ids):
        record = jobs_table.get_job(ctx, config.resources.table, job_id)
        if record is None:
            raise JobNotFoundError(job_id)
        if (status is None or record.status == status) and (
            since_iso is None or record.created_at >= since_iso
        ):
            records.append(record)
    return tuple(records)


@dataclass(frozen=True)
class FetchResult:
    """What ``jobs fetch`` did.

    Attributes:
        written: local paths written.
        not_ready: ``(job id, status)`` of jobs that have no outputs yet (not succeeded).
    """

    written: tuple[Path, ...]
    not_ready: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def fetch_outputs(
    ctx: AwsContext,
    config: PipelineConfig,
    job_ids: Sequence[str],
    output_dir: Path,
    *,
    overwrite: bool = False,
) -> FetchResult:
    """Download the outputs of succeeded jobs into ``output_dir`` as ``<stem>.<fmt>``, each atomically (a
    temporary file in the directory, then a rename). Existing files are refused before anything is
    downloaded unless ``overwrite``.

    Raises:
        JobNotFoundError: an id has no row.
        FetchExistsError: an output exists and ``overwrite`` is off (nothing downloaded).
        UnsafeFileNameError: a result key has no usable base name (:func:`local_file_name`; nothing
            downloaded).
        GpuTranscribeError: an output named by a job is not in the bucket (those before it are written).
        CloudError, CredentialsError: a call failed.
    """
    records = list_jobs(ctx, config, job_ids)
    output_dir.mkdir(parents=True, exist_ok=True)
    plan: list[tuple[str, Path]] = []
    not_ready = []
    for record in records:
        if record.status != "succeeded":
            not_ready.append((record.job_id, record.status))
            continue
        what = f"job {record.job_id}'s result key"
        plan.extend((key, output_dir / local_file_name(key, what)) for key in record.result_keys)
    existing = [path for _, path in plan if path.exists()]
    if existing and not overwrite:
        raise FetchExistsError(existing)
    written = []
    for key, path in plan:
        with replace_atomically(path, 0o644) as (_handle, temp):
            if not job_objects.download(ctx, config.resources.bucket, key, temp):
                raise GpuTranscribeError(
                    f"s3://{config.resources.bucket}/{key} is missing (deleted after the job succeeded?)"
                )
        written.append(path)
    return FetchResult(tuple(written), tuple(not_ready))


@dataclass(frozen=True)
class RetryResult:
    """What ``jobs retry`` did.

    Attributes:
        requeued: ids put back in the queue.
        refused: ``(job id, status)`` of jobs that were neither failed nor dead-lettered.
    """

    requeued: tuple[str, ...]
    refused: tuple[tuple[str, str], ...]


def retry_jobs(ctx: AwsContext, config: PipelineConfig, job_ids: Sequence[str]) -> RetryResult:
    """Put failed or dead-lettered jobs back to ``queued`` (engine failures reset) and send each a new
    message, so a worker takes it. The row is changed first: a message for a job still failed would be
    dropped by the worker. The dead-letter queue is reconciled first (:func:`reconcile_dead_letters`), so a
    job whose message SQS dead-lettered by itself is ``dead_lettered`` and can be retried.

    Raises:
        JobNotFoundError: an id has no row.
        CloudError, CredentialsError: a call failed.
    """
    reconcile_dead_letters(ctx, config)
    requeued, refused = [], []
    for job_id in dict.fromkeys(job_ids):
        record = jobs_table.get_job(ctx, config.resources.table, job_id)
        if record is None:
            raise JobNotFoundError(job_id)
        if jobs_table.requeue_job(ctx, config.resources.table, job_id) is None:
            refused.append((job_id, record.status))
            continue
        queue.send(
            ctx, config.resources.queue_url, queue.event_body(config.resources.bucket, record.input_key)
        )
        requeued.append(job_id)
    return RetryResult(tuple(requeued), tuple(refused))


def wait_for_jobs(
    ctx: AwsContext,
    config: PipelineConfig,
    job_ids: Sequence[str],
    on_change: Any = None,
    poll_s: float = 2.0,
    timeout_s: float | None = None,
) -> tuple[JobRecord, ...]:
    """Poll the table until every job has a final status (succeeded, failed, dead-lettered), reconciling
    the dead-letter queue before each read (:func:`reconcile_dead_letters`), so a job whose message SQS
    dead-lettered ends as ``dead_lettered`` instead of waiting for ever.

    Args:
        on_change: called with the tuple of records whenever a status changed (progress).
        poll_s: seconds between reads.
        timeout_s: give up after this many seconds (``None``: never) and return what is known.

    Raises:
        JobNotFoundError, CloudError, CredentialsError: as :func:`list_jobs`.
    """
    started = time.monotonic()
    seen: tuple[str, ...] = ()
    while True:
        reconcile_dead_letters(ctx, config)
        records = list_jobs(ctx, config, job_ids)
        statuses = tuple(r.status for r in records)
        if statuses != seen and on_change is not None:
            on_change(records)
        seen = statuses
        if all(s in jobs_table.FINAL_STATUSES for s in statuses):
            return records
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            return records
        time.sleep(poll_s)
