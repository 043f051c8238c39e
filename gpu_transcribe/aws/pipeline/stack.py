"""CloudFormation stacks: create or update one through a change set, wait while reporting its events, delete.

Generic (any template); the pipeline's template is ``gpu_transcribe/pipeline/stack.yaml``
(:mod:`gpu_transcribe.pipeline.template`).

- Create or update (:func:`deploy_stack`): ``CreateChangeSet`` of type ``CREATE`` (no stack yet, or only the
  ``REVIEW_IN_PROGRESS`` shell an unexecuted change set leaves) or ``UPDATE``, wait until the change set is
  ready, then ``ExecuteChangeSet``. A change set that would change nothing is deleted and reported as
  ``unchanged`` (CloudFormation answers it with status ``FAILED`` and the reason "The submitted information
  didn't contain changes", CloudFormation User Guide, "Update stacks using change sets").
- Waiting (:func:`wait_for_stack`): ``DescribeStacks`` every :data:`POLL_S` seconds; each stack event that
  is new since the operation began goes to the progress callback, oldest first. A rollback or failed status
  becomes :class:`~gpu_transcribe.errors.StackError` naming the first resource that failed and
  CloudFormation's reason (later "Resource creation cancelled" events are consequences, not causes).
- Delete (:func:`delete_stack`): ``DeleteStack`` and wait until it is gone. Resources with
  ``DeletionPolicy: Retain`` stay.

A stack created with a failed first create stays in ``ROLLBACK_COMPLETE`` and can only be deleted: deploying
again says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from gpu_transcribe.aws.clients import (
    AwsContext,
    aws_errors,
    cloudformation_client,
    error_code,
    error_message,
)
from gpu_transcribe.aws.pipeline.models import StackEvent, StackInfo
from gpu_transcribe.common import ProgressCallback, ProgressEvent, no_progress, utc_now
from gpu_transcribe.errors import StackError

#: Seconds between two looks at a stack or change set (CloudFormation's own waiters poll every 5-30 s).
POLL_S = 5.0
#: How long a stack operation may take before we stop waiting, seconds (CloudFormation's default for a
#: resource is far longer; an Auto Scaling group and a Lambda take minutes, not an hour).
STACK_TIMEOUT_S = 3600.0
#: How long a change set may take to be computed, seconds.
CHANGE_SET_TIMEOUT_S = 300.0

_OK_STATUSES = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "DELETE_COMPLETE", "IMPORT_COMPLETE"})
_FAILED_STATUSES = frozenset(
    {
        "CREATE_FAILED",
        "ROLLBACK_COMPLETE",
        "ROLLBACK_FAILED",
        "DELETE_FAILED",
        "UPDATE_FAILED",
        "UPDATE_ROLLBACK_COMPLETE",
        "UPDATE_ROLLBACK_FAILED",
        "IMPORT_ROLLBACK_COMPLETE",
        "IMPORT_ROLLBACK_FAILED",
    }
)
#: Reasons CloudFormation gives to a change set with nothing to do.
_NO_CHANGES = ("didn't contain changes", "No updates are to be performed")
#: Reasons of failures that only follow another resource's failure.
_CONSEQUENCES = ("Resource creation cancelled", "Resource update cancelled", "cancelled")

DeployAction = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True)
class DeployResult:
    """What :func:`deploy_stack` did.

    Attributes:
        action: ``created``, ``updated`` or ``unchanged`` (the change set was empty and was deleted).
        stack: the stack afterwards.
        changes: ``(action, logical id, resource type)`` of each change the change set held
            (``Add``/``Modify``/``Remove``), in CloudFormation's order; empty when unchanged.
        seconds: wall time of the whole operation, seconds.
    """

    action: DeployAction
    stack: StackInfo
    changes: tuple[tuple[str, str, str], ...]
    seconds: float


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def _stack_info(raw: Mapping[str, Any]) -> StackInfo:
    return StackInfo(
        name=raw["StackName"],
        stack_id=raw.get("StackId", ""),
        status=raw.get("StackStatus", ""),
        status_reason=raw.get("StackStatusReason", "") or "",
        outputs=tuple(
            sorted((o["OutputKey"], o.get("OutputValue", "")) for o in raw.get("Outputs", []) or [])
        ),
        tags=tuple(sorted((t["Key"], t["Value"]) for t in raw.get("Tags", []) or [])),
        created_at=_utc(raw.get("CreationTime")),
        updated_at=_utc(raw.get("LastUpdatedTime")),
    )


def describe_stack(ctx: AwsContext, name: str) -> StackInfo | None:
    """The stack named (or with the id) ``name``, or ``None`` if there is none (or it was deleted).

    Raises:
        CredentialsError, CloudError: the call failed otherwise.
    """
    cf = cloudformation_client(ctx)
    with aws_errors(ctx, f"describing stack {name}"):
        try:
            stacks = cf.describe_stacks(StackName=name).get("Stacks", [])
        except Exception as exc:
            if error_code(exc) == "ValidationError" and "does not exist" in error_message(exc):
                return None
            raise
    if not stacks or stacks[0].get("StackStatus") == "DELETE_COMPLETE":
        return None
    return _stack_info(stacks[0])


def list_stacks(ctx: AwsContext, prefix: str) -> tuple[StackInfo, ...]:
    """Every live stack (any status but ``DELETE_COMPLETE``) whose name starts with ``prefix``, by name.

    Raises:
        CredentialsError, CloudError: the call failed.
    """
    cf = cloudformation_client(ctx)
    found = []
    with aws_errors(ctx, f"listing stacks named {prefix}*"):
        for page in cf.get_paginator("describe_stacks").paginate():
            for raw in page.get("Stacks", []):
                if raw["StackName"].startswith(prefix) and raw.get("StackStatus") != "DELETE_COMPLETE":
                    found.append(_stack_info(raw))
    return tuple(sorted(found, key=lambda s: s.name))


def _event(raw: Mapping[str, Any]) -> StackEvent:
    return StackEvent(
        event_id=raw["EventId"],
        logical_id=raw.get("LogicalResourceId", ""),
        resource_type=raw.get("ResourceType", ""),
        status=raw.get("ResourceStatus", ""),
        reason=" ".join(str(raw.get("ResourceStatusReason", "") or "").split()),
        timestamp=_utc(raw.get("Timestamp")) or utc_now(),
    )


def stack_events(
    ctx: AwsContext, stack: str, *, newer_than: Container[str] = (), max_pages: int | None = None
) -> tuple[StackEvent, ...]:
    """The stack's events, oldest first.

    CloudFormation lists events newest first, a page of up to 100 at a time, and keeps them for the stack's
    whole life: reading stops at the first event in ``newer_than`` (everything older is known already), or
    after ``max_pages`` pages.

    Raises:
        CredentialsError, CloudError: the call failed.
    """
    cf = cloudformation_client(ctx)
    events: list[StackEvent] = []
    with aws_errors(ctx, f"reading the events of stack {stack}"):
        pages = cf.get_paginator("describe_stack_events").paginate(StackName=stack)
        for number, page in enumerate(pages, 1):
            raws = page.get("StackEvents", [])
            known = next((n for n, raw in enumerate(raws) if raw["EventId"] in newer_than), None)
            events.extend(_event(raw) for raw in raws[:known])
            if known is not None or (max_pages is not None and number >= max_pages):
                break
    events.reverse()
    return tuple(events)


def latest_event_ids(ctx: AwsContext, stack: str) -> set[str]:
    """The ids of the stack's newest events (one page): enough for :func:`wait_for_stack` to report only
    what happens after now, since it stops reading at the first event it knows."""
    return {e.event_id for e in stack_events(ctx, stack, max_pages=1)}


def describe_event(event: StackEvent) -> str:
    """One line for a progress display: ``JobsQueue (AWS::SQS::Queue): CREATE_COMPLETE``, with the reason."""
    reason = f": {event.reason}" if event.reason else ""
    return f"{event.logical_id} ({event.resource_type}): {event.status}{reason}"


def _failure(stack: StackInfo, events: Sequence[StackEvent]) -> StackError:
    failed = [e for e in events if e.status.endswith("_FAILED") and e.logical_id != stack.name]
    causes = [e for e in failed if not any(c in e.reason for c in _CONSEQUENCES)] or failed
    if causes:
        first = causes[0]
        return StackError(
            f"stack {stack.name} ended {stack.status}: {first.logical_id} ({first.resource_type}) "
            f"{first.status}: {first.reason or 'no reason given'}",
            stack=stack.name,
            status=stack.status,
            resource=first.logical_id,
            resource_type=first.resource_type,
            reason=first.reason,
        )
    return StackError(
        f"stack {stack.name} ended {stack.status}: {stack.status_reason or 'no reason given'}",
        stack=stack.name,
        status=stack.status,
        reason=stack.status_reason,
    )


def wait_for_stack(
    ctx: AwsContext,
    stack_id: str,
    *,
    seen: set[str],
    on_progress: ProgressCallback = no_progress,
    timeout_s: float = STACK_TIMEOUT_S,
    poll_s: float = POLL_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> StackInfo | None:
    """Wait until the stack's operation ends, reporting each event not in ``seen`` (which is updated).

    Args:
        stack_id: the stack's ARN (a deleted stack stays describable by its id, not by its name).
        seen: ids of events known already (at least the newest before the operation, see
            :func:`latest_event_ids`); they and everything older are not reported.

    Returns:
        The stack once ``*_COMPLETE``, or ``None`` once it is deleted.

    Raises:
        StackError: the operation failed or rolled back (naming the first resource that failed, and why),
            or did not end within ``timeout_s``.
        CredentialsError, CloudError: a call failed.
    """
    deadline = clock() + timeout_s
    new: list[StackEvent] = []
    while True:
        stack = describe_stack(ctx, stack_id)
        events = stack_events(ctx, stack_id, newer_than=seen) if stack is not None else ()
        for event in events:
            if event.event_id not in seen:
                seen.add(event.event_id)
                new.append(event)
                on_progress(ProgressEvent("stack", describe_event(event)))
        if stack is None:
            return None
        if stack.status in _FAILED_STATUSES:
            raise _failure(stack, new)
        if stack.status in _OK_STATUSES:
            return None if stack.status == "DELETE_COMPLETE" else stack
        if clock() >= deadline:
            raise StackError(
                f"stack {stack.name} is still {stack.status} after {timeout_s:.0f} s; watch it with "
                "`gpu-transcribe pipeline status` or in the CloudFormation console",
                stack=stack.name,
                status=stack.status,
            )
        sleep(poll_s)


def _wait_for_change_set(
    cf: Any,
    ctx: AwsContext,
    stack: str,
    change_set_id: str,
    *,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> dict[str, Any]:
    deadline = clock() + CHANGE_SET_TIMEOUT_S
    while True:
        with aws_errors(ctx, f"describing the change set of stack {stack}"):
            described: dict[str, Any] = cf.describe_change_set(ChangeSetName=change_set_id, StackName=stack)
            changes = list(described.get("Changes", []))
            token = described.get("NextToken")
            while token:  # a change set lists its changes in pages
                page = cf.describe_change_set(ChangeSetName=change_set_id, StackName=stack, NextToken=token)
                changes.extend(page.get("Changes", []))
                token = page.get("NextToken")
        described["Changes"] = changes
        if described.get("Status") in ("CREATE_COMPLETE", "FAILED"):
            return described
        if clock() >= deadline:
            raise StackError(
                f"the change set for stack {stack} is still {described.get('Status')} after "
                f"{CHANGE_SET_TIMEOUT_S:.0f} s",
                stack=stack,
                status=str(described.get("Status", "")),
            )
        sleep(POLL_S)


def deploy_stack(
    ctx: AwsContext,
    name: str,
    template_body: str,
    *,
    parameters: Mapping[str, str] | None = None,
    tags: Sequence[tuple[str, str]] = (),
    description: str = "",
    on_progress: ProgressCallback = no_progress,
    timeout_s: float = STACK_TIMEOUT_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> DeployResult:
    """Create stack ``name`` from ``template_body`` and its ``parameters``' values, or update it, through a
    change set, and wait.

    The template may create IAM roles with generated names (``CAPABILITY_IAM``). ``tags`` go on the stack,
    and CloudFormation copies them onto every resource that takes tags.

    Returns:
        What was done, the stack afterwards and the changes.

    Raises:
        StackError: the stack is busy with another operation, or is a failed first create
            (``ROLLBACK_COMPLETE``: delete it first), or CloudFormation refused the change set, or the
            operation rolled back (naming the resource that failed and why).
        CredentialsError, CloudError: a call failed.
    """
    started = clock()
    cf = cloudformation_client(ctx)
    existing = describe_stack(ctx, name)
    if existing is not None and existing.status == "ROLLBACK_COMPLETE":
        raise StackError(
            f"stack {name} failed to create earlier (ROLLBACK_COMPLETE) and can only be deleted; delete it "
            "(gpu-transcribe pipeline destroy) and deploy again",
            stack=name,
            status=existing.status,
        )
    if (
        existing is not None
        and existing.status.endswith("_IN_PROGRESS")
        and existing.status != "REVIEW_IN_PROGRESS"
    ):
        raise StackError(
            f"stack {name} is busy ({existing.status}); wait for it to finish and deploy again",
            stack=name,
            status=existing.status,
        )
    creating = existing is None or existing.status == "REVIEW_IN_PROGRESS"
    seen = latest_event_ids(ctx, name) if existing is not None else set()
    change_set_name = f"gpu-transcribe-{utc_now():%Y%m%dT%H%M%SZ}"
    on_progress(ProgressEvent("change-set", f"{'creating' if creating else 'updating'} stack {name}"))
    with aws_errors(ctx, f"creating a change set for stack {name}"):
        created = cf.create_change_set(
            StackName=name,
            ChangeSetName=change_set_name,
            ChangeSetType="CREATE" if creating else "UPDATE",
            TemplateBody=template_body,
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in (parameters or {}).items()],
            Capabilities=["CAPABILITY_IAM"],
            Tags=[{"Key": k, "Value": v} for k, v in tags],
            Description=description[:1024],
        )
    change_set_id, stack_id = created["Id"], created["StackId"]
    described = _wait_for_change_set(cf, ctx, name, change_set_id, clock=clock, sleep=sleep)
    changes = tuple(
        (
            c["ResourceChange"].get("Action", ""),
            c["ResourceChange"].get("LogicalResourceId", ""),
            c["ResourceChange"].get("ResourceType", ""),
        )
        for c in described["Changes"]
        if "ResourceChange" in c
    )
    reason = str(described.get("StatusReason", "") or "")
    if described.get("Status") == "FAILED" or (not creating and not changes):
        if described.get("Status") == "FAILED" and not any(text in reason for text in _NO_CHANGES):
            raise StackError(
                f"CloudFormation refused the change set for stack {name}: {reason or 'no reason given'}",
                stack=name,
                status="FAILED",
                reason=reason,
            )
        with aws_errors(ctx, f"deleting the empty change set of stack {name}"):
            cf.delete_change_set(ChangeSetName=change_set_id, StackName=name)
        on_progress(ProgressEvent("change-set", f"stack {name} is up to date: nothing to change"))
        stack = describe_stack(ctx, name)
        assert stack is not None  # an update's stack exists
        return DeployResult("unchanged", stack, (), clock() - started)
    for action, logical_id, resource_type in changes:
        on_progress(ProgressEvent("change-set", f"{action} {logical_id} ({resource_type})"))
    with aws_errors(ctx, f"executing the change set of stack {name}"):
        cf.execute_change_set(ChangeSetName=change_set_id, StackName=name)
    stack = wait_for_stack(
        ctx, stack_id, seen=seen, on_progress=on_progress, timeout_s=timeout_s, clock=clock, sleep=sleep
    )
    if stack is None:
        raise StackError(f"stack {name} disappeared while it was being deployed", stack=name, status="")
    return DeployResult("created" if creating else "updated", stack, changes, clock() - started)


def delete_stack(
    ctx: AwsContext,
    name: str,
    *,
    on_progress: ProgressCallback = no_progress,
    timeout_s: float = STACK_TIMEOUT_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Delete stack ``name`` and wait until it is gone; resources with ``DeletionPolicy: Retain`` stay.

    Returns:
        True if it was deleted, False if there was no such stack.

    Raises:
        StackError: the deletion failed (``DELETE_FAILED``, naming the resource and why) or timed out.
        CredentialsError, CloudError: a call failed.
    """
    stack = describe_stack(ctx, name)
    if stack is None:
        return False
    seen = latest_event_ids(ctx, stack.stack_id)
    on_progress(ProgressEvent("delete", f"deleting stack {stack.name}"))
    with aws_errors(ctx, f"deleting stack {stack.name}"):
        cloudformation_client(ctx).delete_stack(StackName=stack.stack_id)
    wait_for_stack(
        ctx, stack.stack_id, seen=seen, on_progress=on_progress, timeout_s=timeout_s, clock=clock, sleep=sleep
    )
    return True
