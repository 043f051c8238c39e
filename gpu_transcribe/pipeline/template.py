"""The pipeline's CloudFormation template, built in Python from a frozen :class:`PipelineSpec`.

One stack per pipeline (``gpu-transcribe-pipeline-<name>``) holds everything: the S3 bucket (or the user's
own), the jobs queue and its dead-letter queue, the DynamoDB jobs table, the worker fleet (IAM role, launch
template, Auto Scaling group) and the scaler (a Lambda run every minute). The spec's values are written into
the template itself (no CloudFormation ``Parameters``): an update is a new template, and a change set shows
exactly what changes. Nothing here calls AWS; :func:`template_json` is what ``create_change_set`` receives.

Where the numbers come from (AWS documentation):

- SQS: retention up to 14 days (1,209,600 s); visibility timeout up to 12 h; a message moves to the
  dead-letter queue after ``maxReceiveCount`` receives (SQS Developer Guide, "Using dead-letter queues").
- S3 event notifications to SQS need a queue policy allowing ``s3.amazonaws.com`` ``sqs:SendMessage``,
  scoped by ``aws:SourceArn``/``aws:SourceAccount`` (S3 User Guide, "Walkthrough: configuring a bucket for
  notifications"); the bucket therefore depends on the queue policy.
- Lambda inline code (``ZipFile``) is limited to 4,096 bytes (CloudFormation, ``AWS::Lambda::Function
  Code``).
- Spot: ``price-capacity-optimized`` is AWS's recommended allocation strategy (EC2 Auto Scaling User Guide,
  "Allocation strategies for multiple instance types").

Names are deterministic (``gpu-transcribe-<name>-jobs``...), so IAM policies can name each resource and the
worker's user data can name the group without a circular reference; the created bucket is
``gpu-transcribe-<name>-<account id>-<region>`` (globally unique, and known before it exists so that the
queue policy can name it).
"""

from __future__ import annotations

import ast
import base64
import json
import re
import shlex
from dataclasses import dataclass
from importlib import resources
from typing import Any

from gpu_transcribe import __version__
from gpu_transcribe.aws.models import PIPELINE_ROLE, TAG_OWNER, TAG_PIPELINE, TAG_ROLE, TAG_VERSION
from gpu_transcribe.aws.pipeline.models import (
    OUTPUT_BUCKET,
    OUTPUT_BUCKET_CREATED,
    OUTPUT_DLQ_URL,
    OUTPUT_GROUP,
    OUTPUT_NOTIFIER,
    OUTPUT_QUEUE_ARN,
    OUTPUT_QUEUE_URL,
    OUTPUT_RESULTS_QUEUE_URL,
    OUTPUT_SCALER,
    OUTPUT_TABLE,
    OUTPUT_WEBHOOK_SECRET,
    OUTPUT_WEBHOOKS_DLQ_URL,
    OUTPUT_WEBHOOKS_QUEUE_URL,
)

# --- the job table's and bucket's layout: the contract with submit, jobs and the worker -----------------

#: Key prefix of audio to transcribe: ``incoming/<job-id>/<file name>`` (submit) or any key (other uploaders).
INCOMING_PREFIX = "incoming/"
#: Key prefix of outputs: ``results/<job-id>/<file name>.<format>``.
RESULTS_PREFIX = "results/"
#: The jobs table's partition key (string).
TABLE_KEY = "job_id"
#: The global secondary index for ``jobs --status``: partition ``status``, sort ``created_at`` (ISO 8601).
STATUS_INDEX = "by-status"
STATUS_ATTRIBUTE = "status"
CREATED_ATTRIBUTE = "created_at"
#: The TTL attribute: a job row is deleted by DynamoDB after this time (Unix epoch seconds, a number).
TTL_ATTRIBUTE = "expires_at"
#: Where the user data writes the pipeline's names for the worker (JSON).
WORKER_CONFIG_PATH = "/etc/gpu-transcribe/pipeline.json"
#: The maximum lifetime the unit gives each worker, hours (``worker --max-lifetime-h``): the backstop that
#: replaces an instance that never goes idle; the scaler starts a fresh one if the backlog needs it.
WORKER_MAX_LIFETIME_H = 12
#: Seconds a worker of the fleet waits with nothing received before it leaves the group
#: (``worker --exit-when-idle``): 5 minutes of an idle g4dn.xlarge at about $0.20/h spot is $0.017
#: (docs/aws.md, "Figures the code relies on"), and a burst that arrives within them finds the model loaded.
WORKER_IDLE_EXIT_S = 300
#: The systemd unit that runs the worker on each instance.
WORKER_UNIT = "gpu-transcribe-worker.service"
#: Seconds after boot at which the fleet's dead-man switch powers an instance off whatever it is doing: the
#: worker's own lifetime plus its grace for the batch in hand (``worker.LIFETIME_GRACE_S``, 15 minutes) and
#: 15 minutes for boot, model load and leaving the group. A worker that works stops long before; this fires
#: for a hung engine or a worker that could not leave.
FLEET_MAX_LIFETIME_S = WORKER_MAX_LIFETIME_H * 3600 + 30 * 60
#: Seconds the fleet's switch waits with the worker's unit not active (failed for good, or exited after it
#: could not leave the group and not restarted) before powering off; systemd restarts a failed worker within
#: 10 s, and the switch's own start counts as the first sign of life, so boot has as long to start it.
FLEET_WORKER_GONE_S = 600
#: The command the fleet's switch runs at each check: success is a sign of life (``deadman.sh``'s ALIVE_CMD).
FLEET_ALIVE_CMD = f"systemctl is-active --quiet {WORKER_UNIT}"

#: SQS's maximum retention, 14 days in seconds (SQS Developer Guide, "Quotas").
QUEUE_RETENTION_S = 1_209_600
#: SQS's maximum visibility timeout, 12 hours in seconds.
MAX_VISIBILITY_TIMEOUT_S = 43_200
#: CloudFormation's limit on inline Lambda code (``Code.ZipFile``), bytes.
INLINE_CODE_LIMIT_BYTES = 4096
#: How often the scaler runs (EventBridge's smallest rate).
SCALER_SCHEDULE = "rate(1 minute)"
#: The scaler's runtime (docs.aws.amazon.com/lambda/latest/dg/lambda-runtimes.html).
SCALER_RUNTIME = "python3.12"
#: The notifier's timeout, seconds: a batch of NOTIFIER_BATCH_SIZE deliveries at up to webhook_timeout_s
#: (at most 30 s) each, plus reading the secret.
NOTIFIER_TIMEOUT_S = 180
#: Messages per notifier invocation (delivered one after another).
NOTIFIER_BATCH_SIZE = 5
#: The most notifier invocations at once: the event source's ``ScalingConfig.MaximumConcurrency`` (2 is SQS
#: event sources' smallest) and the function's reserved concurrency, so a burst of finished jobs reaches a
#: receiver as at most 2 x NOTIFIER_BATCH_SIZE deliveries in flight, one after another per invocation.
NOTIFIER_MAX_CONCURRENCY = 2
#: The scaler's reserved concurrency: one run at a time (it runs every minute and within seconds).
SCALER_MAX_CONCURRENCY = 1
#: Lambda keeps at least this much of an account's concurrency unreserved (Lambda Developer Guide,
#: "Configuring reserved concurrency"): the deploy reserves only if the account has room above it.
LAMBDA_MIN_UNRESERVED = 100
#: Days CloudWatch Logs keeps the scaler's and the notifier's logs.
SCALER_LOG_RETENTION_DAYS = 14

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


#: Queues, the table and the log group go with the stack (jobs in flight are lost; transcripts are in S3).
_DELETED_WITH_STACK = {"DeletionPolicy": "Delete", "UpdateReplacePolicy": "Delete"}


def _tags(spec: PipelineSpec, name: str) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in [*spec.resource_tags(), ("Name", name)]]


def _sub(text: str) -> dict[str, str]:
    return {"Fn::Sub": text}


def _arn(service: str, rest: str) -> dict[str, str]:
    return _sub(f"arn:${{AWS::Partition}}:{service}:${{AWS::Region}}:${{AWS::AccountId}}:{rest}")


def _statement(
    actions: list[str], resources: list[Any], condition: dict[str, Any] | None = None
) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": "Allow", "Action": sorted(actions), "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


def _policy(name: str, statements: list[dict[str, Any]]) -> dict[str, Any]:
    return {"PolicyName": name, "PolicyDocument": {"Version": "2012-10-17", "Statement": statements}}


def _assume(service: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
    }


def bucket_name_sub(spec: PipelineSpec) -> dict[str, str] | str:
    """The bucket's name: the user's, or ``Fn::Sub`` of ``gpu-transcribe-<name>-<account>-<region>``."""
    if spec.bucket:
        return spec.bucket
    return _sub(f"{spec.prefix}-${{AWS::AccountId}}-${{AWS::Region}}")


def _bucket_arn(spec: PipelineSpec, suffix: str = "") -> dict[str, str]:
    if spec.bucket:
        return _sub(f"arn:${{AWS::Partition}}:s3:::{spec.bucket}{suffix}")
    return _sub(f"arn:${{AWS::Partition}}:s3:::{spec.prefix}-${{AWS::AccountId}}-${{AWS::Region}}{suffix}")


def _group_arn(spec: PipelineSpec) -> dict[str, str]:
    return _arn("autoscaling", f"autoScalingGroup:*:autoScalingGroupName/{spec.group_name}")


def _this_group(spec: PipelineSpec) -> dict[str, Any]:
    """The IAM condition that limits an Auto Scaling action to groups tagged with this pipeline's name."""
    return {"StringEquals": {f"autoscaling:ResourceTag/{TAG_PIPELINE}": spec.name}}


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


def scaler_source() -> str:
    """The scaler's Python source (:mod:`gpu_transcribe.aws.pipeline.scaler_lambda`), inlined as the Lambda's
    code.

    Raises:
        ValueError: it outgrew CloudFormation's 4,096-byte inline limit.
    """
    source = resources.files("gpu_transcribe.aws").joinpath("scaler_lambda.py").read_text(encoding="utf-8")
    size = len(source.encode())
    if size > INLINE_CODE_LIMIT_BYTES:
        raise ValueError(
            f"the scaler's source is {size} bytes, over the {INLINE_CODE_LIMIT_BYTES}-byte limit"
        )
    return source


def _statements(source: str) -> list[ast.stmt]:
    """``source``'s top-level statements without docstrings, annotations, ``__future__`` and
    ``gpu_transcribe_api.webhook_common`` imports (the notifier's inline code defines those names itself)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.Module):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                node.body = node.body[1:] or [ast.Pass()]
        if isinstance(node, ast.FunctionDef):
            node.returns = None
            arguments = node.args
            for arg in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]:
                arg.annotation = None
            for maybe in (arguments.vararg, arguments.kwarg):
                if maybe is not None:
                    maybe.annotation = None
    return [
        node
        for node in tree.body
        if not (
            isinstance(node, ast.ImportFrom)
            and node.module in ("__future__", "gpu_transcribe_api.webhook_common")
        )
        and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
    ]


def _defined(node: ast.stmt) -> set[str]:
    """The names a top-level statement binds."""
    if isinstance(node, ast.FunctionDef | ast.ClassDef):
        return {node.name}
    if isinstance(node, ast.Assign):
        return {target.id for target in node.targets if isinstance(target, ast.Name)}
    if isinstance(node, ast.Import | ast.ImportFrom):
        return {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return set()


def _used(nodes: list[ast.stmt]) -> set[str]:
    return {name.id for node in nodes for name in ast.walk(node) if isinstance(name, ast.Name)}


def _shorten_locals(nodes: list[ast.stmt]) -> None:
    """Rename the variables each top-level function assigns (not its parameters, which callers may pass by
    keyword) to the shortest names no part of ``nodes`` uses; comprehension and ``except ... as`` names
    included. The program does the same; its local names are most of what is left to cut."""
    used = {n.id for node in nodes for n in ast.walk(node) if isinstance(n, ast.Name)}
    used |= {n.arg for node in nodes for n in ast.walk(node) if isinstance(n, ast.arg)}
    letters = "abcdefghijklmnopqrstuvwxyz"
    short = [name for name in [*letters, *(a + b for a in letters for b in letters)] if name not in used]
    for function in (node for node in nodes if isinstance(node, ast.FunctionDef)):
        inner = list(ast.walk(function))
        handlers = [n for n in inner if isinstance(n, ast.ExceptHandler) and n.name]
        assigned = {n.id for n in inner if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        assigned |= {str(handler.name) for handler in handlers}
        assigned -= {n.arg for n in inner if isinstance(n, ast.arg)}
        assigned -= {name for n in inner if isinstance(n, ast.Global | ast.Nonlocal) for name in n.names}
        mapping = dict(zip(sorted(name for name in assigned if len(name) > 1), short, strict=False))
        for n in inner:
            if isinstance(n, ast.Name) and n.id in mapping:
                n.id = mapping[n.id]
        for handler in handlers:
            handler.name = mapping.get(str(handler.name), handler.name)


def notifier_source() -> str:
    """The notifier Lambda's inline code: what :mod:`gpu_transcribe.pipeline.notifier` uses of
    :mod:`gpu_transcribe_api.webhook_common`, then the notifier, without docstrings, annotations and unused
    definitions or imports, with short local names (:func:`_shorten_locals`), indented by one space (the
    same program, smaller; the tests run this text).

    Raises:
        ValueError: it outgrew CloudFormation's 4,096-byte inline limit.
    """
    common = _statements(
        resources.files("gpu_transcribe_engine").joinpath("webhook_common.py").read_text(encoding="utf-8")
    )
    notifier = _statements(
        resources.files("gpu_transcribe.pipeline").joinpath("notifier.py").read_text(encoding="utf-8")
    )
    needed = _used(notifier)
    kept: list[ast.stmt] = []
    while True:  # the common definitions the notifier needs, and those they need
        kept = [
            node
            for node in common
            if _defined(node) & needed and not isinstance(node, ast.Import | ast.ImportFrom)
        ]
        grown = needed | _used(kept)
        if grown == needed:
            break
        needed = grown
    program = [*kept, *(node for node in notifier if not isinstance(node, ast.Import | ast.ImportFrom))]
    needed = _used(program)
    modules: dict[str, None] = {}  # ``import a, b`` in one line: fewer bytes
    body: list[ast.stmt] = []
    for node in [*common, *notifier]:
        if isinstance(node, ast.Import):
            modules |= {alias.name: None for alias in node.names if alias.name.split(".")[0] in needed}
        elif isinstance(node, ast.ImportFrom):
            node.names = [alias for alias in node.names if (alias.asname or alias.name) in needed]
            if node.names and ast.unparse(node) not in {ast.unparse(seen) for seen in body}:
                body.append(node)
    _shorten_locals(program)
    body = [ast.Import(names=[ast.alias(name) for name in modules]), *body, *program]
    text = ast.unparse(ast.Module(body=body, type_ignores=[]))
    lines = [
        re.sub(r"^(?:    )+", lambda m: " " * (len(m.group(0)) // 4), line) for line in text.splitlines()
    ]
    source = "\n".join(line for line in lines if line.strip()) + "\n"
    size = len(source.encode())
    if size > INLINE_CODE_LIMIT_BYTES:
        raise ValueError(
            f"the notifier's source is {size} bytes, over the {INLINE_CODE_LIMIT_BYTES}-byte limit"
        )
    return source


def worker_config(spec: PipelineSpec) -> dict[str, Any]:
    """What the user data writes to :data:`WORKER_CONFIG_PATH` for the worker (CloudFormation ``${...}``
    references in values are substituted at deploy time)."""
    return {
        "pipeline": spec.name,
        "region": "${AWS::Region}",
        "bucket": spec.bucket or "${Bucket}",
        "queue_url": "${JobsQueue}",
        "dead_letter_queue_url": "${DeadLetterQueue}",
        "table": "${JobsTable}",
        "group": spec.group_name,
        "max_attempts": spec.max_attempts,
        "visibility_timeout_s": spec.visibility_timeout_s,
        "job_retention_days": spec.job_retention_days,
        "incoming_prefix": INCOMING_PREFIX,
        "results_prefix": RESULTS_PREFIX,
        "defaults": {
            "language": spec.language,
            "model": spec.model,
            "formats": list(spec.formats),
            "correct": spec.correct,
        },
        "correct_model_id": spec.correct_model_id,
        "correct_region": spec.correct_region or "${AWS::Region}",
        "results_queue_url": "${ResultsQueue}",
        "webhooks_queue_url": "${WebhooksQueue}",
        "pipeline_webhook": bool(spec.webhook_url),
        "allow_private_webhooks": spec.allow_private_webhooks,
    }


def fleet_deadman_script() -> str:
    """``deadman.sh`` without its comment lines and blank lines (the shebang kept), as the fleet's user data
    carries it: the template must fit CloudFormation's 51,200-byte inline limit."""
    from gpu_transcribe.aws.ec2.userdata import deadman_script

    lines = deadman_script().splitlines()
    kept = [lines[0], *(line for line in lines[1:] if line.strip() and not line.lstrip().startswith("#"))]
    return "\n".join(kept) + "\n"


def fleet_deadman_commands() -> list[str]:
    """The user data lines that write and start the dead-man switch (``gpu_transcribe/data/deadman.sh``, the
    one ``run`` uses) on a fleet instance: power-off :data:`FLEET_MAX_LIFETIME_S` after boot, and
    :data:`FLEET_WORKER_GONE_S` after the worker's unit was last active; ``shutdown -P`` two minutes after
    the lifetime as a second, independent timer. The script travels base64-encoded, so neither the heredoc nor
    ``Fn::Sub`` (which reads ``${...}``) can change it. An instance that powers off leaves the group's
    running instances; the group's EC2 health check replaces it, and the replacement works on the backlog
    or, idle, leaves with the desired capacity decremented."""
    from gpu_transcribe.aws.ec2.userdata import (
        DEADMAN_CHECK_INTERVAL_S,
        DEADMAN_PATH,
        DEADMAN_UNIT,
        HARD_STOP_MARGIN_MINUTES,
        HEARTBEAT_PATH,
    )

    encoded = base64.b64encode(fleet_deadman_script().encode("utf-8")).decode("ascii")
    env = {
        "MAX_LIFETIME_S": str(FLEET_MAX_LIFETIME_S),
        "HEARTBEAT_FILE": HEARTBEAT_PATH,
        "HEARTBEAT_TIMEOUT_S": str(FLEET_WORKER_GONE_S),
        "CHECK_INTERVAL_S": str(DEADMAN_CHECK_INTERVAL_S),
        "ALIVE_CMD": FLEET_ALIVE_CMD,
    }
    start = [
        "systemd-run",
        f"--unit={DEADMAN_UNIT}",
        "--description=gpu-transcribe dead-man switch",
        *(f"--setenv={k}={v}" for k, v in env.items()),
        "/bin/sh",
        DEADMAN_PATH,
    ]
    hard_stop_minutes = FLEET_MAX_LIFETIME_S // 60 + HARD_STOP_MARGIN_MINUTES
    return [
        f"install -d -m 0755 {shlex.quote(DEADMAN_PATH.rsplit('/', 1)[0])}",
        f"base64 -d > {shlex.quote(DEADMAN_PATH)} <<'DEADMAN'",
        *(encoded[i : i + 76] for i in range(0, len(encoded), 76)),
        "DEADMAN",
        f"chmod 0755 {shlex.quote(DEADMAN_PATH)}",
        shlex.join(start),
        f"shutdown -P +{hard_stop_minutes}",
    ]


def user_data(spec: PipelineSpec) -> str:
    """The workers' boot script (``Fn::Sub`` text): starts the dead-man switch first
    (:func:`fleet_deadman_commands`), writes the pipeline's names, then runs
    ``gpu-transcribe worker --pipeline NAME --exit-when-idle 300 --max-lifetime-h 12`` under systemd as the
    image's user, restarted if it fails (an exit when idle or at the lifetime is not a failure: the instance
    has left the group and is being terminated; a worker that could not leave exits 1 and is restarted)."""
    config = json.dumps(worker_config(spec), indent=2)
    binary = f"{spec.remote_prefix}/venv/bin/gpu-transcribe"
    return "\n".join(
        [
            "#!/bin/bash",
            "set -euo pipefail",
            *fleet_deadman_commands(),
            "install -d -m 0755 /etc/gpu-transcribe",
            f"cat > {WORKER_CONFIG_PATH} <<'JSON'",
            config,
            "JSON",
            f"cat > /etc/systemd/system/{WORKER_UNIT} <<'UNIT'",
            "[Unit]",
            f"Description=gpu-transcribe pipeline worker ({spec.name})",
            "Wants=network-online.target",
            "After=network-online.target",
            "[Service]",
            f"User={spec.login_user}",
            "Environment=GPU_TRANSCRIBE_REGION=${AWS::Region}",
            f"ExecStart={binary} worker --pipeline {spec.name} --exit-when-idle {WORKER_IDLE_EXIT_S} "
            f"--max-lifetime-h {WORKER_MAX_LIFETIME_H}",
            "Restart=on-failure",
            "RestartSec=10",
            "[Install]",
            "WantedBy=multi-user.target",
            "UNIT",
            "systemctl daemon-reload",
            f"systemctl enable --now {WORKER_UNIT}",
            "",
        ]
    )


def _storage(spec: PipelineSpec) -> dict[str, Any]:
    """Bucket (unless the user's), its TLS-only policy, the queues and the queue policy, the table."""
    out: dict[str, Any] = {}
    if not spec.bucket:
        out["Bucket"] = {
            "Type": "AWS::S3::Bucket",
            # A bucket holds transcripts: the stack never deletes it (pipeline destroy --delete-data does).
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "DependsOn": ["JobsQueuePolicy"],
            "Properties": {
                "BucketName": bucket_name_sub(spec),
                "BucketEncryption": {
                    "ServerSideEncryptionConfiguration": [
                        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                    ]
                },
                "PublicAccessBlockConfiguration": {
                    "BlockPublicAcls": True,
                    "BlockPublicPolicy": True,
                    "IgnorePublicAcls": True,
                    "RestrictPublicBuckets": True,
                },
                "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
                # A worker's PutObject over a transcript leaves the old one as a noncurrent version.
                "VersioningConfiguration": {"Status": "Enabled"},
                "LifecycleConfiguration": {
                    "Rules": [
                        {
                            "Id": EXPIRE_INCOMING_RULE,
                            "Status": "Enabled",
                            "Prefix": INCOMING_PREFIX,
                            "ExpirationInDays": spec.incoming_expiry_days,
                            "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_INCOMING_DAYS},
                        },
                        {
                            "Id": RESULT_VERSIONS_RULE,
                            "Status": "Enabled",
                            "Prefix": RESULTS_PREFIX,
                            "ExpiredObjectDeleteMarker": True,
                            "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_RESULT_DAYS},
                        },
                        {
                            "Id": ABORT_UPLOADS_RULE,
                            "Status": "Enabled",
                            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                        },
                    ]
                },
                "NotificationConfiguration": {
                    "QueueConfigurations": [
                        {
                            "Event": "s3:ObjectCreated:*",
                            "Queue": {"Fn::GetAtt": ["JobsQueue", "Arn"]},
                            "Filter": {"S3Key": {"Rules": [{"Name": "prefix", "Value": INCOMING_PREFIX}]}},
                        }
                    ]
                },
                "Tags": _tags(spec, f"{spec.prefix}-bucket"),
            },
        }
        out["BucketPolicy"] = {
            "Type": "AWS::S3::BucketPolicy",
            "Properties": {
                "Bucket": {"Ref": "Bucket"},
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "TlsOnly",
                            "Effect": "Deny",
                            "Principal": "*",
                            "Action": "s3:*",
                            "Resource": [_bucket_arn(spec), _bucket_arn(spec, "/*")],
                            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                        }
                    ],
                },
            },
        }
    out["DeadLetterQueue"] = {
        "Type": "AWS::SQS::Queue",
        **_DELETED_WITH_STACK,
        "Properties": {
            "QueueName": spec.dead_letter_queue_name,
            "SqsManagedSseEnabled": True,
            "MessageRetentionPeriod": QUEUE_RETENTION_S,
            "Tags": _tags(spec, spec.dead_letter_queue_name),
        },
    }
    out["JobsQueue"] = {
        "Type": "AWS::SQS::Queue",
        **_DELETED_WITH_STACK,
        "Properties": {
            "QueueName": spec.queue_name,
            "SqsManagedSseEnabled": True,
            "MessageRetentionPeriod": QUEUE_RETENTION_S,
            "VisibilityTimeout": spec.visibility_timeout_s,
            "ReceiveMessageWaitTimeSeconds": 20,
            "RedrivePolicy": {
                "deadLetterTargetArn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]},
                "maxReceiveCount": spec.max_receive_count,
            },
            "Tags": _tags(spec, spec.queue_name),
        },
    }
    out["JobsQueuePolicy"] = {
        "Type": "AWS::SQS::QueuePolicy",
        "Properties": {
            "Queues": [{"Ref": "JobsQueue"}],
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "ThisBucketOnly",
                        "Effect": "Allow",
                        "Principal": {"Service": "s3.amazonaws.com"},
                        "Action": "sqs:SendMessage",
                        "Resource": {"Fn::GetAtt": ["JobsQueue", "Arn"]},
                        "Condition": {
                            "ArnEquals": {"aws:SourceArn": _bucket_arn(spec)},
                            "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
                        },
                    }
                ],
            },
        },
    }
    out["JobsTable"] = {
        "Type": "AWS::DynamoDB::Table",
        **_DELETED_WITH_STACK,
        "Properties": {
            "TableName": spec.table_name,
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [
                {"AttributeName": TABLE_KEY, "AttributeType": "S"},
                {"AttributeName": STATUS_ATTRIBUTE, "AttributeType": "S"},
                {"AttributeName": CREATED_ATTRIBUTE, "AttributeType": "S"},
            ],
            "KeySchema": [{"AttributeName": TABLE_KEY, "KeyType": "HASH"}],
            "GlobalSecondaryIndexes": [
                {
                    "IndexName": STATUS_INDEX,
                    "KeySchema": [
                        {"AttributeName": STATUS_ATTRIBUTE, "KeyType": "HASH"},
                        {"AttributeName": CREATED_ATTRIBUTE, "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "SSESpecification": {"SSEEnabled": True},
            "TimeToLiveSpecification": {"AttributeName": TTL_ATTRIBUTE, "Enabled": True},
            "Tags": _tags(spec, spec.table_name),
        },
    }
    return out


def worker_policy_statements(spec: PipelineSpec) -> list[dict[str, Any]]:
    """The worker role's permissions: this queue, this table, the bucket's two prefixes, leaving this
    group."""
    queue = {"Fn::GetAtt": ["JobsQueue", "Arn"]}
    table = {"Fn::GetAtt": ["JobsTable", "Arn"]}
    return [
        _statement(
            [
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:ChangeMessageVisibility",
                "sqs:GetQueueAttributes",
            ],
            [queue],
        ),
        # Dead-lettering a job that failed max_attempts times at once, instead of waiting for more receives.
        _statement(["sqs:SendMessage"], [{"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}]),
        # Job events (gpu_transcribe.pipeline.results.publish_job_event).
        _statement(
            ["sqs:SendMessage"],
            [{"Fn::GetAtt": ["ResultsQueue", "Arn"]}, {"Fn::GetAtt": ["WebhooksQueue", "Arn"]}],
        ),
        _statement(["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"], [table]),
        _statement(["s3:GetObject"], [_bucket_arn(spec, f"/{INCOMING_PREFIX}*")]),
        _statement(["s3:PutObject"], [_bucket_arn(spec, f"/{RESULTS_PREFIX}*")]),
        _statement(
            ["autoscaling:TerminateInstanceInAutoScalingGroup", "autoscaling:SetInstanceProtection"],
            [_group_arn(spec)],
            _this_group(spec),
        ),
        *_bedrock_statements(spec),
    ]


def _bedrock_statements(spec: PipelineSpec) -> list[dict[str, Any]]:
    """With ``correct``: ``bedrock:InvokeModel`` (Converse is authorised by it) on the model's
    foundation-model ARN in the Bedrock region and, for an inference profile id, on the profile's ARN and the
    foundation model in every region the profile may route to (``*``: Bedrock's documented policy for
    cross-region inference); ``bedrock:GetFoundationModel`` for the model check. Without: nothing."""
    if not spec.correct or not spec.correct_model_id:
        return []
    from gpu_transcribe.aws.bedrock import foundation_model_id

    region = spec.correct_region or "${AWS::Region}"
    foundation = foundation_model_id(spec.correct_model_id)
    model_arn = {"Fn::Sub": f"arn:${{AWS::Partition}}:bedrock:{region}::foundation-model/{foundation}"}
    invoke: list[Any] = [model_arn]
    if foundation != spec.correct_model_id:
        invoke = [
            {
                "Fn::Sub": f"arn:${{AWS::Partition}}:bedrock:{region}:${{AWS::AccountId}}:inference-profile/"
                f"{spec.correct_model_id}"
            },
            {"Fn::Sub": f"arn:${{AWS::Partition}}:bedrock:*::foundation-model/{foundation}"},
        ]
    return [
        _statement(["bedrock:InvokeModel"], invoke),
        _statement(["bedrock:GetFoundationModel"], [model_arn]),
    ]


def scaler_policy_statements(spec: PipelineSpec) -> list[dict[str, Any]]:
    """The scaler role's permissions: read this queue's depth, read groups, raise this group, write its
    log."""
    return [
        _statement(["sqs:GetQueueAttributes"], [{"Fn::GetAtt": ["JobsQueue", "Arn"]}]),
        _statement(["autoscaling:DescribeAutoScalingGroups"], ["*"]),
        _statement(["autoscaling:SetDesiredCapacity"], [_group_arn(spec)], _this_group(spec)),
        _statement(
            ["logs:CreateLogStream", "logs:PutLogEvents"], [{"Fn::GetAtt": ["ScalerLogGroup", "Arn"]}]
        ),
    ]


def notifier_policy_statements(spec: PipelineSpec) -> list[dict[str, Any]]:
    """The notifier role's permissions: consume the webhooks queue (the event-source mapping receives and
    deletes; the function sets the visibility of a retry), read the secret, write its log."""
    return [
        _statement(
            [
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:ChangeMessageVisibility",
                "sqs:GetQueueAttributes",
            ],
            [{"Fn::GetAtt": ["WebhooksQueue", "Arn"]}],
        ),
        # By name and Secrets Manager's 6-character suffix: a secret made by the deploy (moto) matches too.
        _statement(
            ["secretsmanager:GetSecretValue"],
            [_arn("secretsmanager", f"secret:{spec.webhook_secret_name}-??????")],
        ),
        _statement(
            ["logs:CreateLogStream", "logs:PutLogEvents"], [{"Fn::GetAtt": ["NotifierLogGroup", "Arn"]}]
        ),
    ]


def _queue(spec: PipelineSpec, name: str, **properties: Any) -> dict[str, Any]:
    return {
        "Type": "AWS::SQS::Queue",
        **_DELETED_WITH_STACK,
        "Properties": {
            "QueueName": name,
            "SqsManagedSseEnabled": True,
            "MessageRetentionPeriod": QUEUE_RETENTION_S,
            **properties,
            "Tags": _tags(spec, name),
        },
    }


def _reserved(spec: PipelineSpec, executions: int) -> dict[str, Any]:
    """A function's ``ReservedConcurrentExecutions`` property, unless the spec reserves none."""
    return {"ReservedConcurrentExecutions": executions} if spec.reserve_concurrency else {}


def _notifications(spec: PipelineSpec) -> dict[str, Any]:
    """The results queue, the webhooks queue and its dead-letter queue, the secret and the notifier."""
    return {
        "ResultsQueue": _queue(spec, spec.results_queue_name, ReceiveMessageWaitTimeSeconds=20),
        "WebhooksDeadLetterQueue": _queue(spec, spec.webhooks_dead_letter_queue_name),
        "WebhooksQueue": _queue(
            spec,
            spec.webhooks_queue_name,
            # At least the function's timeout (Lambda requires it); a failed delivery sets its own.
            VisibilityTimeout=NOTIFIER_TIMEOUT_S * 6,
            RedrivePolicy={
                "deadLetterTargetArn": {"Fn::GetAtt": ["WebhooksDeadLetterQueue", "Arn"]},
                "maxReceiveCount": spec.webhook_max_attempts,
            },
        ),
        "WebhookSecret": {
            "Type": "AWS::SecretsManager::Secret",
            **_DELETED_WITH_STACK,
            "Properties": {
                "Name": spec.webhook_secret_name,
                "Description": f"gpu-transcribe pipeline {spec.name}: webhook signing secret(s)",
                # Replaced by a whsec_ secret by the deploy (Secrets Manager cannot generate that form).
                "GenerateSecretString": {
                    "SecretStringTemplate": json.dumps({"previous": None, "previous_until": None}),
                    "GenerateStringKey": "current",
                    "PasswordLength": 44,
                    "ExcludePunctuation": True,
                },
                "Tags": _tags(spec, spec.webhook_secret_name),
            },
        },
        "NotifierLogGroup": {
            "Type": "AWS::Logs::LogGroup",
            **_DELETED_WITH_STACK,
            "Properties": {
                "LogGroupName": f"/aws/lambda/{spec.notifier_name}",
                "RetentionInDays": SCALER_LOG_RETENTION_DAYS,
                "Tags": _tags(spec, spec.notifier_name),
            },
        },
        "NotifierRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "Description": f"gpu-transcribe pipeline {spec.name}: webhook notifier",
                "AssumeRolePolicyDocument": _assume("lambda.amazonaws.com"),
                "Policies": [_policy("notifier", notifier_policy_statements(spec))],
                "Tags": _tags(spec, spec.notifier_name),
            },
        },
        "NotifierFunction": {
            "Type": "AWS::Lambda::Function",
            "DependsOn": ["NotifierLogGroup"],
            "Properties": {
                "FunctionName": spec.notifier_name,
                "Description": f"gpu-transcribe pipeline {spec.name}: delivers signed job webhooks",
                "Runtime": SCALER_RUNTIME,
                "Handler": "index.handler",
                "Code": {"ZipFile": notifier_source()},
                "Role": {"Fn::GetAtt": ["NotifierRole", "Arn"]},
                "Timeout": NOTIFIER_TIMEOUT_S,
                "MemorySize": 128,
                **_reserved(spec, NOTIFIER_MAX_CONCURRENCY),
                "Environment": {
                    "Variables": {
                        "QUEUE_URL": {"Ref": "WebhooksQueue"},
                        "SECRET_ID": spec.webhook_secret_name,
                        "WEBHOOK_URL": spec.webhook_url,
                        "ALLOW_PRIVATE": "1" if spec.allow_private_webhooks else "0",
                        "TIMEOUT_S": str(spec.webhook_timeout_s),
                        "BASE_S": str(spec.webhook_backoff_base_s),
                        "CAP_S": str(spec.webhook_backoff_cap_s),
                    }
                },
                "Tags": _tags(spec, spec.notifier_name),
            },
        },
        "NotifierMapping": {
            "Type": "AWS::Lambda::EventSourceMapping",
            "Properties": {
                "EventSourceArn": {"Fn::GetAtt": ["WebhooksQueue", "Arn"]},
                "FunctionName": {"Ref": "NotifierFunction"},
                "BatchSize": NOTIFIER_BATCH_SIZE,
                "ScalingConfig": {"MaximumConcurrency": NOTIFIER_MAX_CONCURRENCY},
                "FunctionResponseTypes": ["ReportBatchItemFailures"],
                "Tags": _tags(spec, spec.notifier_name),
            },
        },
    }


def _root_volume(spec: PipelineSpec) -> dict[str, Any]:
    volume: dict[str, Any] = {"Encrypted": True, "VolumeType": "gp3", "DeleteOnTermination": True}
    if spec.root_volume_size_gib is not None:
        volume["VolumeSize"] = spec.root_volume_size_gib
    return volume


def _fleet(spec: PipelineSpec) -> dict[str, Any]:
    """The worker role and profile, security group, launch template and Auto Scaling group."""
    instance_tags = _tags(spec, f"{spec.prefix}-worker")
    return {
        "WorkerRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "Description": f"gpu-transcribe pipeline {spec.name}: workers",
                "AssumeRolePolicyDocument": _assume("ec2.amazonaws.com"),
                "Policies": [_policy("worker", worker_policy_statements(spec))],
                "Tags": _tags(spec, f"{spec.prefix}-worker"),
            },
        },
        "WorkerInstanceProfile": {
            "Type": "AWS::IAM::InstanceProfile",
            "Properties": {"Roles": [{"Ref": "WorkerRole"}]},
        },
        "WorkerSecurityGroup": {
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": f"gpu-transcribe pipeline {spec.name} workers: no inbound traffic",
                "VpcId": spec.vpc_id,
                "Tags": _tags(spec, f"{spec.prefix}-worker"),
            },
        },
        "WorkerLaunchTemplate": {
            "Type": "AWS::EC2::LaunchTemplate",
            "Properties": {
                "LaunchTemplateName": f"{spec.prefix}-worker",
                "TagSpecifications": [{"ResourceType": "launch-template", "Tags": instance_tags}],
                "LaunchTemplateData": {
                    "ImageId": spec.image_id,
                    "IamInstanceProfile": {"Arn": {"Fn::GetAtt": ["WorkerInstanceProfile", "Arn"]}},
                    "MetadataOptions": {
                        "HttpEndpoint": "enabled",
                        "HttpTokens": "required",
                        "HttpPutResponseHopLimit": 1,
                        "InstanceMetadataTags": "enabled",
                    },
                    "BlockDeviceMappings": [
                        {
                            "DeviceName": spec.root_device_name,
                            "Ebs": _root_volume(spec),
                        }
                    ],
                    "NetworkInterfaces": [
                        {
                            "DeviceIndex": 0,
                            "AssociatePublicIpAddress": True,
                            "DeleteOnTermination": True,
                            "Groups": [{"Ref": "WorkerSecurityGroup"}],
                        }
                    ],
                    "UserData": {"Fn::Base64": _sub(user_data(spec))},
                    "TagSpecifications": [
                        {"ResourceType": kind, "Tags": instance_tags}
                        for kind in ("instance", "volume", "network-interface")
                    ],
                },
            },
        },
        "WorkerGroup": {
            "Type": "AWS::AutoScaling::AutoScalingGroup",
            "Properties": {
                "AutoScalingGroupName": spec.group_name,
                "MinSize": "0",
                "MaxSize": str(spec.max_workers),
                # No DesiredCapacity: an update must not reset what the scaler and the workers set.
                "VPCZoneIdentifier": list(spec.subnet_ids),
                "CapacityRebalance": True,
                "MixedInstancesPolicy": {
                    "InstancesDistribution": {
                        "OnDemandBaseCapacity": 0,
                        "OnDemandPercentageAboveBaseCapacity": 0,
                        "SpotAllocationStrategy": "price-capacity-optimized",
                    },
                    "LaunchTemplate": {
                        "LaunchTemplateSpecification": {
                            "LaunchTemplateId": {"Ref": "WorkerLaunchTemplate"},
                            "Version": {"Fn::GetAtt": ["WorkerLaunchTemplate", "LatestVersionNumber"]},
                        },
                        "Overrides": [{"InstanceType": t} for t in spec.instance_types],
                    },
                },
                "Tags": [{**tag, "PropagateAtLaunch": True} for tag in instance_tags],
            },
        },
    }


def _scaler(spec: PipelineSpec) -> dict[str, Any]:
    """The scaler's log group, role, function, schedule and the schedule's permission to invoke it."""
    return {
        "ScalerLogGroup": {
            "Type": "AWS::Logs::LogGroup",
            **_DELETED_WITH_STACK,
            "Properties": {
                "LogGroupName": f"/aws/lambda/{spec.scaler_name}",
                "RetentionInDays": SCALER_LOG_RETENTION_DAYS,
                "Tags": _tags(spec, f"{spec.prefix}-scaler"),
            },
        },
        "ScalerRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "Description": f"gpu-transcribe pipeline {spec.name}: scaler",
                "AssumeRolePolicyDocument": _assume("lambda.amazonaws.com"),
                "Policies": [_policy("scaler", scaler_policy_statements(spec))],
                "Tags": _tags(spec, f"{spec.prefix}-scaler"),
            },
        },
        "ScalerFunction": {
            "Type": "AWS::Lambda::Function",
            "DependsOn": ["ScalerLogGroup"],
            "Properties": {
                "FunctionName": spec.scaler_name,
                "Description": f"gpu-transcribe pipeline {spec.name}: raises the workers to the backlog",
                "Runtime": SCALER_RUNTIME,
                "Handler": "index.handler",
                "Code": {"ZipFile": scaler_source()},
                "Role": {"Fn::GetAtt": ["ScalerRole", "Arn"]},
                "Timeout": 30,
                "MemorySize": 128,
                **_reserved(spec, SCALER_MAX_CONCURRENCY),
                "Environment": {
                    "Variables": {
                        "QUEUE_URL": {"Ref": "JobsQueue"},
                        "GROUP_NAME": spec.group_name,
                        "MAX_WORKERS": str(spec.max_workers),
                        "JOBS_PER_WORKER": str(spec.jobs_per_worker),
                    }
                },
                "Tags": _tags(spec, spec.scaler_name),
            },
        },
        "ScalerSchedule": {
            "Type": "AWS::Events::Rule",
            "Properties": {
                "Description": f"gpu-transcribe pipeline {spec.name}: run the scaler",
                "ScheduleExpression": SCALER_SCHEDULE,
                "State": "ENABLED",
                "Targets": [{"Id": "scaler", "Arn": {"Fn::GetAtt": ["ScalerFunction", "Arn"]}}],
                "Tags": _tags(spec, f"{spec.prefix}-scaler"),
            },
        },
        "ScalerPermission": {
            "Type": "AWS::Lambda::Permission",
            "Properties": {
                "FunctionName": {"Ref": "ScalerFunction"},
                "Action": "lambda:InvokeFunction",
                "Principal": "events.amazonaws.com",
                "SourceArn": {"Fn::GetAtt": ["ScalerSchedule", "Arn"]},
            },
        },
    }


def _outputs(spec: PipelineSpec) -> dict[str, Any]:
    bucket: Any = spec.bucket or {"Ref": "Bucket"}
    values: dict[str, tuple[Any, str]] = {
        OUTPUT_BUCKET: (bucket, "S3 bucket: incoming/ audio, results/ transcripts"),
        OUTPUT_BUCKET_CREATED: ("false" if spec.bucket else "true", "whether the stack created the bucket"),
        OUTPUT_QUEUE_URL: ({"Ref": "JobsQueue"}, "jobs queue URL"),
        OUTPUT_QUEUE_ARN: ({"Fn::GetAtt": ["JobsQueue", "Arn"]}, "jobs queue ARN"),
        OUTPUT_DLQ_URL: ({"Ref": "DeadLetterQueue"}, "dead-letter queue URL"),
        OUTPUT_TABLE: ({"Ref": "JobsTable"}, "DynamoDB jobs table"),
        OUTPUT_GROUP: ({"Ref": "WorkerGroup"}, "worker Auto Scaling group"),
        OUTPUT_SCALER: ({"Ref": "ScalerFunction"}, "scaler Lambda function"),
        OUTPUT_RESULTS_QUEUE_URL: ({"Ref": "ResultsQueue"}, "results queue URL (job events, jobs watch)"),
        OUTPUT_WEBHOOKS_QUEUE_URL: ({"Ref": "WebhooksQueue"}, "webhooks queue URL (the notifier's)"),
        OUTPUT_WEBHOOKS_DLQ_URL: ({"Ref": "WebhooksDeadLetterQueue"}, "undelivered webhooks"),
        OUTPUT_WEBHOOK_SECRET: (spec.webhook_secret_name, "Secrets Manager secret: webhook signing"),
        OUTPUT_NOTIFIER: ({"Ref": "NotifierFunction"}, "notifier Lambda function"),
    }
    return {key: {"Description": text, "Value": value} for key, (value, text) in values.items()}


def build_template(spec: PipelineSpec) -> dict[str, Any]:
    """The pipeline's CloudFormation template as a dict (see the module docstring for what it holds)."""
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"gpu-transcribe pipeline {spec.name} (gpu-transcribe {__version__})",
        "Resources": {**_storage(spec), **_fleet(spec), **_scaler(spec), **_notifications(spec)},
        "Outputs": _outputs(spec),
    }


def template_json(spec: PipelineSpec) -> str:
    """:func:`build_template` as JSON text (sorted keys, so the same spec gives the same bytes)."""
    return json.dumps(build_template(spec), indent=1, sort_keys=True)
