"""``gpu-transcribe cleanup``: find what runs left behind, by tag, and remove it. Orchestration: no printing.

What counts as ours: instances (any state but ``terminated``), detached volumes, key pairs and security groups
carrying the ``gpu-transcribe:run-id`` tag (:func:`gpu_transcribe.aws.ec2.resources.find_resources`).

Which of them are removed, by default: the caller's own (tag ``gpu-transcribe:owner`` equal to the
caller's ARN) that are older than a grace period. The default grace is the maximum instance lifetime plus
:data:`GRACE_MARGIN_MINUTES`: a younger resource may belong to a run still going on in another terminal, while
an older one cannot (its instance has powered itself off by then). ``--older-than`` sets another age (``0``:
everything), ``--run-id`` selects one run (and, unless ``--older-than`` is given, ignores age: naming a run is
explicit), ``--all-owners`` includes everyone's, ``--dry-run`` only reports. Resources without a creation time
are old enough only for ``--older-than 0``.

Owners are compared by exact ARN: an assumed-role session with another session name counts as another owner.

Servers (role ``server``, ``gpu-transcribe server up``) are meant to outlive the command that started them, so
the age rule above does not fit them. A server's resources are removed when:

- its lifetime is over: older than the instance's lifetime cap (tag ``gpu-transcribe:max-lifetime-minutes``;
  24 hours and a quarter if the tag is missing) plus :data:`GRACE_MARGIN_MINUTES`: it has powered itself off
  by then, whatever its state file says; or
- it is orphaned: no server state file on this machine names its run id (the client that started it lost
  its state) and it is older than :data:`SERVER_START_GRACE_MINUTES` (a ``server up`` still going on writes
  its state file only at its end). ``--older-than`` replaces that grace; or
- its instance is gone (a spot interruption, its idle stop): a key pair or security group of a server run
  with no live instance, older than that grace, is removed even with a state file here.

A server whose state file is here and whose lifetime is not over is kept (``server down`` removes it), unless
``--run-id`` names it. A server started from another machine with the same credentials has no state file
here and so counts as orphaned: run ``cleanup --dry-run`` first where several machines share an identity.

Pipelines (``gpu-transcribe pipeline``) are CloudFormation stacks: ``cleanup`` lists them (name, status,
owner) but never deletes one; ``gpu-transcribe pipeline destroy --pipeline NAME`` does. Their instances
carry no run id, so ``cleanup`` never terminates a pipeline's workers (the group would replace them at once
anyway). The region's assets bucket (the pipelines' Lambda code, ``gpu-transcribe-assets-<account>-<region>``,
found by its role tag ``pipeline-assets``) is removed with its stack once no pipeline stack is left in the
region, by the rules above for owner and age (not with ``--run-id``: it belongs to no run); while a pipeline
exists, or when the pipelines cannot be listed, it is skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from gpu_transcribe.aws.ec2.models import RemovalOutcome, TaggedResource
from gpu_transcribe.aws.pipeline.models import StackInfo
from gpu_transcribe.common import ProgressCallback, ProgressEvent, no_progress, utc_now
from gpu_transcribe.errors import CredentialsError, GpuTranscribeError, TeardownError
from gpu_transcribe.settings import Settings

if TYPE_CHECKING:
    from gpu_transcribe.aws.clients import AwsContext

#: Minutes added to the maximum instance lifetime for the default grace period.
GRACE_MARGIN_MINUTES = 10
#: Minutes a server without a state file here is left alone (its ``server up`` may still be going on).
SERVER_START_GRACE_MINUTES = 15
#: The lifetime cap assumed for a server resource without the lifetime tag, in minutes (24 h + 15 min).
SERVER_DEFAULT_CAP_MINUTES = 24 * 60 + 15


def default_grace_s(settings: Settings) -> float:
    """The default minimum age, in seconds, of what ``cleanup`` removes (max lifetime + 10 minutes)."""
    return float((settings.max_lifetime_minutes + GRACE_MARGIN_MINUTES) * 60)


def format_age(seconds: float) -> str:
    """``seconds`` as a short age: ``45s``, ``12m``, ``3h05m``, ``2d04h``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


@dataclass(frozen=True)
class CleanupReport:
    """What ``cleanup`` found and did.

    Attributes:
        caller_arn: who ran it (the owner compared with).
        region: the region searched.
        dry_run: nothing was changed.
        all_owners: everyone's resources were included.
        older_than_s: the minimum age applied, in seconds (``None`` when ``--run-id`` ignored age).
        run_id: the one run selected, or ``None``.
        outcomes: one per resource found (skipped ones included), sorted by run id then kind.
        now: the time ages were measured at (UTC).
        pipelines: the region's pipeline stacks, listed only (``pipeline destroy`` removes one).
        pipelines_note: why pipelines could not be listed (e.g. no ``cloudformation:DescribeStacks``), else
            ``""``.
    """

    caller_arn: str
    region: str
    dry_run: bool
    all_owners: bool
    older_than_s: float | None
    run_id: str | None
    outcomes: tuple[RemovalOutcome, ...]
    now: datetime
    pipelines: tuple[StackInfo, ...] = ()
    pipelines_note: str = ""

    @property
    def failed(self) -> tuple[RemovalOutcome, ...]:
        """The resources that could not be removed."""
        return tuple(o for o in self.outcomes if o.failed)

    @property
    def acted_on(self) -> tuple[RemovalOutcome, ...]:
        """The resources selected for removal (everything not skipped)."""
        return tuple(o for o in self.outcomes if o.action != "skipped")

    @property
    def error(self) -> TeardownError | None:
        """The error to report when something could not be removed (each resource and why), else None."""
        if not self.failed:
            return None
        return TeardownError(
            f"{len(self.failed)} resource(s) could not be removed: "
            + "; ".join(f"{o.resource.kind} {o.resource.resource_id}: {o.reason}" for o in self.failed),
            [(f"{o.resource.kind} {o.resource.resource_id}", o.reason) for o in self.failed],
        )


def _server_skip_reason(
    res: TaggedResource,
    *,
    live_servers: Mapping[str, str],
    orphan_grace_s: float,
    now: datetime,
    live_instance_runs: Collection[str] | None,
) -> str:
    """Why a server's resource is kept (``""``: remove it); the rule is in the module docstring."""
    age = res.age_s(now)
    cap_minutes = res.max_lifetime_minutes or SERVER_DEFAULT_CAP_MINUTES
    if age is not None and age >= (cap_minutes + GRACE_MARGIN_MINUTES) * 60:
        return ""  # past its lifetime: it has powered itself off, or should have
    instance_gone = (
        live_instance_runs is not None and res.kind != "instance" and res.run_id not in live_instance_runs
    )
    if instance_gone and age is not None and age >= orphan_grace_s:
        return ""  # what a server whose instance is gone left behind
    name = live_servers.get(res.run_id)
    if name is not None:
        flag = "" if name == "default" else f" --pipeline {name}"
        return f"server {name} is up (its state file is here); `gpu-transcribe server down{flag}` removes it"
    if age is None:
        return "a server of unknown age without a state file here; --run-id includes it"
    if age < orphan_grace_s:
        return (
            f"a server without a state file here, {format_age(age)} old: its `server up` may still be going "
            f"on; removed after {format_age(orphan_grace_s)} (--older-than sets another age)"
        )
    return ""


def select_resources(
    resources: Sequence[TaggedResource],
    *,
    caller_arn: str,
    all_owners: bool,
    older_than_s: float | None,
    now: datetime,
    live_servers: Mapping[str, str] | None = None,
    server_grace_s: float | None = None,
    run_id: str | None = None,
    live_instance_runs: Collection[str] | None = None,
) -> tuple[list[TaggedResource], list[RemovalOutcome]]:
    """Split ``resources`` into those to remove and ``skipped`` outcomes with the reason.

    Args:
        older_than_s: minimum age; ``None`` means any age.
        live_servers: run id -> name of every server whose state file is on this machine.
        server_grace_s: the age from which a server without a state file here counts as orphaned
            (default :data:`SERVER_START_GRACE_MINUTES`).
        run_id: the run named with ``--run-id`` (a server named so is removed like any run).
        live_instance_runs: the run ids with a live instance (``None``: unknown; a server's key pair and
            security group are then not judged by it).
    """
    selected: list[TaggedResource] = []
    skipped: list[RemovalOutcome] = []
    grace_s = SERVER_START_GRACE_MINUTES * 60.0 if server_grace_s is None else server_grace_s
    for res in resources:
        if not all_owners and res.owner_arn != caller_arn:
            owner = res.owner_arn or "no owner tag"
            skipped.append(
                RemovalOutcome(res, "skipped", f"another owner ({owner}); --all-owners includes it")
            )
            continue
        if res.role == "server" and run_id is None:
            reason = _server_skip_reason(
                res,
                live_servers=live_servers or {},
                orphan_grace_s=grace_s,
                now=now,
                live_instance_runs=live_instance_runs,
            )
            if reason:
                skipped.append(RemovalOutcome(res, "skipped", reason))
            else:
                selected.append(res)
            continue
        age = res.age_s(now)
        if older_than_s is not None and older_than_s > 0:
            if age is None:
                skipped.append(RemovalOutcome(res, "skipped", "age unknown; --older-than 0 includes it"))
                continue
            if age < older_than_s:
                skipped.append(
                    RemovalOutcome(
                        res,
                        "skipped",
                        f"{format_age(age)} old, younger than {format_age(older_than_s)} "
                        "(a run may still use it); --older-than 0 includes it",
                    )
                )
                continue
        selected.append(res)
    return selected, skipped


def cleanup(
    settings: Settings,
    *,
    all_owners: bool = False,
    older_than_s: float | None = None,
    run_id: str | None = None,
    dry_run: bool = False,
    on_progress: ProgressCallback = no_progress,
    now: datetime | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> CleanupReport:
    """Find our resources in ``settings.region`` and remove those selected.

    Args:
        settings: region and profile (and the max lifetime behind the default grace period).
        all_owners: include other callers' resources.
        older_than_s: minimum age in seconds; ``None`` for the default grace (or, with ``run_id``, any age).
            For servers it replaces the grace after which one without a state file here is removed.
        run_id: only this run's resources.
        dry_run: report only; change nothing.
        on_progress: receives each step.
        now: the time to measure ages at (default: now); tests move it forward instead of waiting.
        clock, sleep: for the bounded retries of teardown (injectable).

    Returns:
        The :class:`CleanupReport`; ``report.failed`` is non-empty if something could not be removed.

    Raises:
        CredentialsError: credentials missing or rejected.
        CloudError: the resources could not be listed.
    """
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.ec2.preflight import caller_identity
    from gpu_transcribe.aws.ec2.resources import find_resources, remove_resources
    from gpu_transcribe.warm.state import list_states

    ctx = AwsContext.from_settings(settings)
    moment = now or utc_now()
    identity = caller_identity(ctx)
    server_grace_s = older_than_s
    if older_than_s is None and run_id is None:
        older_than_s = default_grace_s(settings)
    on_progress(
        ProgressEvent("preflight", f"looking for gpu-transcribe resources in {ctx.region} ({identity.arn})")
    )
    found = find_resources(ctx, run_id=run_id)
    selected, skipped = select_resources(
        found,
        caller_arn=identity.arn,
        all_owners=all_owners,
        older_than_s=older_than_s,
        now=moment,
        live_servers={state.run_id: state.name for state in list_states()},
        server_grace_s=server_grace_s,
        run_id=run_id,
        live_instance_runs={r.run_id for r in found if r.kind == "instance"},
    )
    on_progress(
        ProgressEvent(
            "note", f"found {len(found)} resource(s); {len(selected)} selected, {len(skipped)} skipped"
        )
    )
    removed = remove_resources(
        ctx, selected, dry_run=dry_run, on_progress=on_progress, clock=clock, sleep=sleep
    )
    pipelines, pipelines_note = _pipelines(settings)
    order = {(r.kind, r.resource_id): i for i, r in enumerate(found)}
    outcomes = sorted([*removed, *skipped], key=lambda o: order[(o.resource.kind, o.resource.resource_id)])
    if run_id is None:
        outcomes.extend(
            _assets(
                ctx,
                pipelines_listed=not pipelines_note,
                pipelines=len(pipelines),
                caller_arn=identity.arn,
                all_owners=all_owners,
                older_than_s=older_than_s,
                now=moment,
                dry_run=dry_run,
                on_progress=on_progress,
                clock=clock,
                sleep=sleep,
            )
        )
    return CleanupReport(
        caller_arn=identity.arn,
        region=ctx.region,
        dry_run=dry_run,
        all_owners=all_owners,
        older_than_s=older_than_s,
        run_id=run_id,
        outcomes=tuple(outcomes),
        now=moment,
        pipelines=pipelines,
        pipelines_note=pipelines_note,
    )


def _assets(
    ctx: AwsContext,
    *,
    pipelines_listed: bool,
    pipelines: int,
    caller_arn: str,
    all_owners: bool,
    older_than_s: float | None,
    now: datetime,
    dry_run: bool,
    on_progress: ProgressCallback,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> list[RemovalOutcome]:
    """The region's assets bucket(s), found by tag: removed (emptied, with their stack) when no pipeline
    stack is left and :func:`select_resources` selects them; else skipped with the reason."""
    from gpu_transcribe.aws.models import TAG_CREATED, TAG_OWNER
    from gpu_transcribe.aws.pipeline.assets import ASSETS_ROLE, find_assets_buckets
    from gpu_transcribe.common import parse_iso_utc
    from gpu_transcribe.pipeline.assets import remove_assets

    outcomes = []
    for bucket, tags in find_assets_buckets(ctx):
        res = TaggedResource(
            kind="assets-bucket",
            resource_id=bucket,
            run_id="",
            owner_arn=tags.get(TAG_OWNER, ""),
            role=ASSETS_ROLE,
            created_at=parse_iso_utc(tags.get(TAG_CREATED, "")),
            name=bucket,
        )
        if not pipelines_listed:
            outcomes.append(RemovalOutcome(res, "skipped", "the pipelines could not be listed"))
            continue
        if pipelines:
            reason = f"the pipelines' Lambda code: {pipelines} pipeline stack(s) in the region"
            outcomes.append(RemovalOutcome(res, "skipped", reason))
            continue
        selected, skipped = select_resources(
            [res], caller_arn=caller_arn, all_owners=all_owners, older_than_s=older_than_s, now=now
        )
        outcomes.extend(skipped)
        if not selected:
            continue
        if dry_run:
            outcomes.append(RemovalOutcome(res, "would-remove"))
            continue
        try:
            remove_assets(ctx, bucket, on_progress, clock, sleep)
        except CredentialsError:
            raise
        except GpuTranscribeError as exc:
            outcomes.append(RemovalOutcome(res, "failed", str(exc)))
        else:
            outcomes.append(RemovalOutcome(res, "deleted"))
    return outcomes


def _pipelines(settings: Settings) -> tuple[tuple[StackInfo, ...], str]:
    """The region's pipeline stacks, or none and why (listing them is optional: cleanup goes on)."""
    from gpu_transcribe.pipeline.deploy import list_pipelines

    try:
        return list_pipelines(settings), ""
    except CredentialsError:
        raise
    except GpuTranscribeError as exc:
        return (), f"pipelines not listed: {exc}"
