"""``gpu-transcribe build-ami``: build the GPU image a run boots from. Orchestration: no printing.

Phases (each timed; :attr:`BuildResult.phases`):

1. ``wheel``: build the project's wheel locally (:func:`gpu_transcribe.wheel.build_wheel`), or take
   ``--wheel FILE``;
2. ``launch``: a builder instance from the base image (by default the newest AWS Deep Learning Base OSS
   Nvidia Driver GPU AMI for Ubuntu 22.04, through its SSM public parameter), on-demand unless ``--spot``,
   with the same safety as a run: per-build client and host keys, strict host key checking, tags with role
   ``builder``, the dead-man switch, IMDSv2, an encrypted root volume;
3. ``ssh``: wait for the builder's sshd and log in; the heartbeat keeps the dead-man switch quiet;
4. ``push``: the wheel, ``ami/provision.py`` and ``requirements/cuda.lock`` into a private directory on the
   builder;
5. ``provision``: run ``provision.py`` (engine venv under the ``remote_prefix`` setting, installed from the
   lock with every hash checked and then the wheel without dependencies, the model cached,
   bytecode compiled, a float16 warm-up on the GPU, ``manifest.json``); its step and check lines are
   progress events. A non-zero exit, or a manifest not showing every check passing, raises
   :class:`~gpu_transcribe.errors.ProvisionError` and no image is made;
6. ``stop``: stop the builder for a consistent snapshot (a spot builder cannot be stopped: EC2 reboots it for
   the snapshot instead);
7. ``image``: ``CreateImage`` with our tags, its snapshots tagged, wait until ``available``;
8. ``teardown``: terminate the builder, delete its key pair and security group.

Every exit path runs the teardown exactly once (:class:`~gpu_transcribe.lifecycle.TeardownGuard`): normal end,
any error, SIGINT, SIGTERM, SIGHUP. If the build did not complete, the teardown also stops a provisioning
still running on the builder and deregisters an image already started, deleting its snapshots: a failed build
leaves no image and no instance. A client killed with SIGKILL leaves the builder to the dead-man switch (while
it runs) and to ``gpu-transcribe cleanup`` (which finds role ``builder`` like any run).
"""

from __future__ import annotations

import collections
import contextlib
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpu_transcribe import __version__
from gpu_transcribe.common import (
    ProgressCallback,
    ProgressEvent,
    no_progress,
    utc_now,
)
from gpu_transcribe.errors import (
    GpuTranscribeError,
    ProvisionError,
    RemoteCommandError,
    TeardownError,
)
from gpu_transcribe.instance_session import CleanupStep, InstanceSession, InstanceUsage
from gpu_transcribe.lifecycle import SignalCallback

if TYPE_CHECKING:
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.images import OurImage
    from gpu_transcribe.aws.instances import AddressResolver
    from gpu_transcribe.aws.launch import LaunchPlan
    from gpu_transcribe.aws.models import LaunchResult, LaunchSpec
    from gpu_transcribe.settings import Settings
    from gpu_transcribe.ssh import SSHSession

#: The provisioning script, pushed to the builder (repository path ``ami/provision.py``).
PROVISION_SCRIPT = Path(__file__).resolve().parent.parent / "ami" / "provision.py"
#: The image venv's exact versions and hashes (``make lock``: client and engine, torch with CUDA, Python 3.11
#: on x86_64 Linux), pushed beside the wheel; ``provision.py --lock`` installs it, then the wheel with
#: ``--no-deps``.
CUDA_LOCK = Path(__file__).resolve().parent.parent / "requirements" / "cuda.lock"
#: Root volume of the builder and so of every run's instance, GiB (the base image's own size if larger).
#: The engine's venv (torch with its CUDA libraries, ~6 GiB installed) and a Whisper model (0.5-3 GiB) go
#: on top of the base image's driver and CUDA toolkits; 100 GiB leaves room without measuring each base
#: image. gp3 at about $0.08 per GiB-month costs a run of an hour about $0.011 for it.
DEFAULT_ROOT_VOLUME_GIB = 100
#: The builder's dead-man switch: provisioning takes 15-30 minutes (torch's CUDA wheels are ~3 GB), so a
#: shorter ``max_lifetime_minutes`` setting is raised to this for the builder.
MIN_BUILDER_LIFETIME_MINUTES = 120
#: Lines of provisioning output kept for the error message of a failed build.
OUTPUT_TAIL_LINES = 30
#: Runs the rest of its arguments with stdout and stderr merged, first writing its process group id to the
#: file named by ``$0``, so that an interrupted build can stop the provisioning (and pip, and the warm-up) on
#: the builder. /proc/self/stat field 5 is the process group (proc(5)).
_WRAPPER = 'read -r _ _ _ _ pgid _ < /proc/$$/stat && echo "$pgid" > "$0" && exec "$@" 2>&1'
_KILL = 'pgid=$(cat "$0" 2>/dev/null) && [ -n "$pgid" ] && kill -TERM -- "-$pgid" 2>/dev/null; true'


@dataclass(frozen=True)
class BuildRequest:
    """What to build.

    Attributes:
        model: the Whisper model to cache in the image (Hugging Face id); tag ``gpu-transcribe:model``.
        revision: its revision (branch, tag or commit), ``None`` for the default branch.
        base_image_id: the AMI to start from; ``None`` for the newest Deep Learning Base GPU AMI (SSM).
        spot: launch the builder on spot (then on-demand if spot has no capacity); default on-demand.
        instance_types: builder types in order of preference; ``None`` for the ``instance_types`` setting.
        wheel: a built wheel of this project; ``None`` to build one from the source checkout.
        login_user: the base image's SSH user (``ubuntu`` on the Deep Learning AMIs for Ubuntu).
        remote_python: interpreter that runs ``provision.py`` on the builder (3.10 or newer).
        root_volume_size_gib: the builder's root volume (the image's size), at least the base image's.
        provision_args: extra arguments appended to ``provision.py``'s (later options win), e.g.
            ``--skip-system-packages --model-dir DIR --lock requirements/cpu.lock --device cpu
            --no-require-cuda`` for a test builder without a GPU.
    """

    model: str
    revision: str | None = None
    base_image_id: str | None = None
    spot: bool = False
    instance_types: tuple[str, ...] | None = None
    wheel: Path | None = None
    login_user: str = "ubuntu"
    remote_python: str = "python3"
    root_volume_size_gib: int = DEFAULT_ROOT_VOLUME_GIB
    provision_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class BuildPlan:
    """What a build will do, decided before anything is created (``build-ami --dry-run`` prints it).

    Attributes:
        request: the request.
        base_image_id: the base AMI (resolved from SSM when not given).
        base_image_source: ``--base-ami`` or the SSM parameter it came from.
        launch: the builder's launch plan (zones, prices, markets, tags).
        image_name: the name the image will get.
        remote_prefix: where the engine goes on the builder.
        provision_argv: the command run on the builder (without the process-group wrapper).
    """

    request: BuildRequest
    base_image_id: str
    base_image_source: str
    launch: LaunchPlan
    image_name: str
    remote_prefix: str
    provision_argv: tuple[str, ...]


@dataclass(frozen=True)
class BuildResult:
    """A finished build.

    Attributes:
        image: the new image, ``available``.
        manifest: ``manifest.json`` of the image (``ami/provision.py``'s :func:`write_manifest`).
        run_id: the build's id (tag ``gpu-transcribe:run-id`` on the builder, the image and its snapshots).
        base_image_id: the AMI it was built from.
        instance: the builder: id, type, zone, market, price and billed seconds (launch to stop, or to
            termination for a spot builder, at least 60).
        phases: ``(phase, seconds)`` in order: wheel, launch, ssh, push, provision, stop, image, teardown.
        wheel: the wheel installed in the image.
    """

    image: OurImage
    manifest: dict[str, Any]
    run_id: str
    base_image_id: str
    instance: InstanceUsage
    phases: tuple[tuple[str, float], ...]
    wheel: Path

    @property
    def cost_usd(self) -> float | None:
        """The builder's cost (EBS storage and transfer not included), or ``None`` if the price is unknown."""
        return self.instance.cost_usd

    @property
    def total_s(self) -> float:
        """Seconds of all phases together."""
        return sum(seconds for _, seconds in self.phases)


def _provision_argv(
    request: BuildRequest, remote_prefix: str, remote_dir: str, wheel_name: str, forget_key: str
) -> list[str]:
    argv = [
        request.remote_python,
        f"{remote_dir}/provision.py",
        "--prefix",
        remote_prefix,
        "--wheel",
        f"{remote_dir}/{wheel_name}",
        "--lock",
        f"{remote_dir}/{CUDA_LOCK.name}",
        "--model",
        request.model,
        "--device",
        "cuda",
        "--require-cuda",
    ]
    if request.revision:
        argv += ["--revision", request.revision]
    if forget_key:
        argv += ["--forget-authorized-key", forget_key]
    return [*argv, *request.provision_args]


def builder_spec(
    settings: Settings, request: BuildRequest, *, base_image_id: str, ssh_cidr: str, run_id: str | None = None
) -> LaunchSpec:
    """The builder's :class:`~gpu_transcribe.aws.models.LaunchSpec`: role ``builder``, on-demand (or spot then
    on-demand with ``spot``), a lifetime of at least :data:`MIN_BUILDER_LIFETIME_MINUTES`."""
    from gpu_transcribe.aws.models import LaunchSpec

    return LaunchSpec.from_settings(
        settings,
        image_id=base_image_id,
        ssh_cidr=ssh_cidr,
        role="builder",
        run_id=run_id,
        instance_types=request.instance_types or settings.instance_types,
        market="spot-then-on-demand" if request.spot else "on-demand",
        max_lifetime_minutes=max(settings.max_lifetime_minutes, MIN_BUILDER_LIFETIME_MINUTES),
        root_volume_size_gib=request.root_volume_size_gib,
        login_user=request.login_user,
    )


def _resolve_base(ctx: AwsContext, request: BuildRequest) -> tuple[str, str]:
    from gpu_transcribe.aws.images import DLAMI_BASE_PARAMETER, resolve_base_image

    if request.base_image_id:
        return request.base_image_id, "--base-ami"
    return resolve_base_image(ctx), f"SSM parameter {DLAMI_BASE_PARAMETER}"


def plan_build(
    ctx: AwsContext,
    settings: Settings,
    request: BuildRequest,
    *,
    ssh_cidr: str,
    on_progress: ProgressCallback = no_progress,
) -> BuildPlan:
    """Decide everything a build does, creating nothing: the base image, the builder's launch plan (with
    preflight: credentials, quotas, the image exists), the image name and the provisioning command.

    Raises:
        CredentialsError, QuotaError, ImageNotFoundError, CapacityError, CloudError: as
            :func:`gpu_transcribe.aws.launch.plan_launch`, and when the base image cannot be resolved.
    """
    from gpu_transcribe.aws.images import image_name
    from gpu_transcribe.aws.launch import plan_launch

    base_image_id, source = _resolve_base(ctx, request)
    on_progress(ProgressEvent("base-image", f"base image {base_image_id} (from {source})"))
    spec = builder_spec(settings, request, base_image_id=base_image_id, ssh_cidr=ssh_cidr)
    launch_plan = plan_launch(ctx, spec, on_progress=on_progress)
    remote_dir = f"/tmp/gpu-transcribe-build-{spec.run_id}"
    argv = _provision_argv(request, settings.remote_prefix, remote_dir, "<wheel>", "")
    return BuildPlan(
        request=request,
        base_image_id=base_image_id,
        base_image_source=source,
        launch=launch_plan,
        image_name=image_name(__version__, request.model, launch_plan.created_at),
        remote_prefix=settings.remote_prefix,
        provision_argv=tuple(argv),
    )


def _failed_checks(manifest: dict[str, Any] | None) -> list[tuple[str, str]]:
    if not manifest:
        return []
    checks = manifest.get("checks") or {}
    return [(str(name), str(state)) for name, state in checks.items() if state != "ok"]


def _failed_check_lines(lines: Sequence[str]) -> list[tuple[str, str]]:
    """``(check, "FAILED: reason")`` from provision.py's ``check NAME: FAILED reason`` lines (for when the
    manifest cannot be read)."""
    failed = []
    for line in lines:
        name, sep, rest = line.removeprefix("check ").partition(": FAILED ")
        if line.startswith("check ") and sep:
            failed.append((name, f"FAILED: {rest}"))
    return failed


def _read_manifest(session: SSHSession, remote_prefix: str, workdir: Path) -> dict[str, Any] | None:
    """The builder's ``manifest.json``, or ``None`` if it cannot be read."""
    local = workdir / "manifest.json"
    try:
        session.pull([(f"{remote_prefix}/manifest.json", local)])
        data = json.loads(local.read_text(encoding="utf-8"))
    except (GpuTranscribeError, OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _check_manifest(
    manifest: dict[str, Any] | None, request: BuildRequest, output_tail: str
) -> dict[str, Any]:
    """The manifest, if it shows a complete, passing provisioning of this version and model.

    Raises:
        ProvisionError: it is missing, a check failed, or it describes another version or model.
    """
    if manifest is None:
        raise ProvisionError(
            "provisioning exited 0 but left no readable manifest.json; no image was made",
            output_tail=output_tail,
        )
    failed = _failed_checks(manifest)
    if failed or manifest.get("ok") is not True or not manifest.get("checks"):
        raise ProvisionError(
            "provisioning checks failed: "
            + ("; ".join(f"{name}: {state}" for name, state in failed) or "the manifest is not ok")
            + "; no image was made",
            failed,
            output_tail,
        )
    if manifest.get("gpu_transcribe") != __version__ or manifest.get("model") != request.model:
        raise ProvisionError(
            f"the builder's manifest names gpu-transcribe {manifest.get('gpu_transcribe')} with "
            f"{manifest.get('model')}, not {__version__} with {request.model}; no image was made",
            output_tail=output_tail,
        )
    return manifest


def run_build(
    ctx: AwsContext,
    settings: Settings,
    request: BuildRequest,
    *,
    ssh_cidr: str,
    on_progress: ProgressCallback = no_progress,
    on_signal: SignalCallback | None = None,
    resolve: AddressResolver | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    image_poll_s: float | None = None,
) -> BuildResult:
    """Build the image; see the module docstring for the phases.

    Args:
        ctx: region, profile, endpoint.
        settings: instance types, tags, subnet/VPC, lifetime, ``remote_prefix``.
        request: what to build.
        ssh_cidr: the CIDR block allowed to port 22 (``auto`` already resolved).
        on_progress: one :class:`ProgressEvent` per step; stages ``wheel``, ``base-image``, the launch's own,
            ``ssh``, ``push``, ``provision`` (a step or check line of provision.py), ``provision-output`` (any
            other line it printed), ``stop``, ``image``, ``terminate``, ``delete``, ``note``, ``phase``
            (a phase ended, with its seconds).
        on_signal: called with ``(signal name, during teardown)`` when SIGINT/SIGTERM/SIGHUP arrives.
        resolve: maps the builder to the address to dial (default: ``GPU_TRANSCRIBE_DIAL_ADDRESS`` if set,
            else its public IP on port 22).
        clock / sleep: injectable time.
        image_poll_s: seconds between image state polls (default 15).

    Returns:
        The :class:`BuildResult`.

    Raises:
        ProvisionError: the provisioning failed (the failed checks and the output's tail are in it).
        InterruptedRunError: a signal stopped the build (exit status 128 + signal).
        CredentialsError, QuotaError, ImageNotFoundError, CapacityError, CloudError, SSHError: from the
            phases. In every case the builder is terminated and no image is left behind.
        TeardownError: something of the builder (or an unfinished image) could not be removed.
    """
    from gpu_transcribe.common import new_run_id

    run_id = new_run_id()
    phases: list[tuple[str, float]] = []
    phase_started = [clock()]

    def phase_done(name: str, seconds: float | None = None) -> None:
        now = clock()
        took = now - phase_started[0] if seconds is None else seconds
        phases.append((name, took))
        on_progress(ProgressEvent("phase", f"{name}: {took:.1f} s"))
        phase_started[0] = now

    with tempfile.TemporaryDirectory(prefix="gpu-transcribe-build-") as tmp:
        workdir = Path(tmp)
        wheel = _wheel(request, workdir, on_progress)
        phase_done("wheel")
        base_image_id, source = _resolve_base(ctx, request)
        on_progress(ProgressEvent("base-image", f"base image {base_image_id} (from {source})"))
        spec = builder_spec(settings, request, base_image_id=base_image_id, ssh_cidr=ssh_cidr, run_id=run_id)
        session = InstanceSession(
            ctx,
            spec,
            on_progress=on_progress,
            on_signal=on_signal,
            resolve=resolve,
            alive_check_s=None,
            clock=clock,
            sleep=sleep,
        )
        try:
            with session:
                phase_done("launch", session.times.launch_s + session.times.ready_s)
                phase_done("ssh", session.times.connect_s)
                image, manifest = _build(
                    session,
                    settings,
                    request,
                    workdir,
                    wheel,
                    base_image_id=base_image_id,
                    phase_done=phase_done,
                    on_progress=on_progress,
                    clock=clock,
                    sleep=sleep,
                    image_poll_s=image_poll_s,
                )
        finally:
            phases.append(("teardown", session.times.teardown_s))
    assert session.usage is not None
    return BuildResult(
        image=image,
        manifest=manifest,
        run_id=run_id,
        base_image_id=base_image_id,
        instance=session.usage,
        phases=tuple(phases),
        wheel=wheel,
    )


def _wheel(request: BuildRequest, workdir: Path, on_progress: ProgressCallback) -> Path:
    """The wheel to install: ``--wheel FILE``, or one built now from the source checkout into ``workdir``.

    Raises:
        InputError: ``--wheel`` is not a wheel file.
        GpuTranscribeError: not run from a source checkout (no ``ami/provision.py`` or lock file).
    """
    from gpu_transcribe.wheel import build_wheel

    for needed in (PROVISION_SCRIPT, CUDA_LOCK):
        if not needed.is_file():
            raise GpuTranscribeError(
                f"{needed} is missing: build-ami runs from a source checkout of gpu-transcribe"
            )
    if request.wheel is not None:
        wheel = Path(request.wheel)
        if not wheel.is_file() or wheel.suffix != ".whl":
            from gpu_transcribe.errors import InputError

            raise InputError(wheel, f"--wheel {wheel}: not a wheel file (.whl); build one or leave it out")
        on_progress(ProgressEvent("wheel", f"using {wheel}"))
        return wheel
    on_progress(ProgressEvent("wheel", "building the gpu-transcribe wheel"))
    wheel = build_wheel(workdir)
    on_progress(ProgressEvent("wheel", f"built {wheel.name} ({wheel.stat().st_size / 1e3:.0f} kB)"))
    return wheel


def _build(
    session: InstanceSession,
    settings: Settings,
    request: BuildRequest,
    workdir: Path,
    wheel: Path,
    *,
    base_image_id: str,
    phase_done: Callable[[str], None],
    on_progress: ProgressCallback,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    image_poll_s: float | None,
) -> tuple[OurImage, dict[str, Any]]:
    """Push, provision, stop and image a connected builder; the session tears down (and its clean-up steps
    stop a provisioning still running and deregister an unfinished image)."""
    ssh, launched = session.ssh, session.launched

    # Push the wheel, the provisioning script and the lock file into a private directory.
    remote_dir = f"/tmp/gpu-transcribe-build-{session.run_id}"
    ssh.run(["mkdir", "-m", "700", remote_dir])
    provisioning = [False]

    def stop_provisioning(open_ssh: SSHSession | None) -> None:
        if open_ssh is None:
            return
        if provisioning[0]:
            on_progress(ProgressEvent("terminate", "stopping the provisioning on the builder"))
            with contextlib.suppress(GpuTranscribeError):
                open_ssh.run(
                    ["sh", "-c", _KILL, f"{remote_dir}/provision.pgid"], check=False, channel_timeout_s=5
                )
        with contextlib.suppress(GpuTranscribeError):
            open_ssh.run(["rm", "-rf", remote_dir], check=False, channel_timeout_s=5)

    cleanup = CleanupStep(f"the build directory {remote_dir}", stop_provisioning)
    session.add_cleanup(cleanup)
    pushed = ssh.push(
        [
            (wheel, f"{remote_dir}/{wheel.name}"),
            (PROVISION_SCRIPT, f"{remote_dir}/provision.py"),
            (CUDA_LOCK, f"{remote_dir}/{CUDA_LOCK.name}"),
        ]
    )
    on_progress(
        ProgressEvent("push", f"pushed {', '.join(Path(p.remote_path).name for p in pushed)} to {remote_dir}")
    )
    phase_done("push")

    # Provision.
    argv = _provision_argv(
        request, settings.remote_prefix, remote_dir, wheel.name, launched.client_key.public_key_openssh
    )
    tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)

    def on_line(line: str) -> None:
        tail.append(line)
        stage = "provision" if line.startswith(("==> ", "check ", "provisioning ")) else "provision-output"
        on_progress(ProgressEvent(stage, line))

    provisioning[0] = True
    try:
        ssh.run(["sh", "-c", _WRAPPER, f"{remote_dir}/provision.pgid", *argv], on_stdout_line=on_line)
    except RemoteCommandError as exc:
        provisioning[0] = False
        manifest = _read_manifest(ssh, settings.remote_prefix, workdir)
        failed = _failed_checks(manifest) or _failed_check_lines(tail)
        why = "; ".join(f"{name}: {reason}" for name, reason in failed) or (
            f"exit status {exc.returncode}" if exc.returncode >= 0 else str(exc)
        )
        raise ProvisionError(
            f"provisioning the builder failed ({why}); no image was made", failed, "\n".join(tail)
        ) from exc
    provisioning[0] = False
    manifest = _check_manifest(_read_manifest(ssh, settings.remote_prefix, workdir), request, "\n".join(tail))
    ssh.run(["rm", "-rf", remote_dir], check=False)
    session.remove_cleanup(cleanup)
    session.close_ssh()
    phase_done("provision")

    # Stop the builder and make the image; an image not yet available is deregistered by the teardown.
    def deregister(image_id: str) -> Callable[[SSHSession | None], None]:
        def run(_: SSHSession | None) -> None:
            _delete_unfinished_image(session.ctx, image_id, session.run_id, on_progress, clock, sleep)

        return run

    unfinished: list[CleanupStep] = []

    def image_created(image_id: str) -> None:
        unfinished.append(CleanupStep(f"image {image_id}", deregister(image_id)))
        session.add_cleanup(unfinished[-1])

    image = image_builder(
        session.ctx,
        launched,
        model=request.model,
        revision=request.revision,
        base_image_id=base_image_id,
        extra_tags=settings.tags,
        on_image_created=image_created,
        on_stopped=session.billing_ended,
        phase_done=phase_done,
        on_progress=on_progress,
        clock=clock,
        sleep=sleep,
        poll_s=image_poll_s,
    )
    for step in unfinished:
        session.remove_cleanup(step)
    return image, manifest


def image_builder(
    ctx: AwsContext,
    launched: LaunchResult,
    *,
    model: str,
    revision: str | None,
    base_image_id: str,
    extra_tags: Sequence[tuple[str, str]] = (),
    on_image_created: Callable[[str], None] = lambda image_id: None,
    on_stopped: Callable[[], None] = lambda: None,
    phase_done: Callable[[str], None] = lambda name: None,
    on_progress: ProgressCallback = no_progress,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    poll_s: float | None = None,
) -> OurImage:
    """Make the image of a provisioned builder: stop it (on-demand), ``CreateImage`` with our tags, tag the
    snapshots, wait until ``available``.

    An on-demand builder is stopped first, so the snapshot is of cleanly unmounted file systems. A one-time
    spot instance cannot be stopped (EC2 refuses ``StopInstances`` for it): EC2 reboots it for the snapshot
    instead (``NoReboot=False``), which also flushes the file systems.

    Tags of the image and its snapshots: ``gpu-transcribe:version``, ``:model``, ``:revision``, ``:created``
    (now), ``:base-ami``, ``:run-id`` and ``:owner`` (the build's), the user's ``tags`` setting, and ``Name``
    (the image name).

    Args:
        on_image_created: called with the new image id as soon as EC2 returns it (so that a teardown can
            deregister an unfinished image).
        on_stopped: called once the builder is stopped (its billed time ends).
        phase_done: called with ``stop`` and then ``image`` as each phase ends.
        poll_s: seconds between image polls (default :data:`gpu_transcribe.aws.images.IMAGE_POLL_S`).

    Returns:
        The available image.

    Raises:
        InstanceLostError: the builder terminated while stopping.
        CloudError: a call failed, the image failed, or a wait timed out.
    """
    from gpu_transcribe.aws.images import (
        IMAGE_POLL_S,
        create_image,
        image_name,
        image_tags,
        stop_instance,
        wait_image_available,
    )
    from gpu_transcribe.aws.models import TAG_ROLE
    from gpu_transcribe.aws.resources import run_tags

    reboot = launched.market == "spot"
    if reboot:
        on_progress(
            ProgressEvent("stop", "a spot builder cannot be stopped: EC2 reboots it for the snapshot")
        )
    else:
        stop_instance(ctx, launched.instance_id, on_progress=on_progress, clock=clock, sleep=sleep)
        on_stopped()
    phase_done("stop")
    created_at = utc_now()
    name = image_name(__version__, model, created_at)
    base_tags = run_tags(
        run_id=launched.run_id,
        owner_arn=launched.owner_arn,
        created_at=created_at,
        role="builder",
        name=name,
        extra=extra_tags,
    )
    tags = [
        (key, value)
        for key, value in image_tags(
            version=__version__,
            model=model,
            revision=revision,
            base_image_id=base_image_id,
            name=name,
            run_tags=base_tags,
        )
        if key != TAG_ROLE  # an image is not a builder
    ]
    description = f"gpu-transcribe {__version__}, {model}" + (f"@{revision}" if revision else "")
    image_id = create_image(
        ctx, launched.instance_id, name=name, description=description, tags=tags, reboot=reboot
    )
    on_image_created(image_id)
    on_progress(ProgressEvent("image", f"creating image {image_id} ({name})"))
    image = wait_image_available(
        ctx,
        image_id,
        snapshot_tags=tags,
        poll_s=IMAGE_POLL_S if poll_s is None else poll_s,
        on_progress=on_progress,
        clock=clock,
        sleep=sleep,
    )
    phase_done("image")
    return image


def _delete_unfinished_image(
    ctx: AwsContext,
    image_id: str,
    run_id: str,
    on_progress: ProgressCallback,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> None:
    """Deregister an image of a build that did not finish, and delete its snapshots.

    Raises:
        TeardownError: something of it could not be removed (``gpu-transcribe images prune`` can retry).
    """
    from gpu_transcribe.aws.images import delete_image

    on_progress(ProgressEvent("delete", f"the build did not finish: deregistering image {image_id}"))
    try:
        removal = delete_image(ctx, image_id, run_id=run_id, clock=clock, sleep=sleep)
    except GpuTranscribeError as exc:
        raise TeardownError(
            f"{exc} (retry with `gpu-transcribe images prune`)", [(f"image {image_id}", str(exc))]
        ) from exc
    for snapshot_id in removal.deleted_snapshots:
        on_progress(ProgressEvent("delete", f"deleted snapshot {snapshot_id}"))
    if removal.failed:
        raise TeardownError(
            f"image {image_id}: some of it could not be removed (retry with `gpu-transcribe images prune`)",
            list(removal.failed),
        )


def format_phases(phases: Sequence[tuple[str, float]]) -> str:
    """``wheel 1.5 s, launch 42.0 s, ...`` for a summary line."""
    return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases)
