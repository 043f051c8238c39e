"""Our resources by tag: the tags we put on, finding them again, and removing them (teardown and cleanup).

Every resource we create carries ``gpu-transcribe:run-id``, ``gpu-transcribe:owner`` (the caller's ARN),
``gpu-transcribe:created`` (UTC ISO 8601), ``gpu-transcribe:version``, ``gpu-transcribe:role`` and ``Name``.
Resources are found by these tags, never by local state (a client killed with SIGKILL keeps none), and
results are sorted so that output and tests are deterministic.

Removal order: terminate instances and confirm that EC2 reports them ``shutting-down``/``terminated``
(retrying ``InvalidInstanceID.NotFound``, since a new instance can lag in describe calls), then delete key
pairs, detached volumes, and security groups (retrying ``DependencyViolation`` until the instance's network
interface is released, bounded). Every step is idempotent: what is already gone counts as done.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from gpu_transcribe import __version__
from gpu_transcribe.aws.clients import (
    CREDENTIAL_CODES,
    AwsContext,
    aws_errors,
    cloud_error,
    ec2_client,
    error_code,
    error_message,
    is_aws_error,
)
from gpu_transcribe.aws.ec2.models import (
    LIVE_STATES,
    RemovalOutcome,
    ResourceKind,
    RunResources,
    TaggedResource,
)
from gpu_transcribe.aws.models import (
    TAG_CREATED,
    TAG_MAX_LIFETIME,
    TAG_OWNER,
    TAG_ROLE,
    TAG_RUN_ID,
    TAG_VERSION,
)
from gpu_transcribe.aws.retry import retrying
from gpu_transcribe.common import ProgressCallback, ProgressEvent, no_progress, parse_iso_utc
from gpu_transcribe.errors import CloudError, CredentialsError, TeardownError
from gpu_transcribe_engine.utc import iso_utc

#: Retrying ``InvalidInstanceID.NotFound`` on terminate/describe: a new instance appears within seconds.
NOT_FOUND_ATTEMPTS = 6
#: Seconds to keep retrying ``DependencyViolation`` on a security group; termination usually takes 30-90 s.
SECURITY_GROUP_TIMEOUT_S = 300.0
#: Seconds to wait for an instance to be reported ``shutting-down`` or ``terminated`` after
#: TerminateInstances.
CONFIRM_TIMEOUT_S = 60.0

_KIND_ORDER: dict[str, int] = {"instance": 0, "volume": 1, "key-pair": 2, "security-group": 3}


def run_tags(
    *,
    run_id: str,
    owner_arn: str,
    created_at: datetime,
    role: str,
    name: str,
    extra: Iterable[tuple[str, str]] = (),
) -> list[tuple[str, str]]:
    """The tags for every resource of a run: ours first, then ``extra`` (the user's ``tags`` setting)."""
    return [
        (TAG_RUN_ID, run_id),
        (TAG_OWNER, owner_arn),
        (TAG_CREATED, iso_utc(created_at)),
        (TAG_VERSION, __version__),
        (TAG_ROLE, role),
        ("Name", name),
        *extra,
    ]


def tag_specifications(resource_types: Sequence[str], tags: Sequence[tuple[str, str]]) -> list[Any]:
    """``TagSpecifications`` for a create call: the same tags on each resource type."""
    tag_list = [{"Key": k, "Value": v} for k, v in tags]
    return [{"ResourceType": rt, "Tags": tag_list} for rt in resource_types]


def _tagged(
    kind: ResourceKind,
    resource_id: str,
    tags: Iterable[Mapping[str, Any]],
    fallback_created: datetime | None,
    state: str = "",
    name: str = "",
) -> TaggedResource:
    tag = {t["Key"]: t["Value"] for t in tags}
    created = parse_iso_utc(tag.get(TAG_CREATED, "")) if TAG_CREATED in tag else None
    if created is None and fallback_created is not None:
        created = fallback_created if fallback_created.tzinfo else fallback_created.replace(tzinfo=UTC)
        created = created.astimezone(UTC)
    lifetime = tag.get(TAG_MAX_LIFETIME, "")
    return TaggedResource(
        kind=kind,
        resource_id=resource_id,
        run_id=tag.get(TAG_RUN_ID, ""),
        owner_arn=tag.get(TAG_OWNER, ""),
        role=tag.get(TAG_ROLE, ""),
        created_at=created,
        state=state,
        name=tag.get("Name", name),
        max_lifetime_minutes=int(lifetime) if lifetime.isdigit() else None,
    )


def find_resources(ctx: AwsContext, *, run_id: str | None = None) -> tuple[TaggedResource, ...]:
    """Every resource of ours in the region (or of one run): instances in any state but ``terminated``,
    detached (``available``) volumes, key pairs and security groups carrying ``gpu-transcribe:run-id``.

    Volumes attached to an instance are not listed: they are deleted with it (``DeleteOnTermination``).

    Returns:
        Sorted by run id, then instances, volumes, key pairs, security groups, then id.

    Raises:
        CredentialsError, CloudError: a describe call failed.
    """
    tag_filter = (
        {"Name": f"tag:{TAG_RUN_ID}", "Values": [run_id]}
        if run_id
        else {"Name": "tag-key", "Values": [TAG_RUN_ID]}
    )
    ec2 = ec2_client(ctx)
    found: list[TaggedResource] = []
    with aws_errors(ctx, "listing gpu-transcribe resources by tag"):
        for page in ec2.get_paginator("describe_instances").paginate(
            Filters=[tag_filter, {"Name": "instance-state-name", "Values": list(LIVE_STATES)}]  # type: ignore[list-item]
        ):
            for reservation in page.get("Reservations", []):
                for raw in reservation.get("Instances", []):
                    state = raw.get("State", {}).get("Name", "")
                    if state not in LIVE_STATES:
                        continue
                    found.append(
                        _tagged(
                            "instance", raw["InstanceId"], raw.get("Tags", []), raw.get("LaunchTime"), state
                        )
                    )
        for volume_page in ec2.get_paginator("describe_volumes").paginate(
            Filters=[tag_filter, {"Name": "status", "Values": ["available"]}]  # type: ignore[list-item]
        ):
            for raw_volume in volume_page.get("Volumes", []):
                found.append(
                    _tagged(
                        "volume",
                        raw_volume["VolumeId"],
                        raw_volume.get("Tags", []),
                        raw_volume.get("CreateTime"),
                        raw_volume.get("State", ""),
                    )
                )
        for raw_key in ec2.describe_key_pairs(Filters=[tag_filter]).get("KeyPairs", []):  # type: ignore[list-item]
            found.append(
                _tagged(
                    "key-pair",
                    raw_key["KeyName"],
                    raw_key.get("Tags", []),
                    raw_key.get("CreateTime"),
                    name=raw_key["KeyName"],
                )
            )
        groups = ec2.get_paginator("describe_security_groups").paginate(Filters=[tag_filter])  # type: ignore[list-item]
        for group_page in groups:
            for raw_group in group_page.get("SecurityGroups", []):
                found.append(
                    _tagged(
                        "security-group",
                        raw_group["GroupId"],
                        raw_group.get("Tags", []),
                        None,
                        name=raw_group.get("GroupName", ""),
                    )
                )
    if run_id:
        found = [r for r in found if r.run_id == run_id]
    found.sort(key=lambda r: (r.run_id, _KIND_ORDER[r.kind], r.resource_id))
    return tuple(found)


def _is(*codes: str) -> Callable[[BaseException], bool]:
    return lambda exc: error_code(exc) in codes


def _stop_on_credentials(ctx: AwsContext, exc: BaseException, doing: str) -> None:
    if error_code(exc) in CREDENTIAL_CODES:
        raise cloud_error(ctx, exc, doing) from exc
    if not is_aws_error(exc):
        raise exc


def remove_resources(
    ctx: AwsContext,
    resources: Sequence[TaggedResource],
    *,
    dry_run: bool = False,
    on_progress: ProgressCallback = no_progress,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    security_group_timeout_s: float = SECURITY_GROUP_TIMEOUT_S,
    confirm_timeout_s: float = CONFIRM_TIMEOUT_S,
) -> tuple[RemovalOutcome, ...]:
    """Remove ``resources`` in a safe order; never raises for one resource that cannot be removed.

    Args:
        resources: from :func:`find_resources` (instances with state ``unknown`` are ids from a RunInstances
            reply that describe calls may not show yet).
        dry_run: change nothing; every resource gets ``would-remove``.
        security_group_timeout_s: how long to retry ``DependencyViolation`` per security group.
        confirm_timeout_s: how long to wait for a terminated instance to show
            ``shutting-down``/``terminated``.

    Returns:
        One outcome per resource, in the order given.

    Raises:
        CredentialsError: the credentials were rejected (nothing more can be done with them).
    """
    if dry_run:
        return tuple(RemovalOutcome(r, "would-remove") for r in resources)
    outcomes: dict[tuple[str, str], RemovalOutcome] = {}
    ec2 = ec2_client(ctx)

    # 1. Instances: terminate, then confirm.
    for res in (r for r in resources if r.kind == "instance"):
        if res.state in ("shutting-down", "terminated"):
            outcomes[(res.kind, res.resource_id)] = RemovalOutcome(
                res, "already-gone", f"already {res.state}"
            )
            continue
        on_progress(ProgressEvent("terminate", f"terminating {res.resource_id} (run {res.run_id})"))
        try:
            already = retrying(
                retry_on=_is("InvalidInstanceID.NotFound"),
                attempts=NOT_FOUND_ATTEMPTS,
                clock=clock,
                sleep=sleep,
            )(_terminate_one, ec2, res.resource_id)
        except Exception as exc:
            _stop_on_credentials(ctx, exc, f"terminating {res.resource_id}")
            code = error_code(exc)
            if code == "InvalidInstanceID.NotFound":
                outcomes[(res.kind, res.resource_id)] = RemovalOutcome(
                    res, "already-gone", f"EC2 does not know it after {NOT_FOUND_ATTEMPTS} tries"
                )
            else:
                outcomes[(res.kind, res.resource_id)] = RemovalOutcome(
                    res, "failed", f"{code}: {error_message(exc)}"
                )
            continue
        if already:
            outcomes[(res.kind, res.resource_id)] = RemovalOutcome(res, "already-gone", f"already {already}")
            continue
        outcomes[(res.kind, res.resource_id)] = _confirm_terminated(
            ctx, res, clock=clock, sleep=sleep, timeout_s=confirm_timeout_s
        )

    # 2. Key pairs and detached volumes: independent of the instances.
    for res in (r for r in resources if r.kind in ("key-pair", "volume")):
        on_progress(ProgressEvent("delete", f"deleting {res.kind} {res.resource_id}"))
        try:
            if res.kind == "key-pair":
                # DeleteKeyPair succeeds for a missing name; look first so a second teardown says so.
                ec2.describe_key_pairs(KeyNames=[res.resource_id])
                ec2.delete_key_pair(KeyName=res.resource_id)
            else:
                ec2.delete_volume(VolumeId=res.resource_id)
            outcomes[(res.kind, res.resource_id)] = RemovalOutcome(res, "deleted")
        except Exception as exc:
            _stop_on_credentials(ctx, exc, f"deleting {res.kind} {res.resource_id}")
            code = error_code(exc)
            if code in ("InvalidKeyPair.NotFound", "InvalidVolume.NotFound"):
                outcomes[(res.kind, res.resource_id)] = RemovalOutcome(res, "already-gone")
            else:
                outcomes[(res.kind, res.resource_id)] = RemovalOutcome(
                    res, "failed", f"{code}: {error_message(exc)}"
                )

    # 3. Security groups: in use until the instances' network interfaces are released.
    for res in (r for r in resources if r.kind == "security-group"):
        on_progress(ProgressEvent("delete", f"deleting security group {res.resource_id}"))

        def note_wait(state: object, res: TaggedResource = res) -> None:
            on_progress(
                ProgressEvent("delete", f"{res.resource_id} still in use (DependencyViolation); retrying")
            )

        try:
            for attempt in retrying(
                retry_on=_is("DependencyViolation"),
                attempts=None,
                timeout_s=security_group_timeout_s,
                base_s=2.0,
                cap_s=15.0,
                clock=clock,
                sleep=sleep,
                before_sleep=note_wait,
            ):
                with attempt:
                    ec2.delete_security_group(GroupId=res.resource_id)
            outcomes[(res.kind, res.resource_id)] = RemovalOutcome(res, "deleted")
        except Exception as exc:
            _stop_on_credentials(ctx, exc, f"deleting security group {res.resource_id}")
            code = error_code(exc)
            if code == "InvalidGroup.NotFound":
                outcomes[(res.kind, res.resource_id)] = RemovalOutcome(res, "already-gone")
            elif code == "DependencyViolation":
                outcomes[(res.kind, res.resource_id)] = RemovalOutcome(
                    res, "failed", f"DependencyViolation: still in use after {security_group_timeout_s:.0f} s"
                )
            else:
                outcomes[(res.kind, res.resource_id)] = RemovalOutcome(
                    res, "failed", f"{code}: {error_message(exc)}"
                )

    return tuple(outcomes[(r.kind, r.resource_id)] for r in resources)


def _terminate_one(ec2: Any, instance_id: str) -> str:
    """Terminate ``instance_id`` unless EC2 already reports it gone; returns that state, or ``""`` if we
    terminated it. Raises ``InvalidInstanceID.NotFound`` while EC2 does not list it (yet)."""
    reply = ec2.describe_instances(InstanceIds=[instance_id])
    states = [i["State"]["Name"] for r in reply.get("Reservations", []) for i in r.get("Instances", [])]
    if states and states[0] in ("shutting-down", "terminated"):
        return str(states[0])
    ec2.terminate_instances(InstanceIds=[instance_id])
    return ""


def _confirm_terminated(
    ctx: AwsContext,
    res: TaggedResource,
    *,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    timeout_s: float,
) -> RemovalOutcome:
    """Poll until EC2 reports the instance ``shutting-down`` or ``terminated``."""
    ec2 = ec2_client(ctx)
    start = clock()
    last = "unknown"
    delay_s = 1.0
    while True:
        try:
            reply = ec2.describe_instances(InstanceIds=[res.resource_id])
            states = [
                i.get("State", {}).get("Name", "")
                for r in reply.get("Reservations", [])
                for i in r.get("Instances", [])
            ]
            last = states[0] if states else "not listed"
        except Exception as exc:
            _stop_on_credentials(ctx, exc, f"describing {res.resource_id}")
            last = error_code(exc) or type(exc).__name__
        if last in ("shutting-down", "terminated"):
            return RemovalOutcome(res, "terminated")
        if clock() - start >= timeout_s:
            return RemovalOutcome(
                res,
                "failed",
                f"TerminateInstances accepted but state is still {last} after {timeout_s:.0f} s",
            )
        sleep(delay_s)
        delay_s = min(delay_s * 2, 10.0)


def teardown(
    ctx: AwsContext,
    run: RunResources,
    *,
    on_progress: ProgressCallback = no_progress,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    security_group_timeout_s: float = SECURITY_GROUP_TIMEOUT_S,
) -> tuple[RemovalOutcome, ...]:
    """Remove everything of one run: what ``run`` names plus whatever carries its run-id tag.

    Idempotent and safe on a half-created run (a key pair only, a security group only, nothing at all).

    Returns:
        One outcome per resource (empty if nothing was there).

    Raises:
        TeardownError: something could not be removed, or the run's resources could not be listed by tag (what
            was known is removed all the same); ``leftovers`` lists ``(what, reason)`` pairs, and
            ``gpu-transcribe cleanup --run-id RUN`` can try again.
        CredentialsError: the credentials were rejected.
    """
    listing_error = ""
    try:
        found = list(find_resources(ctx, run_id=run.run_id))
    except CredentialsError:
        raise
    except CloudError as exc:
        # Still remove what we know of: terminating the instance matters most.
        listing_error = str(exc)
        found = []
        on_progress(ProgressEvent("note", f"could not list run {run.run_id} by tag: {exc}"))
    known = {(r.kind, r.resource_id) for r in found}
    extra: list[TaggedResource] = []
    for instance_id in run.instance_ids:
        if ("instance", instance_id) not in known:
            # Known from the RunInstances reply; absent from describe (lagging, or already terminated).
            extra.append(TaggedResource("instance", instance_id, run.run_id, "", "", None, state="unknown"))
    if run.key_name and ("key-pair", run.key_name) not in known:
        extra.append(TaggedResource("key-pair", run.key_name, run.run_id, "", "", None))
    if run.security_group_id and ("security-group", run.security_group_id) not in known:
        extra.append(TaggedResource("security-group", run.security_group_id, run.run_id, "", "", None))
    resources = sorted(found + extra, key=lambda r: (_KIND_ORDER[r.kind], r.resource_id))
    outcomes = remove_resources(
        ctx,
        resources,
        on_progress=on_progress,
        clock=clock,
        sleep=sleep,
        security_group_timeout_s=security_group_timeout_s,
    )
    leftovers = [(f"{o.resource.kind} {o.resource.resource_id}", o.reason) for o in outcomes if o.failed]
    if listing_error:
        leftovers.append((f"run {run.run_id}", f"its resources could not be listed by tag: {listing_error}"))
    if leftovers:
        raise TeardownError(
            f"run {run.run_id}: {len(leftovers)} problem(s) removing its resources: "
            + "; ".join(f"{what}: {reason}" for what, reason in leftovers)
            + f"; retry with `gpu-transcribe cleanup --run-id {run.run_id}`",
            leftovers,
        )
    return outcomes
