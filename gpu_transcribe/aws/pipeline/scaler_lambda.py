"""The pipeline's scaler: desired workers = min(max, ceil(visible jobs / jobs per worker)), only raised.

Runs as the stack's Lambda (inline code, sent as it is by gpu_transcribe/pipeline/lambda_code.py, so stdlib
and boto3 only, and under Lambda's 4096-byte inline limit) every minute, and can be called in-process by
`submit`. It never lowers the desired capacity: idle workers leave by themselves
(TerminateInstanceInAutoScalingGroup).
Environment: QUEUE_URL, GROUP_NAME, MAX_WORKERS, JOBS_PER_WORKER.
"""

import math
import os
from typing import Any

import boto3


def desired_workers(visible_jobs: int, jobs_per_worker: int, max_workers: int) -> int:
    """min(max_workers, ceil(visible_jobs / jobs_per_worker)); 0 for an empty queue."""
    return min(max_workers, math.ceil(max(0, visible_jobs) / max(1, jobs_per_worker)))


def scale(
    sqs: Any, autoscaling: Any, queue_url: str, group_name: str, max_workers: int, jobs_per_worker: int
) -> dict[str, Any]:
    """Raise the group's desired capacity to what the backlog needs; return what was seen and done."""
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    visible = int(attributes["Attributes"]["ApproximateNumberOfMessages"])
    groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group_name])["AutoScalingGroups"]
    current = int(groups[0]["DesiredCapacity"]) if groups else 0
    want = desired_workers(visible, jobs_per_worker, max_workers)
    raised = bool(groups) and want > current
    if raised:
        autoscaling.set_desired_capacity(
            AutoScalingGroupName=group_name, DesiredCapacity=want, HonorCooldown=False
        )
    return {
        "visible": visible,
        "desired_before": current,
        "desired": want if raised else current,
        "raised": raised,
    }


def handler(event: Any, context: Any) -> dict[str, Any]:
    """The Lambda entry point (the schedule's event is ignored)."""
    return scale(
        boto3.client("sqs"),
        boto3.client("autoscaling"),
        os.environ["QUEUE_URL"],
        os.environ["GROUP_NAME"],
        int(os.environ["MAX_WORKERS"]),
        int(os.environ["JOBS_PER_WORKER"]),
    )
