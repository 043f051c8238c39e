"""A pipeline stack's outputs, for finding the pipeline off the fleet (``submit``, ``jobs``, ``worker`` on a
laptop). A stop-gap of a few lines: ``pipe-stack``'s :mod:`gpu_transcribe.aws.stack` (``describe_stack``,
``PipelineOutputs``) replaces it when the branches meet."""

from __future__ import annotations

from gpu_transcribe.aws.clients import (
    AwsContext,
    aws_errors,
    cloudformation_client,
    error_code,
    error_message,
)


def stack_outputs(ctx: AwsContext, stack_name: str) -> dict[str, str] | None:
    """``{output key: value}`` of the stack, or ``None`` if there is no such (live) stack.

    Raises:
        CloudError, CredentialsError: the call failed otherwise.
    """
    with aws_errors(ctx, f"describing stack {stack_name}"):
        try:
            stacks = cloudformation_client(ctx).describe_stacks(StackName=stack_name).get("Stacks", [])
        except Exception as exc:
            if error_code(exc) == "ValidationError" and "does not exist" in error_message(exc):
                return None
            raise
    if not stacks or stacks[0].get("StackStatus") == "DELETE_COMPLETE":
        return None
    return {str(o["OutputKey"]): str(o.get("OutputValue", "")) for o in stacks[0].get("Outputs", []) or []}
