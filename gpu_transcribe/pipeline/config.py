"""Where a pipeline's resources are, and the settings its workers follow: :class:`PipelineConfig`.

A pipeline is located by :class:`PipelineConfig`, read from a JSON document in the form the stack's user
data writes for the workers (``/etc/gpu-transcribe/pipeline.json``: ``bucket``, ``queue_url``,
``dead_letter_queue_url``, ``table``, ``group``, ``max_attempts``, ``visibility_timeout_s``,
``job_retention_days``, ``defaults``, ``results_queue_url``, ``webhooks_queue_url``, ``pipeline_webhook``,
``allow_private_webhooks``). :func:`load_config` looks in ``$GPU_TRANSCRIBE_PIPELINE_CONFIG``, then
that path; :func:`find_pipeline` falls back to the outputs of the pipeline's CloudFormation stack (off the
fleet, with nothing but credentials), read by :mod:`gpu_transcribe.aws.pipeline.stack`. No printing here: the
CLI renders what these functions return.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpu_transcribe.errors import GpuTranscribeError, SettingsError
from gpu_transcribe.pipeline import template
from gpu_transcribe.pipeline.template import check_pipeline_name

if TYPE_CHECKING:
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.pipeline.models import PipelineOutputs, StackInfo

#: Test and off-EC2 seam: a pipeline description (JSON, the worker config's form) to use instead of
#: :data:`WORKER_CONFIG_PATH`.
PIPELINE_CONFIG_ENV = "GPU_TRANSCRIBE_PIPELINE_CONFIG"
#: Where the stack's user data writes the pipeline's description on each worker instance (the template's
#: path: one definition).
WORKER_CONFIG_PATH = Path(template.WORKER_CONFIG_PATH)

#: The pipeline a command means when ``--name`` is not given.
DEFAULT_PIPELINE = "default"
#: Engine failures after which a job is failed and dead-lettered, when the config does not say.
DEFAULT_MAX_ATTEMPTS = 3
#: The jobs queue's visibility timeout when the config does not say: 5 minutes (the worker extends it
#: every third of it while a job runs).
DEFAULT_VISIBILITY_TIMEOUT_S = 300
#: Days a finished job's row lives before DynamoDB's TTL removes it, when the config does not say.
DEFAULT_JOB_RETENTION_DAYS = 30


class PipelineConfigError(GpuTranscribeError):
    """No pipeline description, or one that cannot be read.

    Attributes:
        path: the file read, or ``None`` when none was found.
    """

    exit_code = 2

    def __init__(self, message: str, path: Path | None = None) -> None:
        self.path = path
        super().__init__(message)


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
    from gpu_transcribe.aws.pipeline.models import PipelineOutputs, pipeline_stack_name
    from gpu_transcribe.aws.pipeline.stack import describe_stack
    from gpu_transcribe.errors import PipelineNotFoundError

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
    ``WEBHOOK_URL`` and ``ALLOW_PRIVATE``), read with
    :func:`~gpu_transcribe.aws.pipeline.deployment.function_environment`; ``(False, False)``
    when there is no notifier or it cannot be read (the stricter choice: private URLs refused)."""
    if not function:
        return False, False
    from gpu_transcribe.aws.pipeline.deployment import function_environment

    try:
        env = function_environment(ctx, function)
    except GpuTranscribeError:
        return False, False
    return bool(env.get("WEBHOOK_URL")), env.get("ALLOW_PRIVATE") == "1"


def pipeline_name(name: str | None) -> str:
    """``name`` (checked) or :data:`DEFAULT_PIPELINE`.

    Raises:
        SettingsError: not a valid pipeline name (exit status 2).
    """
    try:
        return check_pipeline_name(name or DEFAULT_PIPELINE)
    except ValueError as exc:
        raise SettingsError("pipeline", "--pipeline", f"--pipeline: {exc}") from None
