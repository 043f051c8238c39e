"""The pipeline's CloudFormation stack for one deployment: ``stack.yaml`` filled from a :class:`PipelineSpec`.

One stack per pipeline (``gpu-transcribe-pipeline-<name>``) holds everything: the S3 bucket (or the user's
own), the jobs queue and its dead-letter queue, the DynamoDB jobs table, the worker fleet (IAM role, launch
template, Auto Scaling group), the scaler (a Lambda run every minute) and the webhook notifier (a Lambda).
The resources are written once, in ``gpu_transcribe/pipeline/stack.yaml`` (package data, linted whole by
cfn-lint in the tests); what varies per deployment are its ``Parameters`` (:func:`template_parameters`),
and its ``Conditions`` add or leave out the optional parts (the created bucket, a root volume size, reserved
concurrency, the Bedrock permissions of ``--correct``). Three parts a parameter cannot express are filled
in here (:func:`build_template`): the description, the tags of every resource (ours and the user's, a list
of any length) and one instance-type override per type. The deploy sends :func:`template_json` and
:func:`template_parameters` to a change set, so a change set still shows exactly what changes. Nothing here
calls AWS.

The file uses the long form of the intrinsic functions (``Fn::If``, ``Fn::Sub``...), not the short tags
(``!If``): plain ``yaml.safe_load`` reads it, so neither this module nor the tests need a loader that
knows CloudFormation's tags, and cfn-lint reads it either way. PyYAML is imported when the file is loaded,
not with this module, which the command line and the worker also import for its constants.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from gpu_transcribe import __version__
from gpu_transcribe.aws.models import TAG_OWNER, TAG_ROLE, TAG_VERSION
from gpu_transcribe.pipeline.contract import (
    INCOMING_PREFIX,
    PIPELINE_ROLE,
    RESULTS_PREFIX,
    TAG_PIPELINE,
)
from gpu_transcribe.pipeline.contract import WORKER_CONFIG_PATH as WORKER_CONFIG_PATH  # for pipeline.jobs
from gpu_transcribe.pipeline.fleet_boot import (
    WORKER_IDLE_EXIT_S,
    WORKER_MAX_LIFETIME_H,
    fleet_deadman_commands,
)
from gpu_transcribe.pipeline.lambda_code import scaler_source

if TYPE_CHECKING:
    from gpu_transcribe.aws.pipeline.models import AssetLocation

#: The template file (package data of :mod:`gpu_transcribe.pipeline`).
TEMPLATE_FILE = "stack.yaml"
#: The region's assets stack (the bucket of the Lambda code too large to be inline), package data too.
ASSETS_TEMPLATE_FILE = "assets.yaml"
#: SQS's maximum visibility timeout, 12 hours in seconds.
MAX_VISIBILITY_TIMEOUT_S = 43_200
#: The notifier's timeout, seconds (``stack.yaml``, ``NotifierFunction``): a batch of 5 deliveries at up to
#: ``webhook_timeout_s`` (at most 30 s) each, plus reading the secret.
NOTIFIER_TIMEOUT_S = 180
#: The most notifier invocations at once: the event source's ``ScalingConfig.MaximumConcurrency`` (2 is SQS
#: event sources' smallest) and the function's reserved concurrency (``stack.yaml``).
NOTIFIER_MAX_CONCURRENCY = 2
#: The scaler's reserved concurrency: one run at a time (it runs every minute and within seconds).
SCALER_MAX_CONCURRENCY = 1
#: Lambda keeps at least this much of an account's concurrency unreserved (Lambda Developer Guide,
#: "Configuring reserved concurrency"): the deploy reserves only if the account has room above it.
LAMBDA_MIN_UNRESERVED = 100
#: Actions that AWS does not allow to scope to a resource (Service Authorization Reference: no resource
#: types for them), so the only statements of ours with ``Resource: "*"``.
UNSCOPABLE_ACTIONS = frozenset({"autoscaling:DescribeAutoScalingGroups"})

_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,18}[a-z0-9])?$")


def check_pipeline_name(name: str) -> str:
    """``name`` if it can name a pipeline: 1-20 lowercase letters, digits and inner hyphens (it becomes part
    of the bucket name, which S3 limits to 63 such characters with the account id and region).

    Raises:
        ValueError: naming what is allowed.
    """
    if not _NAME_RE.match(name):
        raise ValueError(
            f"{name!r} is not a pipeline name: 1-20 lowercase letters, digits and hyphens, not starting or "
            "ending with a hyphen"
        )
    return name


@dataclass(frozen=True)
class PipelineSpec:
    """What one pipeline stack should look like.

    Attributes:
        name: the pipeline's name (:func:`check_pipeline_name`); its stack is
            ``gpu-transcribe-pipeline-<name>``.
        image_id: the workers' AMI (an image of ours made by ``build-ami``).
        instance_types: GPU instance types the group may launch (spot), at least one.
        vpc_id: the VPC of the workers' security group.
        subnet_ids: the subnets the group launches into (one per zone; they must give public IPv4 addresses
            or have a NAT, since workers reach S3, SQS and DynamoDB through the internet).
        root_device_name: the image's root device (``/dev/sda1`` for our Ubuntu images), encrypted.
        root_volume_size_gib: the root volume's size, at least the image's snapshot; ``None`` leaves it to
            EC2 (the snapshot's size).
        max_workers: the group's maximum size, N in 0..N.
        jobs_per_worker: visible jobs per worker the scaler aims at.
        max_attempts: engine failures of one job before the worker fails it (counted in the table by the
            worker; an interruption is not a failure).
        max_receive_count: receives of one message before SQS moves it to the dead-letter queue, whatever
            the reason (failures, interruptions, killed workers): larger than ``max_attempts`` so that
            interruptions alone do not dead-letter a job.
        visibility_timeout_s: seconds a received message stays hidden; the worker extends it while it works
            (heartbeat), so this bounds how long a killed worker's job waits before another takes it.
        bucket: the user's existing bucket, or ``None`` for one created by the stack.
        incoming_expiry_days: days after which audio under ``incoming/`` is deleted (created bucket only).
        job_retention_days: days a finished job's row lives (the worker sets ``expires_at``; DynamoDB TTL).
        language, model, formats: job options for files uploaded without ``submit``.
        login_user: the image's user that runs the worker.
        remote_prefix: where the image keeps the engine (``PREFIX/venv/bin/gpu-transcribe``).
        owner_arn: the deploying caller's ARN (tag ``gpu-transcribe:owner``).
        tags: the user's ``(key, value)`` tags, put on every resource.
        webhook_url: the pipeline's webhook (``pipeline deploy --webhook-url``; ``""``: none, only jobs'
            own ``webhook_url``), checked by the deploy (``results.check_webhook_url``).
        allow_private_webhooks: let the notifier send to private, loopback and link-local addresses.
        correct: ``pipeline deploy --correct``: files uploaded without ``submit`` are corrected with Bedrock
            (the worker config's ``defaults.correct``), and the worker role may call the model.
        correct_model_id: the Bedrock model id (or ``eu.``/``us.``... inference profile id) of the
            correction; the worker role's ``bedrock:InvokeModel`` and ``GetFoundationModel`` name it.
        correct_region: the region of the Bedrock calls (``""``: the stack's).
        reserve_concurrency: give the notifier and the scaler reserved concurrency
            (:data:`NOTIFIER_MAX_CONCURRENCY`, :data:`SCALER_MAX_CONCURRENCY`); the deploy turns it off for an
            account whose Lambda quota has no room for it (new accounts: 10). The notifier's event source
            caps its concurrency either way.
        webhook_max_attempts: delivery attempts of one event before SQS moves it to the webhooks
            dead-letter queue (the webhooks queue's ``maxReceiveCount``). With the backoff below (half fixed,
            half random, doubling from ``webhook_backoff_base_s`` up to ``webhook_backoff_cap_s``) 12
            attempts span about 6 to 8 hours.
        webhook_timeout_s: seconds per delivery attempt.
        webhook_backoff_base_s, webhook_backoff_cap_s: the retry schedule, seconds.
    """

    name: str
    image_id: str
    instance_types: tuple[str, ...]
    vpc_id: str
    subnet_ids: tuple[str, ...]
    root_device_name: str = "/dev/sda1"
    root_volume_size_gib: int | None = None
    max_workers: int = 4
    jobs_per_worker: int = 10
    max_attempts: int = 3
    max_receive_count: int = 10
    visibility_timeout_s: int = 900
    bucket: str | None = None
    incoming_expiry_days: int = 30
    job_retention_days: int = 30
    language: str = "sv"
    model: str = "KBLab/kb-whisper-small"
    formats: tuple[str, ...] = ("txt", "json")
    login_user: str = "ubuntu"
    remote_prefix: str = "/opt/gpu-transcribe"
    owner_arn: str = ""
    tags: tuple[tuple[str, str], ...] = ()
    webhook_url: str = ""
    allow_private_webhooks: bool = False
    correct: bool = False
    correct_model_id: str = ""
    correct_region: str = ""
    reserve_concurrency: bool = True
    webhook_max_attempts: int = 12
    webhook_timeout_s: int = 10
    webhook_backoff_base_s: int = 30
    webhook_backoff_cap_s: int = 7200

    def __post_init__(self) -> None:
        check_pipeline_name(self.name)
        if not self.instance_types:
            raise ValueError("PipelineSpec.instance_types is empty")
        if not self.subnet_ids:
            raise ValueError("PipelineSpec.subnet_ids is empty")
        if not 1 <= self.max_workers <= 1000:
            raise ValueError(f"PipelineSpec.max_workers: {self.max_workers} is not 1 to 1000")
        if self.jobs_per_worker < 1 or self.max_attempts < 1:
            raise ValueError("PipelineSpec.jobs_per_worker and max_attempts must be at least 1")
        if not self.max_attempts < self.max_receive_count <= 1000:
            raise ValueError(
                f"PipelineSpec.max_receive_count: {self.max_receive_count} must be above max_attempts "
                f"({self.max_attempts}) and at most 1000 (SQS's limit)"
            )
        if not 1 <= self.webhook_max_attempts <= 1000 or not 1 <= self.webhook_timeout_s <= 30:
            raise ValueError("PipelineSpec.webhook_max_attempts must be 1-1000 and webhook_timeout_s 1-30")
        if not 30 <= self.visibility_timeout_s <= MAX_VISIBILITY_TIMEOUT_S:
            raise ValueError(
                f"PipelineSpec.visibility_timeout_s: {self.visibility_timeout_s} is not 30 to 43200"
            )

    @property
    def prefix(self) -> str:
        """The prefix of every resource name: ``gpu-transcribe-<name>``."""
        return f"gpu-transcribe-{self.name}"

    @property
    def queue_name(self) -> str:
        """The jobs queue's name."""
        return f"{self.prefix}-jobs"

    @property
    def dead_letter_queue_name(self) -> str:
        """The dead-letter queue's name."""
        return f"{self.prefix}-jobs-dlq"

    @property
    def table_name(self) -> str:
        """The jobs table's name."""
        return f"{self.prefix}-jobs"

    @property
    def group_name(self) -> str:
        """The worker Auto Scaling group's name."""
        return f"{self.prefix}-workers"

    @property
    def results_queue_name(self) -> str:
        """The results queue's name (the pull channel: ``jobs watch``)."""
        return f"{self.prefix}-results"

    @property
    def webhooks_queue_name(self) -> str:
        """The notifier's queue's name."""
        return f"{self.prefix}-webhooks"

    @property
    def webhooks_dead_letter_queue_name(self) -> str:
        """Where events go that could not be delivered after ``webhook_max_attempts``."""
        return f"{self.prefix}-webhooks-dlq"

    @property
    def webhook_secret_name(self) -> str:
        """The Secrets Manager secret with the webhook signing secret(s)."""
        return f"{self.prefix}-webhook"

    @property
    def notifier_name(self) -> str:
        """The notifier Lambda function's name."""
        return f"{self.prefix}-notifier"

    @property
    def scaler_name(self) -> str:
        """The scaler Lambda function's name."""
        return f"{self.prefix}-scaler"

    def resource_tags(self) -> list[tuple[str, str]]:
        """The tags of every resource: ours (pipeline, role, owner, version), then the user's. No creation
        time: it would change every resource on every update (the stack records its own times)."""
        ours = [(TAG_PIPELINE, self.name), (TAG_ROLE, PIPELINE_ROLE), (TAG_VERSION, __version__)]
        if self.owner_arn:
            ours.append((TAG_OWNER, self.owner_arn))
        return [*ours, *self.tags]


#: The created bucket's lifecycle rule ids (the template's, and :func:`lifecycle_rules_api`'s).
EXPIRE_INCOMING_RULE = "expire-incoming-audio"
ABORT_UPLOADS_RULE = "abort-incomplete-uploads"
RESULT_VERSIONS_RULE = "expire-old-result-versions"
#: The created bucket is versioned: an overwritten or deleted transcript stays as a noncurrent version for
#: this many days (``aws s3api list-object-versions`` / ``get-object --version-id`` bring it back).
NONCURRENT_RESULT_DAYS = 30
#: Days a noncurrent version of audio under ``incoming/`` is kept: the audio's expiry is meant to delete it.
NONCURRENT_INCOMING_DAYS = 1


def lifecycle_rules_api(spec: PipelineSpec) -> list[dict[str, Any]]:
    """The created bucket's lifecycle rules in the S3 API's shape (``PutBucketLifecycleConfiguration``), the
    same as the template's: audio under ``incoming/`` expires after ``incoming_expiry_days`` (its noncurrent
    versions after :data:`NONCURRENT_INCOMING_DAYS`); noncurrent versions of ``results/`` expire after
    :data:`NONCURRENT_RESULT_DAYS`, and their delete markers once alone; unfinished multipart uploads are
    aborted after 1 day."""
    return [
        {
            "ID": EXPIRE_INCOMING_RULE,
            "Status": "Enabled",
            "Filter": {"Prefix": INCOMING_PREFIX},
            "Expiration": {"Days": spec.incoming_expiry_days},
            "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_INCOMING_DAYS},
        },
        {
            "ID": RESULT_VERSIONS_RULE,
            "Status": "Enabled",
            "Filter": {"Prefix": RESULTS_PREFIX},
            "Expiration": {"ExpiredObjectDeleteMarker": True},
            "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_RESULT_DAYS},
        },
        {
            "ID": ABORT_UPLOADS_RULE,
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        },
    ]


def _json_text(value: str) -> str:
    """``value`` as the inside of a JSON string (the user data writes it between quotes)."""
    return json.dumps(value)[1:-1]


def template_parameters(spec: PipelineSpec, notifier_code: AssetLocation) -> dict[str, str]:
    """The values of ``stack.yaml``'s ``Parameters`` for ``spec`` (CloudFormation takes them as strings),
    with the notifier's zip at ``notifier_code`` (uploaded by the deploy:
    :mod:`gpu_transcribe.aws.pipeline.assets`)."""
    from gpu_transcribe.aws.bedrock import foundation_model_id

    def flag(value: bool) -> str:
        return "true" if value else "false"

    model_id = spec.correct_model_id
    return {
        "PipelineName": spec.name,
        "ImageId": spec.image_id,
        "VpcId": spec.vpc_id,
        "SubnetIds": ",".join(spec.subnet_ids),
        "RootDeviceName": spec.root_device_name,
        "RootVolumeSizeGiB": str(spec.root_volume_size_gib or 0),
        "MaxWorkers": str(spec.max_workers),
        "JobsPerWorker": str(spec.jobs_per_worker),
        "MaxAttempts": str(spec.max_attempts),
        "MaxReceiveCount": str(spec.max_receive_count),
        "VisibilityTimeoutS": str(spec.visibility_timeout_s),
        "ExistingBucket": spec.bucket or "",
        "IncomingExpiryDays": str(spec.incoming_expiry_days),
        "JobRetentionDays": str(spec.job_retention_days),
        "Language": _json_text(spec.language),
        "Model": _json_text(spec.model),
        # Laid out as the user data's JSON around it (two spaces a level, inside "defaults").
        "FormatsJson": json.dumps(list(spec.formats), indent=2).replace("\n", "\n    "),
        "Correct": flag(spec.correct),
        "CorrectModelId": _json_text(model_id),
        "CorrectFoundationModelId": foundation_model_id(model_id) if model_id else "",
        "CorrectRegion": spec.correct_region,
        "LoginUser": spec.login_user,
        "RemotePrefix": spec.remote_prefix,
        "WorkerIdleExitS": str(WORKER_IDLE_EXIT_S),
        "WorkerMaxLifetimeH": str(WORKER_MAX_LIFETIME_H),
        "DeadmanCommands": "\n".join(fleet_deadman_commands()),
        "ScalerCode": scaler_source(),
        "NotifierCodeBucket": notifier_code.bucket,
        "NotifierCodeKey": notifier_code.key,
        "NotifierCodeVersion": notifier_code.version_id,
        "ReserveConcurrency": flag(spec.reserve_concurrency),
        "WebhookUrl": spec.webhook_url,
        "AllowPrivateWebhooks": flag(spec.allow_private_webhooks),
        "WebhookMaxAttempts": str(spec.webhook_max_attempts),
        "WebhookTimeoutS": str(spec.webhook_timeout_s),
        "WebhookBackoffBaseS": str(spec.webhook_backoff_base_s),
        "WebhookBackoffCapS": str(spec.webhook_backoff_cap_s),
    }


@functools.cache
def _template_text() -> str:
    return resources.files("gpu_transcribe.pipeline").joinpath(TEMPLATE_FILE).read_text(encoding="utf-8")


def assets_template_text() -> str:
    """``assets.yaml`` as it is: the region's assets stack (:mod:`gpu_transcribe.aws.pipeline.assets`), sent
    unchanged (its parameters are the owner, the creation time and the version)."""
    return (
        resources.files("gpu_transcribe.pipeline").joinpath(ASSETS_TEMPLATE_FILE).read_text(encoding="utf-8")
    )


def load_template() -> dict[str, Any]:
    """``stack.yaml`` as a dict (parsed anew each call, so callers may change it): the resources with every
    parameter unfilled."""
    import yaml  # here, not at the top: only a deploy reads the file

    loaded: dict[str, Any] = yaml.safe_load(_template_text())
    return loaded


def _add_tags(node: Any, tags: list[dict[str, str]]) -> None:
    """Put ``tags`` before the entries of every ``Tags`` list under ``node`` (each list holds the resource's
    ``Name``); with ``PropagateAtLaunch`` where the list's entries have it (the Auto Scaling group's)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Tags" and isinstance(value, list):
                launch = {"PropagateAtLaunch": True} if value and "PropagateAtLaunch" in value[0] else {}
                value[:0] = [{**tag, **launch} for tag in tags]
            else:
                _add_tags(value, tags)
    elif isinstance(node, list):
        for item in node:
            _add_tags(item, tags)


def build_template(spec: PipelineSpec) -> dict[str, Any]:
    """``stack.yaml`` filled for ``spec`` with what parameters cannot carry: the description, every
    resource's tags (:meth:`PipelineSpec.resource_tags`), one instance-type override per type. The values
    of its parameters are :func:`template_parameters`."""
    template = load_template()
    template["Description"] = f"gpu-transcribe pipeline {spec.name} (gpu-transcribe {__version__})"
    _add_tags(template["Resources"], [{"Key": k, "Value": v} for k, v in spec.resource_tags()])
    policy = template["Resources"]["WorkerGroup"]["Properties"]["MixedInstancesPolicy"]
    policy["LaunchTemplate"]["Overrides"] = [{"InstanceType": t} for t in spec.instance_types]
    return template


def template_json(spec: PipelineSpec) -> str:
    """:func:`build_template` as compact JSON text (sorted keys, so the same spec gives the same bytes; no
    indentation, so that tags leave room under CloudFormation's 51,200-byte limit on an inline template)."""
    return json.dumps(build_template(spec), sort_keys=True, separators=(",", ":"))
