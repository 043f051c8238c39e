"""What ``build-ami`` is asked and decides before creating anything: the request, the plan (base image,
the builder's launch plan, the image name, the provisioning command), the result type, and the builder's
launch spec."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpu_transcribe import __version__
from gpu_transcribe.common import ProgressCallback, ProgressEvent, no_progress
from gpu_transcribe.instance.session import InstanceUsage

if TYPE_CHECKING:
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.ec2.images import OurImage
    from gpu_transcribe.aws.ec2.launch_plan import LaunchPlan
    from gpu_transcribe.aws.ec2.models import LaunchSpec
    from gpu_transcribe.settings import Settings


def shipped_file(checkout_path: str, packaged_name: str) -> Path:
    """A file ``build-ami`` pushes: ``checkout_path`` in a source checkout, else the copy the wheel carries
    as ``gpu_transcribe/data/<packaged_name>`` (see :data:`gpu_transcribe.build_ami.wheel.WHEEL_EXTRAS`)."""
    in_checkout = Path(__file__).resolve().parents[2] / checkout_path
    if in_checkout.is_file():
        return in_checkout
    return Path(str(resources.files("gpu_transcribe").joinpath("data", packaged_name)))


#: The provisioning script, pushed to the builder (repository path ``ami/provision.py``; in an installed
#: copy ``gpu_transcribe/data/provision.py``).
PROVISION_SCRIPT = shipped_file("ami/provision.py", "provision.py")
#: The image venv's exact versions and hashes (``make lock``: client and engine, torch with CUDA, Python 3.11
#: on x86_64 Linux), pushed beside the wheel; ``provision.py --lock`` installs it, then the wheel with
#: ``--no-deps``. Repository path ``requirements/cuda.lock``; in an installed copy ``gpu_transcribe/data``.
CUDA_LOCK = shipped_file("requirements/cuda.lock", "cuda.lock")
#: Root volume of the builder and so of every run's instance, GiB (the base image's own size if larger).
#: The engine's venv (torch with its CUDA libraries, ~6 GiB installed) and a Whisper model (0.5-3 GiB) go
#: on top of the base image's driver and CUDA toolkits; 100 GiB leaves room without measuring each base
#: image. gp3 at about $0.08 per GiB-month costs a run of an hour about $0.011 for it.
DEFAULT_ROOT_VOLUME_GIB = 100
#: The builder's dead-man switch: provisioning takes 15-30 minutes (torch's CUDA wheels are ~3 GB), so a
#: shorter ``max_lifetime_minutes`` setting is raised to this for the builder.
MIN_BUILDER_LIFETIME_MINUTES = 120


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


def provision_argv(
    request: BuildRequest, remote_prefix: str, remote_dir: str, wheel_name: str, forget_key: str
) -> list[str]:
    """The command that provisions the builder: ``provision.py`` from ``remote_dir`` with the pushed wheel
    and lock, the model, CUDA required, and ``--forget-authorized-key`` for the build's client key (the image
    must not keep it); then ``request.provision_args``."""
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
    """The builder's :class:`~gpu_transcribe.aws.ec2.models.LaunchSpec`: role ``builder``, on-demand (or spot
    then on-demand with ``spot``), a lifetime of at least :data:`MIN_BUILDER_LIFETIME_MINUTES`."""
    from gpu_transcribe.instance.spec import launch_spec

    return launch_spec(
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


def resolve_base(ctx: AwsContext, request: BuildRequest) -> tuple[str, str]:
    """``(base AMI id, where it came from)``: ``--base-ami``, else the Deep Learning Base AMI's SSM parameter.

    Raises:
        ImageNotFoundError, CloudError: the SSM parameter cannot be read.
    """
    from gpu_transcribe.aws.ec2.image_create import DLAMI_BASE_PARAMETER, resolve_base_image

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
            :func:`gpu_transcribe.aws.ec2.launch_plan.plan_launch`, and when the base image cannot be
            resolved.
    """
    from gpu_transcribe.aws.ec2.image_create import image_name
    from gpu_transcribe.aws.ec2.launch_plan import plan_launch

    base_image_id, source = resolve_base(ctx, request)
    on_progress(ProgressEvent("base-image", f"base image {base_image_id} (from {source})"))
    spec = builder_spec(settings, request, base_image_id=base_image_id, ssh_cidr=ssh_cidr)
    launch_plan = plan_launch(ctx, spec, on_progress=on_progress)
    remote_dir = f"/tmp/gpu-transcribe-build-{spec.run_id}"
    argv = provision_argv(request, settings.remote_prefix, remote_dir, "<wheel>", "")
    return BuildPlan(
        request=request,
        base_image_id=base_image_id,
        base_image_source=source,
        launch=launch_plan,
        image_name=image_name(__version__, request.model, launch_plan.created_at),
        remote_prefix=settings.remote_prefix,
        provision_argv=tuple(argv),
    )
