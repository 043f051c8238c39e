"""``build-ami``'s flow: the wheel, then an instance session on the builder (launch, SSH, teardown), the
provisioning and the image, each phase timed."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from gpu_transcribe.build_ami.image import image_of_builder
from gpu_transcribe.build_ami.plan import (
    CUDA_LOCK,
    PROVISION_SCRIPT,
    BuildRequest,
    BuildResult,
    builder_spec,
    resolve_base,
)
from gpu_transcribe.build_ami.provision import provision_builder
from gpu_transcribe.common import ProgressCallback, ProgressEvent, no_progress
from gpu_transcribe.errors import GpuTranscribeError
from gpu_transcribe.instance.lifecycle import SignalCallback
from gpu_transcribe.instance.session import InstanceSession

if TYPE_CHECKING:
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.ec2.instances import AddressResolver
    from gpu_transcribe.settings import Settings


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
        base_image_id, source = resolve_base(ctx, request)
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
                manifest = provision_builder(
                    session, settings, request, workdir, wheel, phase_done=phase_done, on_progress=on_progress
                )
                image = image_of_builder(
                    session,
                    settings,
                    request,
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
        GpuTranscribeError: the provisioning script or the lock file is missing.
    """
    from gpu_transcribe.build_ami.wheel import build_wheel

    for needed in (PROVISION_SCRIPT, CUDA_LOCK):
        if not needed.is_file():
            raise GpuTranscribeError(
                f"{needed} is missing: reinstall gpu-transcribe, or run build-ami from a source checkout"
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
