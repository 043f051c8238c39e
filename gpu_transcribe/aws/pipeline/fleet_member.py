"""What a worker running inside the pipeline's Auto Scaling group does to the group about itself.

- While busy it protects itself from scale-in (``SetInstanceProtection``), so the group never picks a
  working instance when its desired capacity falls (EC2 Auto Scaling User Guide, "Use instance scale-in
  protection").
- Idle, it leaves with ``TerminateInstanceInAutoScalingGroup`` and ``ShouldDecrementDesiredCapacity=True``:
  the desired capacity falls with it, so the group is not refilled (an instance that terminated itself through
  EC2 would be replaced at once: the group counts an instance in any state but ``running`` as unhealthy and
  launches a replacement, EC2 Auto Scaling User Guide, "Health checks for instances in an Auto Scaling
  group").
"""

from __future__ import annotations

from gpu_transcribe.aws.clients import AwsContext, autoscaling_client, aws_errors


def set_scale_in_protection(ctx: AwsContext, group: str, instance_id: str, protected: bool) -> None:
    """Turn scale-in protection of ``instance_id`` in ``group`` on or off.

    Raises:
        CloudError, CredentialsError: the call failed.
    """
    with aws_errors(ctx, f"setting scale-in protection of {instance_id} in group {group}"):
        autoscaling_client(ctx).set_instance_protection(
            AutoScalingGroupName=group, InstanceIds=[instance_id], ProtectedFromScaleIn=protected
        )


def leave_group(ctx: AwsContext, instance_id: str) -> None:
    """Terminate ``instance_id`` through its Auto Scaling group, one fewer desired.

    Raises:
        CloudError, CredentialsError: the call failed (e.g. the desired capacity is at the group's minimum:
            ``ValidationError``).
    """
    with aws_errors(ctx, f"leaving the Auto Scaling group as {instance_id}"):
        autoscaling_client(ctx).terminate_instance_in_auto_scaling_group(
            InstanceId=instance_id, ShouldDecrementDesiredCapacity=True
        )
