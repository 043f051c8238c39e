"""Where a pipeline's resources are, job ids, and the ``jobs`` commands: list, fetch outputs, retry.

A pipeline is located by :class:`PipelineConfig`, read from a JSON document in the form the stack's user
data writes for the workers (``/etc/gpu-transcribe/pipeline.json``: ``bucket``, ``queue_url``,
``dead_letter_queue_url``, ``table``, ``group``, ``max_attempts``, ``visibility_timeout_s``,
``job_retention_days``, ``defaults``, ``results_queue_url``, ``webhooks_queue_url``, ``pipeline_webhook``,
``allow_private_webhooks``). :func:`load_config` looks in ``$GPU_TRANSCRIBE_PIPELINE_CONFIG``, then
that path; :func:`find_pipeline` falls back to the outputs of the pipeline's CloudFormation stack (off the
fleet, with nothing but credentials), read by :mod:`gpu_transcribe.aws.pipeline.stack`. No printing here: the
CLI
renders what these functions return.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpu_transcribe.errors import GpuTranscribeError
from gpu_transcribe.pipeline import template
from gpu_transcribe_engine.files import replace_atomically

if TYPE_CHECKING:
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.models import PipelineOutputs, StackInfo
    from gpu_transcribe.aws.pipeline.jobs_table import JobRecord

#: Test and off-EC2 seam: a pipeline description (JSON, the worker config's form) to use instead of
#: :data:`WORKER_CONFIG_PATH`.
PIPELINE_CONFIG_ENV = "GPU_TRANSCRIBE_PIPELINE_CONFIG"
#: Where the stack's user data writes the pipeline's description on each worker instance (the template's
#: path: one definition).
WORKER_CONFIG_PATH = Path(template.WORKER_CONFIG_PATH)

#: Engine failures after which a job is failed and dead-lettered, when the config does not say.
DEFAULT_MAX_ATTEMPTS = 3
#: The jobs queue's visibility timeout when the config does not say: 5 minutes (the worker extends it
#: every third of it while a job runs).
DEFAULT_VISIBILITY_TIMEOUT_S = 300
#: Days a finished job's row lives before DynamoDB's TTL removes it, when the config does not say.
DEFAULT_JOB_RETENTION_DAYS = 30

#: A job id made by ``submit``: UTC time to the second and 8 random hex digits, ``20261202T061940Z-3f9a1c0b``
#: (sortable by time; 4.3 billion per second).
JOB_ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")


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


class PipelineConfigError(GpuTranscribeError):
    """No pipeline description, or one that cannot be read.

    Attributes:
        path: the file read, or ``None`` when none was found.
    """

    exit_code = 2

    def __init__(self, message: str, path: Path | None = None) -> None:
        self.path = path
        super().__init__(message)


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


class UnsafeFileNameError(GpuTranscribeError):
    """A file name from the jobs table (a job's ``file_name``, the last part of a result key) that has no
    usable base name, so it cannot name a local file.

    Attributes:
        name: the name as the table has it.
    """

    def __init__(self, name: str, what: str) -> None:
        self.name = name
        super().__init__(f"{what}: {name!r} is not a file name (no base name to write to)")


def local_file_name(name: str, what: str = "file name") -> str:
    """The base name of ``name`` to use as a local file name: ``\\`` read as ``/``, then the last part;
    ``../../x.wav`` gives ``x.wav``, and ``a/..``, ``x/`` or ``..`` have none. The worker and
    ``jobs fetch`` join only this to their folders, so a name written into the jobs table can never reach
    outside them.

    Args:
        name: a job's ``file_name`` or a result key.
        what: how the error names the value (``job 20261202T061940Z-3f9a1c0b's file name``).

    Raises:
        UnsafeFileNameError: the base name is empty, ``.`` or ``..``, or the name holds a NUL or another
            control character.
    """
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        raise UnsafeFileNameError(name, what)
    base = posixpath.basename(name.replace("\\", "/"))
    if base in ("", ".", ".."):
        raise UnsafeFileNameError(name, what)
    return base


@dataclass(frozen=True)
class PipelineResources:
    """Where a pipeline's parts are: the part of the stack's outputs
    (:class:`~gpu_transcribe.aws.models.PipelineOutputs`) that ``submit``, ``jobs`` and the worker use, and
    that a worker's description file holds.

    Attributes:
        bucket: the S3 bucket (``incoming/`` audio, ``results/`` outputs).
        queue_url: the jobs queue's URL.
        dead_letter_queue_url: the dead-letter queue's URL.
        table: the DynamoDB jobs table's name.
        group: the worker Auto Scaling group's name (``""`` if none).
        scaler_function: the scaler Lambda's name (``""`` if unknown: a description file has none), whose
            settings ``submit`` reads to wake the fleet at once.
        results_queue_url: the results queue the worker puts job events on (``""``: none, an older stack).
        webhooks_queue_url: the notifier's queue (``""``: none).
    """

    bucket: str
    queue_url: str
    dead_letter_queue_url: str
    table: str
    group: str = ""
    scaler_function: str = ""
    results_queue_url: str = ""
    webhooks_queue_url: str = ""


@dataclass(frozen=True)
class PipelineConfig:
    """A pipeline's resources and the settings its workers follow.

    Attributes:
        name: the pipeline's name.
        region: its AWS region (``""``: the caller's).
        resources: see :class:`PipelineResources`.
        max_attempts: engine failures after which a job is failed and dead-lettered.
        visibility_timeout_s: seconds a received message (and a claimed job's lease) lasts without a
            heartbeat.
        job_retention_days: days a finished job's row is kept (DynamoDB TTL).
        default_language: language of jobs that name none (files from other uploaders).
        default_formats: output formats of jobs that name none.
        default_model: the workers' model when ``worker --model`` is not given (``""``: the settings').
        default_correct: correct the transcripts of files uploaded without ``submit`` with Bedrock
            (``pipeline deploy --correct``; the description's ``defaults.correct``).
        correct_model_id: the Bedrock model the deploy granted the workers (``""``: the settings').
        correct_region: the region of the Bedrock calls (``""``: the settings').
        pipeline_webhook: the pipeline was deployed with ``--webhook-url`` (every job event goes to the
            webhooks queue, not only those of jobs with their own ``webhook_url``).
        allow_private_webhooks: webhook URLs at private, loopback and link-local addresses are allowed (the
            notifier's ``ALLOW_PRIVATE``); ``submit --webhook-url`` checks against it.
    """

    name: str
    region: str
    resources: PipelineResources
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    visibility_timeout_s: int = DEFAULT_VISIBILITY_TIMEOUT_S
    job_retention_days: int = DEFAULT_JOB_RETENTION_DAYS
    default_language: str = "sv"
    default_formats: tuple[str, ...] = ("txt", "json")
    default_model: str = ""
    default_correct: bool = False
    correct_model_id: str = ""
    correct_region: str = ""
    pipeline_webhook: bool = False
    allow_private_webhooks: bool = False

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> PipelineConfig:
        """Read the worker config's JSON form (see the module docstring).

        Raises:
            KeyError, TypeError, ValueError: a required name is missing or a value has the wrong type.
        """
        defaults = document.get("defaults") or {}
        return cls(
            name=str(document.get("pipeline", "")),
            region=str(document.get("region", "")),
            resources=PipelineResources(
                bucket=str(document["bucket"]),
                queue_url=str(document["queue_url"]),
                dead_letter_queue_url=str(document["dead_letter_queue_url"]),
                table=str(document["table"]),
                group=str(document.get("group", "")),
                scaler_function=str(document.get("scaler_function", "")),
                results_queue_url=str(document.get("results_queue_url") or ""),
                webhooks_queue_url=str(document.get("webhooks_queue_url") or ""),
            ),
            max_attempts=int(document.get("max_attempts", DEFAULT_MAX_ATTEMPTS)),
            visibility_timeout_s=int(document.get("visibility_timeout_s", DEFAULT_VISIBILITY_TIMEOUT_S)),
            job_retention_days=int(document.get("job_retention_days", DEFAULT_JOB_RETENTION_DAYS)),
            default_language=str(defaults.get("language", "sv")),
            default_formats=tuple(defaults.get("formats", ("txt", "json"))),
            default_model=str(defaults.get("model", "")),
            default_correct=bool(defaults.get("correct", False)),
            correct_model_id=str(document.get("correct_model_id") or ""),
            correct_region=str(document.get("correct_region") or ""),
            pipeline_webhook=bool(document.get("pipeline_webhook", False)),
            allow_private_webhooks=bool(document.get("allow_private_webhooks", False)),
        )

    def to_document(self) -> dict[str, Any]:
        """The worker config's JSON form of this config (what :meth:`from_document` reads)."""
        r = self.resources
        return {
            "pipeline": self.name,
            "region": self.region,
            "bucket": r.bucket,
            "queue_url": r.queue_url,
            "dead_letter_queue_url": r.dead_letter_queue_url,
            "table": r.table,
            "group": r.group,
            "scaler_function": r.scaler_function,
            "max_attempts": self.max_attempts,
            "visibility_timeout_s": self.visibility_timeout_s,
            "job_retention_days": self.job_retention_days,
            "defaults": {
                "language": self.default_language,
                "formats": list(self.default_formats),
                "model": self.default_model,
                "correct": self.default_correct,
            },
            "correct_model_id": self.correct_model_id,
            "correct_region": self.correct_region,
            "results_queue_url": r.results_queue_url,
            "webhooks_queue_url": r.webhooks_queue_url,
            "pipeline_webhook": self.pipeline_webhook,
            "allow_private_webhooks": self.allow_private_webhooks,
        }


def load_config(name: str | None = None) -> PipelineConfig:
    """The pipeline's description: ``$GPU_TRANSCRIBE_PIPELINE_CONFIG``, else :data:`WORKER_CONFIG_PATH`.

    Args:
        name: the pipeline asked for (``--pipeline``); the description must be of it. ``None``: any.

    Raises:
        PipelineConfigError: none found, unreadable, or of another pipeline.
    """
    given = os.environ.get(PIPELINE_CONFIG_ENV, "").strip()
    path = Path(given) if given else WORKER_CONFIG_PATH
    if not path.is_file():
        where = f"{PIPELINE_CONFIG_ENV}={given}" if given else str(WORKER_CONFIG_PATH)
        raise PipelineConfigError(
            f"no pipeline description at {where}; workers read it there, other machines name the stack's "
            f"outputs in a file and set {PIPELINE_CONFIG_ENV} to it (docs/pipeline.md, 'Jobs')"
        )
    try:
        config = PipelineConfig.from_document(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PipelineConfigError(f"{path}: not a pipeline description ({exc!r})", path) from exc
    if name is not None and config.name and config.name != name:
        raise PipelineConfigError(f"{path} describes pipeline {config.name!r}, not {name!r}", path)
    return config


def find_pipeline(ctx: AwsContext, name: str | None, default_language: str = "sv") -> PipelineConfig:
    """The pipeline: its description file if there is one (:func:`load_config`: on a worker, or
    ``$GPU_TRANSCRIBE_PIPELINE_CONFIG``), else the outputs of its stack ``gpu-transcribe-pipeline-<name>``
    (default name: ``pipeline deploy``'s) in ``ctx``'s region, read by
    :mod:`gpu_transcribe.aws.pipeline.stack` as
    :class:`~gpu_transcribe.aws.models.PipelineOutputs`, with the queue's visibility timeout read from SQS
    the webhook settings from the notifier Lambda's environment (:func:`notifier_settings`), and the other
    settings at their defaults.

    Raises:
        PipelineNotFoundError: no description and no such stack.
        PipelineConfigError: a description that cannot be read, or a stack without the outputs.
        CloudError, CredentialsError: a call failed.
    """
    if os.environ.get(PIPELINE_CONFIG_ENV, "").strip() or WORKER_CONFIG_PATH.is_file():
        return load_config(name)
    from gpu_transcribe.aws.models import PipelineOutputs, pipeline_stack_name
    from gpu_transcribe.aws.pipeline.stack import describe_stack
    from gpu_transcribe.errors import PipelineNotFoundError
    from gpu_transcribe.pipeline.deploy import DEFAULT_PIPELINE

    pipeline = name or DEFAULT_PIPELINE
    stack = describe_stack(ctx, pipeline_stack_name(pipeline))
    if stack is None:
        raise PipelineNotFoundError(pipeline, ctx.region)
    return config_from_stack(ctx, pipeline, stack, PipelineOutputs.from_stack(stack), default_language)


def config_from_stack(
    ctx: AwsContext, name: str, stack: StackInfo, outputs: PipelineOutputs, default_language: str = "sv"
) -> PipelineConfig:
    """The pipeline ``name`` as its stack's outputs describe it (see :func:`find_pipeline`).

    Raises:
        PipelineConfigError: the stack lacks the outputs.
        CloudError, CredentialsError: a call failed.
    """
    from gpu_transcribe.aws.pipeline.queue import visibility_timeout_s

    resources = PipelineResources(
        bucket=outputs.bucket,
        queue_url=outputs.queue_url,
        dead_letter_queue_url=outputs.dead_letter_queue_url,
        table=outputs.table,
        group=outputs.group,
        scaler_function=outputs.scaler_function,
        results_queue_url=outputs.results_queue_url,
        webhooks_queue_url=outputs.webhooks_queue_url,
    )
    missing = [
        what
        for what in ("bucket", "queue_url", "dead_letter_queue_url", "table")
        if not vars(resources)[what]
    ]
    if missing:
        raise PipelineConfigError(
            f"stack {stack.name} ({stack.status}) lacks the outputs for {', '.join(missing)}"
        )
    pipeline_webhook, allow_private = notifier_settings(ctx, outputs.notifier_function)
    return PipelineConfig(
        name=name,
        region=ctx.region,
        resources=resources,
        visibility_timeout_s=visibility_timeout_s(ctx, resources.queue_url),
        default_language=default_language,
        pipeline_webhook=pipeline_webhook,
        allow_private_webhooks=allow_private,
    )


def notifier_settings(ctx: AwsContext, function: str) -> tuple[bool, bool]:
    """``(pipeline_webhook, allow_private_webhooks)`` as the notifier Lambda ``function`` has them (its
    ``WEBHOOK_URL`` and ``ALLOW_PRIVATE``), read with ``GetFunctionConfiguration``; ``(False, False)``
    when there is no notifier or it cannot be read (the stricter choice: private URLs refused)."""
    if not function:
        return False, False
    from gpu_transcribe.aws.clients import aws_errors, lambda_client

    try:
        with aws_errors(ctx, f"reading the notifier {function}"):
            found = lambda_client(ctx).get_function_configuration(FunctionName=function)
    except GpuTranscribeError:
        return False, False
    env = (found.get("Environment") or {}).get("Variables") or {}
    return bool(env.get("WEBHOOK_URL")), env.get("ALLOW_PRIVATE") == "1"


def new_job_id(now: datetime | None = None) -> str:
    """A fresh job id (:data:`JOB_ID_RE`): ``20261202T061940Z-3f9a1c0b``."""
    return f"{(now or datetime.now(UTC)).astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def external_job_id(key: str, etag: str) -> str:
    """The job id of an object another uploader put into ``incoming/``: ``x-`` and 20 hex digits of the
    SHA-256 of its key and ETag, so a repeated delivery of the same upload is the same job, and the same
    key uploaded again with other content a new one."""
    import hashlib

    return "x-" + hashlib.sha256(f"{key}\n{etag}".encode()).hexdigest()[:20]


def job_id_for_key(key: str, etag: str) -> tuple[str, bool]:
    """``(job id, made by submit)`` for an ``incoming/`` key: ``incoming/<id>/<name>`` with an id of
    :data:`JOB_ID_RE`'s form is that job; any other key is another uploader's (:func:`external_job_id`)."""
    parts = key.split("/")
    if len(parts) == 3 and JOB_ID_RE.match(parts[1]):
        return parts[1], True
    return external_job_id(key, etag), False


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
    from gpu_transcribe.aws.pipeline import jobs_table

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
    from gpu_transcribe.aws.pipeline import job_objects

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
    from gpu_transcribe.aws.pipeline import jobs_table, queue

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


#: Seconds a dead-letter message received by :func:`reconcile_dead_letters` stays hidden: one it leaves
#: (a job a live worker holds, a message naming no job) is back for the next reconciliation after that.
DEAD_LETTER_RECHECK_S = 30
#: The most dead-letter messages one reconciliation reads (10 per receive).
DEAD_LETTER_BATCH_MAX = 100
#: Why a job was marked dead-lettered by the reconciliation (the row's ``error``, the event's).
DEAD_LETTERED_BY_SQS = (
    "SQS moved its message to the dead-letter queue after the queue's maxReceiveCount receives (after "
    "{attempts} attempt(s)): its workers were killed, ran out of memory or kept being interrupted; "
    "`gpu-transcribe jobs retry {job_id}` queues it again"
)


@dataclass(frozen=True)
class DeadLetterResult:
    """What :func:`reconcile_dead_letters` did.

    Attributes:
        dead_lettered: ids of jobs it marked ``dead_lettered`` (their event published).
        removed: ids of jobs already final whose dead-letter message it deleted.
        left: messages it left in the dead-letter queue (a job a live worker holds, or a message that
            names no job of this pipeline).
        error: why it stopped early (an AWS call failed, e.g. a caller without permission on the dead-letter
            queue); ``""``: it read the queue to the end (or :data:`DEAD_LETTER_BATCH_MAX`).
    """

    dead_lettered: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    left: int = 0
    error: str = ""


def reconcile_dead_letters(ctx: AwsContext, config: PipelineConfig) -> DeadLetterResult:
    """Bring the jobs table in line with the dead-letter queue. SQS moves a message there by itself after
    the jobs queue's ``maxReceiveCount`` receives (a worker killed, out of memory or interrupted that many
    times), leaving its row ``queued``, ``running`` or ``interrupted`` for ever. For each message on the
    dead-letter queue (up to :data:`DEAD_LETTER_BATCH_MAX`):

    - a job not final is marked ``dead_lettered`` with the reason (:data:`DEAD_LETTERED_BY_SQS`) by a
      conditional write (:func:`~gpu_transcribe.aws.pipeline.jobs_table.dead_letter_stuck_job`: never a job a
      live
      worker holds), its ``job.dead_lettered`` event is published (as the worker publishes one:
      :func:`~gpu_transcribe.pipeline.results.publish_final_job`) and the message deleted;
    - the copy a worker sends when it dead-letters a job itself (message attribute
      :data:`~gpu_transcribe.aws.pipeline.queue.DEAD_LETTERED_BY` ``worker``) is deleted, whatever the row
      says;
    - a job already ``dead_lettered`` by another reconciliation has its event published again, with the
      same id (that reconciliation may have died before publishing), and the message is deleted; a job
      ``succeeded`` or ``failed`` has its message deleted;
    - anything else is left for later (hidden :data:`DEAD_LETTER_RECHECK_S`).

    Safe to run from several places at once (``pipeline status``, ``jobs``, ``jobs retry``, ``submit
    --wait``): a received message is hidden from the others, the row's writes are conditional, and events
    carry ids. Never raises for AWS trouble: the commands that run it read the jobs whatever happens here,
    so a failed call ends it with the reason in :attr:`DeadLetterResult.error`.
    """
    from gpu_transcribe.aws.clients import sqs_client
    from gpu_transcribe.pipeline.results import ResultsChannel, publish_final_job

    resources = config.resources
    if not resources.dead_letter_queue_url:
        return DeadLetterResult()
    channel = ResultsChannel(
        resources.results_queue_url, resources.webhooks_queue_url, config.pipeline_webhook
    )

    def publish(record: JobRecord) -> None:
        if channel.results_queue_url or channel.webhooks_queue_url:
            publish_final_job(sqs_client(ctx), channel, resources.bucket, record)

    dead: list[str] = []
    removed: list[str] = []
    left = [0]
    try:
        _reconcile(ctx, config, publish, dead, removed, left)
    except GpuTranscribeError as exc:
        return DeadLetterResult(tuple(dead), tuple(removed), left[0], str(exc))
    return DeadLetterResult(tuple(dead), tuple(removed), left[0])


def _reconcile(
    ctx: AwsContext,
    config: PipelineConfig,
    publish: Any,
    dead: list[str],
    removed: list[str],
    left: list[int],
) -> None:
    """The loop of :func:`reconcile_dead_letters`, appending to ``dead``, ``removed`` and ``left[0]``."""
    from gpu_transcribe.aws.pipeline import jobs_table, queue

    resources = config.resources
    seen = 0
    while seen < DEAD_LETTER_BATCH_MAX:
        messages = queue.receive(
            ctx, resources.dead_letter_queue_url, wait_s=0, visibility_timeout_s=DEAD_LETTER_RECHECK_S
        )
        if not messages:
            break
        seen += len(messages)
        for message in messages:
            record = _dead_letter_job(ctx, config, message)
            if record is None:
                left[0] += 1
                continue
            if message.attributes.get(queue.DEAD_LETTERED_BY) == "worker":
                # The copy a worker sent after its own final write and before its publish (a crash between
                # is redelivered to a worker, which publishes): nothing to do but remove it, whatever the
                # row says now (`jobs retry` may have queued the job again since).
                queue.delete(ctx, resources.dead_letter_queue_url, message.receipt_handle)
                removed.append(record.job_id)
                continue
            if record.status not in jobs_table.FINAL_STATUSES:
                reason = DEAD_LETTERED_BY_SQS.format(attempts=record.attempts, job_id=record.job_id)
                expires_at = int(time.time()) + config.job_retention_days * 86400
                written = jobs_table.dead_letter_stuck_job(
                    ctx, resources.table, record.job_id, reason, expires_at=expires_at
                )
                if written is not None:
                    publish(written)
                    queue.delete(ctx, resources.dead_letter_queue_url, message.receipt_handle)
                    dead.append(record.job_id)
                    continue
                record = jobs_table.get_job(ctx, resources.table, record.job_id)
                if record is None or record.status not in jobs_table.FINAL_STATUSES:
                    left[0] += 1  # a live worker holds it: its own message decides
                    continue
            if record.status == jobs_table.DEAD_LETTERED:
                publish(record)
            queue.delete(ctx, resources.dead_letter_queue_url, message.receipt_handle)
            removed.append(record.job_id)


def _dead_letter_job(ctx: AwsContext, config: PipelineConfig, message: Any) -> JobRecord | None:
    """The row of the job a dead-letter message is for (the worker's mapping of keys to jobs), or
    ``None``: the message names no object of this pipeline's ``incoming/``, or no job has it."""
    from gpu_transcribe.aws.pipeline import jobs_table

    if message.test_event or not message.objects:
        return None
    obj = message.objects[0]
    if obj.bucket != config.resources.bucket or not obj.key.startswith("incoming/"):
        return None
    job_id, submitted = job_id_for_key(obj.key, obj.etag)
    record = jobs_table.get_job(ctx, config.resources.table, job_id)
    if record is not None and record.input_key != obj.key and submitted:
        record = jobs_table.get_job(ctx, config.resources.table, external_job_id(obj.key, obj.etag))
    return record if record is not None and record.input_key == obj.key else None


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
    from gpu_transcribe.aws.pipeline.jobs_table import FINAL_STATUSES

    started = time.monotonic()
    seen: tuple[str, ...] = ()
    while True:
        reconcile_dead_letters(ctx, config)
        records = list_jobs(ctx, config, job_ids)
        statuses = tuple(r.status for r in records)
        if statuses != seen and on_change is not None:
            on_change(records)
        seen = statuses
        if all(s in FINAL_STATUSES for s in statuses):
            return records
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            return records
        time.sleep(poll_s)
