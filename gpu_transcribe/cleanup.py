"""``gpu-transcribe cleanup``: find what runs left behind, by tag, and remove it. Orchestration: no printing.

What counts as ours: instances (any state but ``terminated``), detached volumes, key pairs and security groups
carrying the ``gpu-transcribe:run-id`` tag (:func:`gpu_transcribe.aws.resources.find_resources`).

Which of them are removed, by default: the caller's own (tag ``gpu-transcribe:owner`` equal to the
caller's ARN) that are older than a grace period. The default grace is the maximum instance lifetime plus
:data:`GRACE_MARGIN_MINUTES`: a younger resource may belong to a run still going on in another terminal, while
an older one cannot (its instance has powered itself off by then). ``--older-than`` sets another age (``0``:
everything), ``--run-id`` selects one run (and, unless ``--older-than`` is given, ignores age: naming a run is
explicit), ``--all-owners`` includes everyone's, ``--dry-run`` only reports. Resources without a creation time
are old enough only for ``--older-than 0``.

Owners are compared by exact ARN: an assumed-role session with another session name counts as another owner.

Pipelines (``gpu-transcribe pipeline``) are CloudFormation stacks: ``cleanup`` lists them (name, status,
owner) but never deletes one; ``gpu-transcribe pipeline destroy --name NAME`` does. Their instances carry no
run id, so ``cleanup`` never terminates a pipeline's workers (the group would replace them at once anyway).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from gpu_transcribe.aws.models import RemovalOutcome, StackInfo, TaggedResource
from gpu_transcribe.common import ProgressCallback, ProgressEvent, no_progress, utc_now
from gpu_transcribe.errors import CredentialsError, GpuTranscribeError, TeardownError
from gpu_transcribe.settings import Settings

#: Minutes added to the maximum instance lifetime for the default grace period.
GRACE_MARGIN_MINUTES = 10


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


def select_resources(
    resources: Sequence[TaggedResource],
    *,
    caller_arn: str,
    all_owners: bool,
    older_than_s: float | None,
    now: datetime,
) -> tuple[list[TaggedResource], list[RemovalOutcome]]:
    """Split ``resources`` into those to remove and ``skipped`` outcomes with the reason.

    Args:
        older_than_s: minimum age; ``None`` means any age.
    """
    selected: list[TaggedResource] = []
    skipped: list[RemovalOutcome] = []
    for res in resources:
        if not all_owners and res.owner_arn != caller_arn:
            owner = res.owner_arn or "no owner tag"
            skipped.append(
                RemovalOutcome(res, "skipped", f"another owner ({owner}); --all-owners includes it")
            )
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
    from gpu_transcribe.aws.preflight import caller_identity
    from gpu_transcribe.aws.resources import find_resources, remove_resources

    ctx = AwsContext.from_settings(settings)
    moment = now or utc_now()
    identity = caller_identity(ctx)
    if older_than_s is None and run_id is None:
        older_than_s = default_grace_s(settings)
    on_progress(
        ProgressEvent("preflight", f"looking for gpu-transcribe resources in {ctx.region} ({identity.arn})")
    )
    found = find_resources(ctx, run_id=run_id)
    selected, skipped = select_resources(
        found, caller_arn=identity.arn, all_owners=all_owners, older_than_s=older_than_s, now=moment
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


def _pipelines(settings: Settings) -> tuple[tuple[StackInfo, ...], str]:
    """The region's pipeline stacks, or none and why (listing them is optional: cleanup goes on)."""
    from gpu_transcribe.pipeline.deploy import list_pipelines

    try:
        return list_pipelines(settings), ""
    except CredentialsError:
        raise
    except GpuTranscribeError as exc:
        return (), f"pipelines not listed: {exc}"
