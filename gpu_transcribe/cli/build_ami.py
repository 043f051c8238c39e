"""``gpu-transcribe build-ami``: its options, the build (or ``--dry-run``'s plan), its progress on stderr and
its result on stdout.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from gpu_transcribe.cli import options as opt
from gpu_transcribe.cli.base import cli_settings
from gpu_transcribe.cli.output import event_printer, format_phases, print_lines, stderr, stdout
from gpu_transcribe_engine.options import DEFAULT_MODEL

if TYPE_CHECKING:
    from gpu_transcribe.build_ami import BuildPlan, BuildResult
    from gpu_transcribe.common import ProgressCallback, ProgressEvent
    from gpu_transcribe.instance.lifecycle import SignalCallback

# --- options ---------------------------------------------------------------------------------------------

ImageModel = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        metavar="ID",
        help="Whisper model to cache in the image: a Hugging Face id. "
        f"Default: setting model ({DEFAULT_MODEL}).",
    ),
]
BaseAmi = Annotated[
    str | None,
    typer.Option(
        "--base-ami",
        metavar="AMI",
        help="AMI to build on; default: the newest AWS Deep Learning Base OSS Nvidia Driver GPU AMI "
        "(Ubuntu 22.04), from its SSM public parameter.",
    ),
]
Spot = Annotated[
    bool, typer.Option("--spot", help="Launch the builder on spot (then on-demand); default on-demand.")
]
Wheel = Annotated[
    Path | None,
    typer.Option(
        "--wheel", metavar="FILE", help="A built gpu-transcribe wheel; default: build one from this checkout."
    ),
]
LoginUser = Annotated[str, typer.Option("--login-user", metavar="USER", help="The base AMI's SSH user.")]
ProvisionArg = Annotated[
    list[str] | None,
    typer.Option(
        "--provision-arg",
        hidden=True,
        help="Extra argument for ami/provision.py on the builder (repeatable; tests: --skip-system-packages, "
        "--model-dir, --lock requirements/cpu.lock, --python, --device cpu, --no-require-cuda).",
    ),
]


# --- build-ami -------------------------------------------------------------------------------------------


def build_ami(
    model: ImageModel = None,
    revision: opt.Revision = None,
    base_ami: BaseAmi = None,
    spot: Spot = False,
    instance_type: opt.InstanceType = None,
    wheel: Wheel = None,
    login_user: LoginUser = "ubuntu",
    dry_run: opt.DryRun = False,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
    provision_arg: ProvisionArg = None,
) -> None:
    """Build the GPU image (AMI) that runs boot from.

    The engine installed, the model cached, both checked on the GPU."""
    # Function-level: aws.clients imports boto3; build_ami and checkip add ~30 ms to every --help.
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.ec2.checkip import resolve_ssh_cidr
    from gpu_transcribe.build_ami import BuildRequest, plan_build, run_build

    settings = cli_settings(warn_ssh_cidr=True, region=region, aws_profile=aws_profile, model=model)
    request = BuildRequest(
        model=settings.model,
        revision=revision,
        base_image_id=base_ami,
        spot=spot,
        instance_types=tuple(instance_type) if instance_type else None,
        wheel=wheel,
        login_user=login_user,
        provision_args=tuple(provision_arg or ()),
    )
    ctx = AwsContext.from_settings(settings)
    ssh_cidr = resolve_ssh_cidr(settings.ssh_cidr, settings.source("ssh_cidr"))
    if dry_run:
        plan = plan_build(ctx, settings, request, ssh_cidr=ssh_cidr, on_progress=event_printer(stderr))
        print_build_plan(plan, stdout)
        return
    result = run_build(
        ctx,
        settings,
        request,
        ssh_cidr=ssh_cidr,
        on_progress=build_event_printer(stderr),
        on_signal=build_signal_printer(stderr),
    )
    print_lines(build_result_lines(result, settings.region), stdout)


# --- how it looks ----------------------------------------------------------------------------------------


def print_build_plan(plan: BuildPlan, console: Console) -> None:
    """``build-ami --dry-run``: the base image, the builder, its tries, the image name, the provisioning
    command and the tags."""
    # Function-level: the ssh package imports paramiko (kept off --help).
    from gpu_transcribe.ssh import command_line

    launch = plan.launch
    spec = launch.spec
    volume_gib = max(spec.root_volume_size_gib or 0, launch.image.root_volume_size_gib)
    tries = []
    for option in launch.options:
        price = option.zone.spot_price_usd_per_hour
        shown = f" (spot ${price:.4f}/h)" if option.market == "spot" and price is not None else ""
        tries.append(f"{option.market} {option.instance_type} in {option.zone.zone}{shown}")
    rows = [
        ("base image", f"{plan.base_image_id} {launch.image.name} (from {plan.base_image_source})"),
        ("builder", f"{', '.join(spec.instance_types)}, {spec.market}, run {spec.run_id}"),
        ("root volume", f"{volume_gib} GiB gp3, encrypted"),
        ("tries", "; ".join(tries)),
        ("image name", plan.image_name),
        ("install prefix", plan.remote_prefix),
        ("provisioning", command_line(plan.provision_argv)),
        ("tags", ", ".join(f"{k}={v}" for k, v in launch.tags)),
    ]
    print_lines(["build-ami plan (dry run: nothing launched)"], console, style="bold", soft_wrap=False)
    print_lines((f"{key}: {value}" for key, value in rows), console)


def build_result_lines(result: BuildResult, region: str) -> list[str]:
    """``build-ami``'s result, one line each: the image, its size and snapshots, its contents (from the
    manifest), the warm-up, the builder, the phases' seconds and the builder's cost."""
    image, manifest, builder = result.image, result.manifest, result.instance
    warmup = manifest.get("warmup") or {}
    cost = f"${result.cost_usd:.4f}" if result.cost_usd is not None else "unknown (no price)"
    price = (
        f"${builder.price_usd_per_hour:.4f}/h" if builder.price_usd_per_hour is not None else "price unknown"
    )
    revision = f"@{manifest.get('revision')}" if manifest.get("revision") else ""
    return [
        f"image: {image.image_id} ({image.name}) in {region}",
        f"size: {image.size_gib} GiB in {len(image.snapshot_ids)} snapshot(s): "
        + ", ".join(image.snapshot_ids),
        f"contents: gpu-transcribe {manifest.get('gpu_transcribe')}, {manifest.get('model')}{revision}"
        f", torch {manifest.get('torch')}, CUDA {manifest.get('cuda') or '-'}"
        f", driver {manifest.get('driver') or '-'}",
        f"warm-up: {warmup.get('device')} {warmup.get('dtype')}, load {warmup.get('load_s')} s, "
        f"transcribe {warmup.get('transcribe_s')} s: {warmup.get('text', '')!r}",
        f"builder: {builder.instance_id} {builder.market} {builder.instance_type} in {builder.zone} "
        f"at {price}",
        f"phases: {format_phases(result.phases)} (total {result.total_s:.1f} s)",
        f"cost: {cost} for {builder.billed_s:.0f} s of the builder (image storage is billed per GiB-month)",
    ]


def build_event_printer(console: Console) -> ProgressCallback:
    """``build-ami``'s progress callback: provisioning steps and phases in bold, other events dimmed; the
    provisioning's own output (pip's chatter) is skipped, its tail is shown if the provisioning fails."""

    def show(event: ProgressEvent) -> None:
        if event.stage == "provision-output":
            return
        style = "bold" if event.stage in ("provision", "phase") else "dim"
        print_lines([event.message], console, style=style)

    return show


def build_signal_printer(console: Console) -> SignalCallback:
    """``build-ami``'s signal callback: say that the builder is being terminated."""

    def show(name: str, during_teardown: bool) -> None:
        message = (
            f"{name}: still cleaning up; the builder is being terminated"
            if during_teardown
            else f"{name}: stopping the build and terminating the builder..."
        )
        print_lines([message], console, style="bold yellow", soft_wrap=False)

    return show
