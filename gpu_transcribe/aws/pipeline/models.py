"""Frozen data classes of the pipeline's services: the CloudFormation stack, its outputs, the queues' counts
and the worker group.

Nothing here imports boto3. The pipeline's tag (:data:`~gpu_transcribe.aws.models.TAG_PIPELINE`) and role
(:data:`~gpu_transcribe.aws.models.PIPELINE_ROLE`) are with the other tags in
:mod:`gpu_transcribe.aws.models`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gpu_transcribe.aws.models import Market
from gpu_transcribe.pipeline.contract import (
    OUTPUT_BUCKET as OUTPUT_BUCKET,
)
from gpu_transcribe.pipeline.contract import (
    OUTPUT_BUCKET_CREATED as OUTPUT_BUCKET_CREATED,
)
from gpu_transcribe.pipeline.contract import (
    OUTPUT_DLQ_URL as OUTPUT_DLQ_URL,
)
from gpu_transcribe.pipeline.contract import (
    OUTPUT_GROUP as OUTPUT_GROUP,
)
from gpu_transcribe.pipeline.contract import (
    OUTPUT_NOTIFIER as OUTPUT_NOTIFIER,
)
from gpu_transcribe.pipeline.contract import (
    OUTPUT_QUEUE_ARN as OUTPUT_QUEUE_ARN,
)
from gpu_transcribe.pipeline.contract import (
    OUTPUT_QUEUE_URL as OUTPUT_QUEUE_URL,
)
from gpu_transcribe.pipeline.contract import (
    OUTPUT_RESULTS_QUEUE_URL as OUTPUT_RESULTS_QUEUE_URL,
)
from gpu_transcribe.pipeline.contract import (
    OUTPUT_SCALER as OUTPUT_SCALER,
)
from gpu_transcribe.pipeline.contract import (
    OUTPUT_TABLE as OUTPUT_TABLE,
)
from gpu_transcribe.pipeline.contract import (
    OUTPUT_WEBHOOK_SECRET as OUTPUT_WEBHOOK_SECRET,
)
from gpu_transcribe.pipeline.contract import (
    OUTPUT_WEBHOOKS_DLQ_URL as OUTPUT_WEBHOOKS_DLQ_URL,
)
from gpu_transcribe.pipeline.contract import (
    OUTPUT_WEBHOOKS_QUEUE_URL as OUTPUT_WEBHOOKS_QUEUE_URL,
)
from gpu_transcribe.pipeline.contract import (  # the stack's names: one home, shared with the template
    PIPELINE_STACK_PREFIX as PIPELINE_STACK_PREFIX,
)


def pipeline_stack_name(name: str) -> str:
    """The CloudFormation stack of pipeline ``name``: ``gpu-transcribe-pipeline-<name>``."""
    return f"{PIPELINE_STACK_PREFIX}{name}"


@dataclass(frozen=True)
class StackEvent:
    """One event of a CloudFormation stack (``DescribeStackEvents``).

    Attributes:
        event_id: CloudFormation's id of the event.
        logical_id: the resource's logical id in the template (the stack's own name for the stack).
        resource_type: e.g. ``AWS::SQS::Queue``.
        status: e.g. ``CREATE_IN_PROGRESS``, ``CREATE_FAILED``.
        reason: CloudFormation's status reason, ``""`` if none.
        timestamp: when it happened (UTC).
    """

    event_id: str
    logical_id: str
    resource_type: str
    status: str
    reason: str
    timestamp: datetime


@dataclass(frozen=True)
class StackInfo:
    """A CloudFormation stack as ``DescribeStacks`` reports it.

    Attributes:
        name: the stack name.
        stack_id: its ARN.
        status: e.g. ``CREATE_COMPLETE``, ``UPDATE_ROLLBACK_COMPLETE``.
        status_reason: CloudFormation's reason, ``""`` if none.
        outputs: ``(output key, value)`` pairs sorted by key.
        tags: ``(key, value)`` pairs sorted by key.
        created_at: creation time (UTC), ``None`` if not given.
        updated_at: last update (UTC), ``None`` if never updated.
    """

    name: str
    stack_id: str
    status: str
    status_reason: str
    outputs: tuple[tuple[str, str], ...]
    tags: tuple[tuple[str, str], ...]
    created_at: datetime | None
    updated_at: datetime | None = None

    def output(self, key: str) -> str:
        """The value of output ``key``, ``""`` if the stack has no such output."""
        return dict(self.outputs).get(key, "")


@dataclass(frozen=True)
class PipelineOutputs:
    """What a pipeline stack made: the names other commands (``submit``, ``jobs``, the worker) use.

    Attributes:
        bucket: the S3 bucket (``incoming/`` audio, ``results/`` transcripts).
        bucket_created: True when the stack created the bucket (False: the user's ``--s3-bucket``).
        queue_url: the jobs queue's URL.
        queue_arn: the jobs queue's ARN (the bucket notification's destination).
        dead_letter_queue_url: the dead-letter queue's URL.
        table: the DynamoDB jobs table's name.
        group: the worker Auto Scaling group's name.
        scaler_function: the scaler Lambda function's name.
        results_queue_url: the results queue (job events; ``jobs watch``); ``""`` on an older stack.
        webhooks_queue_url: the notifier's queue; ``""`` on an older stack.
        webhooks_dead_letter_queue_url: events the notifier could not deliver.
        webhook_secret: the Secrets Manager name of the webhook signing secret.
        notifier_function: the notifier Lambda function's name.
    """

    bucket: str
    bucket_created: bool
    queue_url: str
    queue_arn: str
    dead_letter_queue_url: str
    table: str
    group: str
    scaler_function: str
    results_queue_url: str = ""
    webhooks_queue_url: str = ""
    webhooks_dead_letter_queue_url: str = ""
    webhook_secret: str = ""
    notifier_function: str = ""

    @classmethod
    def from_stack(cls, stack: StackInfo) -> PipelineOutputs:
        """Read the outputs of a pipeline stack (missing outputs become ``""``)."""
        return cls(
            bucket=stack.output(OUTPUT_BUCKET),
            bucket_created=stack.output(OUTPUT_BUCKET_CREATED) == "true",
            queue_url=stack.output(OUTPUT_QUEUE_URL),
            queue_arn=stack.output(OUTPUT_QUEUE_ARN),
            dead_letter_queue_url=stack.output(OUTPUT_DLQ_URL),
            table=stack.output(OUTPUT_TABLE),
            group=stack.output(OUTPUT_GROUP),
            scaler_function=stack.output(OUTPUT_SCALER),
            results_queue_url=stack.output(OUTPUT_RESULTS_QUEUE_URL),
            webhooks_queue_url=stack.output(OUTPUT_WEBHOOKS_QUEUE_URL),
            webhooks_dead_letter_queue_url=stack.output(OUTPUT_WEBHOOKS_DLQ_URL),
            webhook_secret=stack.output(OUTPUT_WEBHOOK_SECRET),
            notifier_function=stack.output(OUTPUT_NOTIFIER),
        )


@dataclass(frozen=True)
class QueueCounts:
    """SQS's approximate message counts of one queue (``GetQueueAttributes``; "approximate" because SQS is
    distributed: counts lag by up to a minute, SQS Developer Guide).

    Attributes:
        visible: messages waiting to be received (``ApproximateNumberOfMessages``).
        in_flight: received and not yet deleted or released (``ApproximateNumberOfMessagesNotVisible``).
        delayed: not yet visible because of a delay (``ApproximateNumberOfMessagesDelayed``).
    """

    visible: int
    in_flight: int
    delayed: int = 0


@dataclass(frozen=True)
class GroupInstance:
    """One instance of an Auto Scaling group (``DescribeAutoScalingGroups``).

    Attributes:
        instance_id: e.g. ``i-0123456789abcdef0``.
        instance_type: e.g. ``g4dn.xlarge``.
        zone: its availability zone.
        lifecycle_state: ``Pending``, ``InService``, ``Terminating``... (EC2 Auto Scaling's states).
        health: ``Healthy`` or ``Unhealthy``.
        protected: scale-in protection is on (the worker sets it while busy).
        market: ``spot`` or ``on-demand`` (EC2's ``InstanceLifecycle``).
    """

    instance_id: str
    instance_type: str
    zone: str
    lifecycle_state: str
    health: str
    protected: bool
    market: Market = "spot"


@dataclass(frozen=True)
class WorkerGroup:
    """An Auto Scaling group's sizes and instances.

    Attributes:
        name: the group's name.
        desired: the desired capacity (instances).
        min_size, max_size: its bounds (instances).
        instances: its instances, sorted by id.
    """

    name: str
    desired: int
    min_size: int
    max_size: int
    instances: tuple[GroupInstance, ...]


@dataclass(frozen=True)
class AssetLocation:
    """Where a Lambda's zip lies in the region's assets bucket (the ``Code`` of its function).

    Attributes:
        bucket: the assets bucket, ``gpu-transcribe-assets-<account>-<region>``.
        key: the object, content-addressed: ``lambda/<name>-<sha256>.zip``.
        version_id: the object's version (the bucket is versioned).
        uploaded: the deploy uploaded it now (``False``: it was there already, the same bytes).
    """

    bucket: str
    key: str
    version_id: str
    uploaded: bool = False
