"""``gpu-transcribe run`` on a new instance: plan, then the work in an instance session, relaunching once
after a spot interruption, then the S3 upload.

1. Plan: inputs, output directories, the S3 bucket, then preflight, the image and the launch plan (nothing is
   created; ``--dry-run`` stops here).
2. An :class:`~gpu_transcribe.instance.session.InstanceSession` launches, connects and tears down; the work on
   the host is :class:`~gpu_transcribe.run.host.HostWork`.
3. A spot interruption (the two-minute notice, EC2's state, or the connection lost and EC2 then saying so) is
   reported, and the unfinished files run again once on a new instance, the lost zone's spot tried last. The
   new plan is made as soon as the notice arrives, while the old instance still works.
4. The finished files' outputs go to S3 (:mod:`gpu_transcribe.run.upload`).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from gpu_transcribe import __version__
from gpu_transcribe.common import billed_seconds, cost_usd, new_run_id, utc_now
from gpu_transcribe.errors import GpuTranscribeError, InstanceLostError, SettingsError, TeardownError
from gpu_transcribe.instance.session import ALIVE_CHECK_S, InstanceSession, InstanceUsage
from gpu_transcribe.instance.spot_watch import NOTICE_CHECK_S, SpotNotice
from gpu_transcribe.run.host import HostWork, Job, RunState, build_engine_wheel, correct_finished
from gpu_transcribe.run.request import CloudRunRequest, CloudRunResult, DryRunPlan, Phases, RunCallbacks
from gpu_transcribe.run.upload import upload_outputs

if TYPE_CHECKING:
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.ec2.images import OurImage
    from gpu_transcribe.aws.ec2.launch_plan import LaunchPlan
    from gpu_transcribe.aws.ec2.models import LaunchResult, LaunchSpec
    from gpu_transcribe.settings import Settings

#: Seconds assumed for a whole run in the ``--dry-run`` cost estimate: the product's target for a 20-minute
#: file (about 90 s to boot and reach SSH, about a minute to transcribe, transfers and teardown). A target,
#: not a measurement: the summary of a real run reports the billed seconds.
ESTIMATE_RUN_S = 300.0

#: How many times the unfinished files may run again on a new instance after a spot interruption.
MAX_RELAUNCHES = 1


def choose_image(
    ctx: AwsContext, settings: Settings, model: str, revision: str | None, *, update_engine: bool
) -> tuple[str, OurImage | None]:
    """The AMI for a run: the ``image_id`` setting, else the newest image of ours for this version and model.

    Returns:
        ``(image id, our image or None when set explicitly)``.

    Raises:
        ImageNotFoundError: no image fits; the message says to run ``gpu-transcribe build-ami``.
        CredentialsError, CloudError: listing failed.
    """
    from gpu_transcribe.aws.ec2.images import list_images, select_run_image

    if settings.image_id:
        return settings.image_id, None
    image = select_run_image(
        list_images(ctx),
        version=__version__,
        model=model,
        revision=revision,
        region=ctx.region,
        allow_older_version=update_engine,
    )
    return image.image_id, image


@dataclass(frozen=True)
class _CloudPlan:
    bucket: str | None
    ctx: AwsContext
    image: OurImage | None
    plan: LaunchPlan
    started_at: datetime


def _plan_cloud(request: CloudRunRequest, settings: Settings, callbacks: RunCallbacks) -> _CloudPlan:
    """The cloud half of planning, shared by ``run`` and ``--dry-run``: the bucket (checked), the image, the
    SSH source, the run id and the launch plan. Creates nothing."""
    from gpu_transcribe.aws.clients import AwsContext, s3_client
    from gpu_transcribe.aws.ec2.checkip import resolve_ssh_cidr
    from gpu_transcribe.aws.ec2.launch_plan import plan_launch
    from gpu_transcribe.aws.ec2.preflight import caller_identity
    from gpu_transcribe.aws.s3 import check_bucket
    from gpu_transcribe.instance.spec import launch_spec

    bucket = settings.require_s3_bucket() if request.upload else None
    ctx = AwsContext.from_settings(settings)
    if bucket is not None:
        note = check_bucket(s3_client(ctx), bucket, caller_identity(ctx).account_id)
        if note:
            callbacks.progress("note", note)
    image_id, image = choose_image(
        ctx, settings, request.model, request.revision, update_engine=request.update_engine
    )
    cidr = resolve_ssh_cidr(settings.ssh_cidr, settings.source("ssh_cidr"))
    started_at = utc_now()
    spec = launch_spec(settings, image_id=image_id, ssh_cidr=cidr, run_id=new_run_id(started_at))
    plan = plan_launch(ctx, spec, on_progress=callbacks.on_progress, now=started_at)
    return _CloudPlan(bucket, ctx, image, plan, started_at)


def plan_run(
    request: CloudRunRequest, settings: Settings, callbacks: RunCallbacks | None = None
) -> DryRunPlan:
    """Everything ``run`` decides before launching; creates nothing (``--dry-run``). The input files are
    checked first; then as much of the cloud plan as can be made: a missing bucket setting, and an error of
    the cloud layer, are named in :attr:`DryRunPlan.missing` instead of ending the plan.

    Raises:
        SettingsError, InputError, OutputError: a bad option, colliding outputs, an unwritable directory.
    """
    job = Job.prepare(request)
    missing: list[GpuTranscribeError] = []
    if request.upload and not settings.s3_bucket:
        try:
            settings.require_s3_bucket()
        except SettingsError as exc:
            missing.append(exc)
        request = replace(request, upload=False)  # plan the rest as if without the upload
    try:
        cloud: _CloudPlan | None = _plan_cloud(request, settings, callbacks or RunCallbacks())
    except GpuTranscribeError as exc:
        missing.append(exc)
        cloud = None
    first = cloud.plan.options[0] if cloud is not None and cloud.plan.options else None
    price = None
    if first is not None:
        price = first.zone.spot_price_usd_per_hour if first.market == "spot" else None
        if price is None and first.zone.on_demand is not None:
            price = first.zone.on_demand.price_usd_per_hour
    return DryRunPlan(
        files=job.files,
        input_problems=job.problems,
        plan=cloud.plan if cloud is not None else None,
        image=cloud.image if cloud is not None else None,
        estimate_s=ESTIMATE_RUN_S,
        estimated_cost_usd=cost_usd(price, billed_seconds(ESTIMATE_RUN_S)),
        s3_url=f"s3://{cloud.bucket}/{settings.s3_prefix}/" if cloud is not None and cloud.bucket else None,
        missing=tuple(missing),
    )


class _Relaunch:
    """The plan for the instance after a loss: a fresh run id, a fresh plan, the lost (spot, zone, type)
    tried last. Started in the background when the interruption notice arrives, or made when asked."""

    def __init__(self, ctx: AwsContext, spec: LaunchSpec, callbacks: RunCallbacks) -> None:
        self._ctx, self._spec, self._callbacks = ctx, spec, callbacks
        self._thread: threading.Thread | None = None
        self._plan: LaunchPlan | None = None
        self._error: GpuTranscribeError | None = None
        self._lost_on: tuple[str, str] | None = None

    def on_notice(self, notice: SpotNotice, launched: LaunchResult) -> None:
        """The instance session's notice callback: plan away from ``launched``'s zone at once."""
        self.start(launched.zone, launched.instance_type)

    def start(self, zone: str, instance_type: str) -> None:
        """Plan now, in a thread."""
        if self._thread is not None:
            return
        self._lost_on = (zone, instance_type)
        self._thread = threading.Thread(target=self._make, name="relaunch-planner", daemon=True)
        self._thread.start()

    def _make(self) -> None:
        from gpu_transcribe.aws.ec2.launch_plan import plan_launch

        assert self._lost_on is not None
        zone, instance_type = self._lost_on
        spec = replace(self._spec, run_id=new_run_id())
        try:
            plan = plan_launch(self._ctx, spec, on_progress=self._callbacks.on_progress)
        except GpuTranscribeError as exc:
            self._error = exc
            return
        self._plan = plan.trying_last("spot", zone, instance_type)
        if self._plan.options:
            first = self._plan.options[0]
            self._callbacks.progress(
                "relaunch",
                f"planned a new instance for the unfinished files: {first.market} {first.instance_type} "
                f"in {first.zone.zone} first",
            )

    def plan_after(self, lost_on: InstanceUsage) -> LaunchPlan:
        """The plan (waiting for one started at the notice, or making it now).

        Raises:
            CredentialsError, QuotaError, ImageNotFoundError, CapacityError, CloudError: planning failed.
        """
        if self._thread is None:
            self.start(lost_on.zone, lost_on.instance_type)
        assert self._thread is not None
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._plan is not None
        return self._plan


def run_cloud(
    request: CloudRunRequest,
    settings: Settings,
    callbacks: RunCallbacks | None = None,
    *,
    alive_check_s: float = ALIVE_CHECK_S,
    notice_check_s: float = NOTICE_CHECK_S,
    ssh_deadline_s: float = 300.0,
) -> CloudRunResult:
    """``gpu-transcribe run``: the whole flow on a new instance, torn down whatever happens.

    Args:
        request: what to transcribe and how.
        settings: the effective settings (region, instance types, market, bucket...).
        callbacks: progress reporting.
        alive_check_s: seconds between checks that the instance still runs.
        notice_check_s: seconds between reads of the spot interruption notice on a spot instance.
        ssh_deadline_s: seconds to wait for the instance's SSH port to answer, then again for a session.

    Returns:
        The result; check ``result.ok``. Files that failed, an upload failure and a teardown problem are
        in it, not raised, so that the summary can show everything.

    Raises:
        SettingsError, InputError, OutputError: before anything is created.
        CredentialsError, QuotaError, ImageNotFoundError, CapacityError, CloudError: planning or launching
            failed (anything created was removed).
        HostKeyError, SSHTimeoutError, SSHError, EngineError: the run failed on the instance (it was
            terminated).
        InterruptedRunError: SIGINT/SIGTERM/SIGHUP; the instance was terminated first.
    """
    callbacks = callbacks or RunCallbacks()
    phases = Phases()
    state = RunState()
    with phases.timed("plan"):
        job = Job.prepare(request)
        if not job.files:
            return state.result(new_run_id(), job, phases)
        cloud = _plan_cloud(request, settings, callbacks)
    run_id, plan = cloud.plan.spec.run_id, cloud.plan
    usages: list[InstanceUsage] = []
    losses: list[InstanceLostError] = []
    teardown_error: TeardownError | None = None
    with contextlib.ExitStack() as stack:
        wheel = build_engine_wheel(stack, callbacks, phases) if request.update_engine else None
        work = HostWork(job, state, callbacks, phases, settings.remote_prefix, wheel)
        for attempt in range(MAX_RELAUNCHES + 1):
            indices = state.unfinished(len(job.files))
            relaunch = _Relaunch(cloud.ctx, plan.spec, callbacks)
            session = InstanceSession(
                cloud.ctx,
                plan.spec,
                plan=plan,
                on_progress=callbacks.on_progress,
                on_signal=callbacks.on_signal,
                ssh_deadline_s=ssh_deadline_s,
                alive_check_s=alive_check_s,
                notice_check_s=notice_check_s,
                on_notice=relaunch.on_notice if attempt < MAX_RELAUNCHES else None,
            )
            lost: InstanceLostError | None = None
            try:
                with session:
                    work.run(session.ssh, indices, session.run_id, remove_run_dir=False)
            except InstanceLostError as exc:
                if not session.connected and not exc.spot_interruption:
                    raise  # lost while booting for another reason than a spot interruption
                lost = exc
            except TeardownError as exc:
                teardown_error = exc
            finally:
                if session.usage is not None:
                    usages.append(session.usage)
                phases.add("launch", session.times.launch_s)
                phases.add("ssh_ready", session.times.ready_s + session.times.connect_s)
                phases.add("teardown", session.times.teardown_s)
            if lost is None:
                break
            losses.append(lost)
            if not state.unfinished(len(job.files)):
                break
            if attempt == MAX_RELAUNCHES:
                state.notes.append(
                    f"{len(state.unfinished(len(job.files)))} file(s) unfinished: the instance was lost "
                    f"{len(losses)} times"
                )
                break
            callbacks.progress(
                "relaunch",
                f"running {len(state.unfinished(len(job.files)))} unfinished file(s) again on a new instance "
                f"({lost.instance_id} was lost)",
            )
            plan = relaunch.plan_after(usages[-1])
    correct_finished(
        request.correct, job, state, callbacks
    )  # the instance is gone: Bedrock is called from here
    upload_error = upload_outputs(
        settings, cloud.bucket, run_id, cloud.started_at, request, job, state, callbacks, phases
    )
    return state.result(
        run_id,
        job,
        phases,
        instances=tuple(usages),
        upload_error=upload_error,
        teardown_error=teardown_error,
        lost=tuple(losses),
    )
