"""The command line: parses, prints, and maps errors to exit codes. Nothing else lives here.

Results go to stdout, progress and errors to stderr. Heavy modules (boto3, paramiko, torch) are imported
inside the commands, so ``gpu-transcribe --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from gpu_transcribe import __version__
from gpu_transcribe.errors import GpuTranscribeError
from remote.options import DEFAULT_FORMATS, DEFAULT_LANGUAGE, DEFAULT_MODEL, TranscribeOptions

if TYPE_CHECKING:
    from gpu_transcribe.aws.models import ZonePrice
    from gpu_transcribe.common import ProgressEvent
    from gpu_transcribe.settings import Settings

app = typer.Typer(
    name="gpu-transcribe",
    help="Transcribe audio on a short-lived AWS GPU spot instance, or on this machine with --local.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help text: typer's Rich help imports markdown-it and costs ~0.1 s on every --help (measured).
    rich_markup_mode=None,
)

stdout = Console()
stderr = Console(stderr=True)


def fail(error: GpuTranscribeError) -> typer.Exit:
    """Print ``error`` as one line on stderr and return the ``typer.Exit`` to raise with its exit code."""
    stderr.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
    return typer.Exit(error.exit_code)


def _version_callback(value: bool) -> None:
    if value:
        stdout.print(f"gpu-transcribe {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """Transcribe audio on a short-lived AWS GPU spot instance, or on this machine with --local."""


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        stderr.print("[bold red]interrupted[/]")
        sys.exit(130)


# --- run ---------------------------------------------------------------------------------------------

DEFAULT_FORMATS_ARG = ",".join(DEFAULT_FORMATS)

PathsArg = Annotated[
    list[Path],
    typer.Argument(
        help="Audio files, or directories searched for audio (wav, flac, mp3, ogg, opus, m4a...).",
        show_default=False,
    ),
]
OutputDirOpt = Annotated[
    Path | None,
    typer.Option("--output-dir", "-o", help="Write every output here. Default: beside each input file."),
]
FormatOpt = Annotated[
    str, typer.Option("--format", "-f", help="Output formats, comma-separated: txt,json,srt,vtt.")
]
LanguageOpt = Annotated[
    str | None,
    typer.Option(
        "--language",
        "-l",
        help=f"Language code (sv, en...) or 'auto' to detect. Default: setting language, {DEFAULT_LANGUAGE}.",
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help=f"Hugging Face model id or a local model directory. Default: setting model ({DEFAULT_MODEL}).",
    ),
]
RevisionOpt = Annotated[
    str | None, typer.Option("--revision", help="Model revision (branch, tag or commit).")
]
BatchSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        min=1,
        max=256,
        help="Windows decoded together (batched algorithm). Default: per device.",
    ),
]
AlgorithmOpt = Annotated[
    str, typer.Option("--algorithm", help="auto, sequential (most accurate) or batched (fastest on GPUs).")
]
BeamSizeOpt = Annotated[
    int, typer.Option("--beam-size", min=1, max=16, help="Beam search width; 1 is greedy.")
]
TaskOpt = Annotated[str, typer.Option("--task", help="transcribe, or translate (into English).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="With --local: auto, cpu or cuda.")]


RegionOption = Annotated[str | None, typer.Option("--region", help="AWS region (setting: region).")]
ProfileOption = Annotated[
    str | None,
    typer.Option("--aws-profile", help="Named AWS profile from ~/.aws/config (setting: aws_profile)."),
]


@app.command()
def run(
    paths: PathsArg,
    local: Annotated[bool, typer.Option("--local", help="Transcribe on this machine; no cloud.")] = False,
    output_dir: OutputDirOpt = None,
    formats: FormatOpt = DEFAULT_FORMATS_ARG,
    language: LanguageOpt = None,
    model: ModelOpt = None,
    revision: RevisionOpt = None,
    batch_size: BatchSizeOpt = None,
    algorithm: AlgorithmOpt = "auto",
    beam_size: BeamSizeOpt = TranscribeOptions.beam_size,
    task: TaskOpt = "transcribe",
    device: DeviceOpt = "auto",
    no_s3: Annotated[bool, typer.Option("--no-s3", help="Do not upload the outputs to S3.")] = False,
    upload_audio: Annotated[
        bool, typer.Option("--upload-audio", help="Also store the audio files in S3.")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the plan (zones, prices, image, tags, cost); launch nothing."),
    ] = False,
    update_engine: Annotated[
        bool,
        typer.Option(
            "--update-engine", help="Use an image of another version; install this version on it first."
        ),
    ] = False,
    host: Annotated[
        str | None,
        typer.Option("--host", help="Run on an existing machine, user@address[:port]; no EC2 at all."),
    ] = None,
    identity: Annotated[
        Path | None, typer.Option("--identity", "-i", help="With --host: the private key to log in with.")
    ] = None,
    known_hosts: Annotated[
        Path | None,
        typer.Option(
            "--known-hosts", help="With --host: known_hosts file with the host's key (~/.ssh/known_hosts)."
        ),
    ] = None,
    instance_type: Annotated[
        list[str] | None,
        typer.Option("--instance-type", "-t", help="Instance type, repeatable in order of preference."),
    ] = None,
    market: Annotated[
        str | None, typer.Option("--market", help="spot-then-on-demand, spot or on-demand.")
    ] = None,
    s3_bucket: Annotated[str | None, typer.Option("--s3-bucket", help="Bucket for the outputs.")] = None,
    region: RegionOption = None,
    aws_profile: ProfileOption = None,
) -> None:
    """Transcribe audio files on a new GPU instance (or --local, or --host). Transcript paths go to stdout;
    progress and the summary to stderr."""
    settings = _load_settings(
        region=region,
        aws_profile=aws_profile,
        instance_types=",".join(instance_type or []) or None,
        market=market,
        s3_bucket=s3_bucket,
        model=model,
        language=language,
    )
    options = TranscribeOptions(
        language=settings.language,
        task=task,  # type: ignore[arg-type]  # validated by TranscribeOptions.validated()
        beam_size=beam_size,
        batch_size=batch_size,
        algorithm=algorithm,  # type: ignore[arg-type]
    )
    where = [name for name, given in (("--local", local), ("--host", host), ("--dry-run", dry_run)) if given]
    if len(where) > 1:
        from gpu_transcribe.errors import SettingsError

        raise fail(
            SettingsError(
                where[0],
                "command line",
                f"{' and '.join(where)} cannot be combined: --local runs here, --host on your machine, "
                "--dry-run plans a cloud launch; choose one",
                "one of --local, --host, --dry-run",
            )
        )
    if local:
        _run_local(paths, output_dir, formats, options, settings.model, revision, device)
    else:
        _run_remote(
            paths, output_dir, formats, options, settings, revision, not no_s3, upload_audio, dry_run,
            update_engine, host, identity, known_hosts,
        )  # fmt: skip


def _run_local(
    paths: list[Path],
    output_dir: Path | None,
    formats: str,
    options: TranscribeOptions,
    model: str,
    revision: str | None,
    device: str,
) -> None:
    from gpu_transcribe.local import LocalRunRequest, run_local
    from gpu_transcribe.progress import EngineProgress, print_engine_summary

    request = LocalRunRequest(
        paths=tuple(str(p) for p in paths),
        output_dir=output_dir,
        formats=tuple(formats.split(",")),
        options=options,
        model=model,
        revision=revision,
        device=device,
    )
    with EngineProgress(stderr) as progress:
        try:
            result = run_local(request, on_event=progress.on_event)
        except GpuTranscribeError as exc:
            progress.stop()
            raise fail(exc) from None
    for problem in result.input_problems:
        stderr.print(f"[bold red]error:[/] {problem}", highlight=False, soft_wrap=True)
    if result.engine is not None:
        print_engine_summary(result.engine)
        for outcome in result.engine.files:
            for path in outcome.outputs.values():
                stdout.print(path, highlight=False, soft_wrap=True)
    if not result.ok:
        raise typer.Exit(1)


#: ``run`` exit statuses beyond the errors' own (README, "Exit status").
EXIT_UPLOAD_FAILED = 4
EXIT_LEFT_BEHIND = 5


def _run_remote(
    paths: list[Path],
    output_dir: Path | None,
    formats: str,
    options: TranscribeOptions,
    settings: Settings,
    revision: str | None,
    upload: bool,
    upload_audio: bool,
    dry_run: bool,
    update_engine: bool,
    host: str | None,
    identity: Path | None,
    known_hosts: Path | None,
) -> None:
    from gpu_transcribe.progress import EngineProgress, print_cloud_summary, print_dry_run
    from gpu_transcribe.run import CloudRunRequest, RunCallbacks, parse_host, plan_run, run_cloud, run_on_host

    try:
        host_spec = parse_host(host, identity, known_hosts) if host else None
    except GpuTranscribeError as exc:
        raise fail(exc) from None
    request = CloudRunRequest(
        paths=tuple(str(p) for p in paths),
        output_dir=output_dir,
        formats=tuple(formats.split(",")),
        options=options,
        model=settings.model,
        revision=revision,
        upload=upload,
        upload_audio=upload_audio,
        update_engine=update_engine,
        host=host_spec,
    )
    with EngineProgress(stderr) as progress:

        def on_signal(name: str, during_teardown: bool) -> None:
            if during_teardown:
                progress.note(f"{name} received: still cleaning up (the instance is being terminated)")
            else:
                progress.note(f"{name} received: cleaning up (terminating the instance), please wait")

        callbacks = RunCallbacks(
            on_progress=lambda event: progress.note(event.message),
            on_engine_event=progress.on_event,
            on_push_start=progress.push_start,
            on_push_progress=progress.push_advance,
            on_signal=on_signal,
        )
        try:
            if dry_run:
                plan = plan_run(request, settings, callbacks)
                progress.stop()
                print_dry_run(plan, stdout)
                return
            result = (run_on_host if host_spec else run_cloud)(request, settings, callbacks)
        except GpuTranscribeError as exc:
            progress.stop()
            raise fail(exc) from None
    print_cloud_summary(result, stderr)
    for f in result.files:
        for path in f.outputs.values():
            stdout.print(path, highlight=False, soft_wrap=True)
    if result.teardown_error is not None:
        raise typer.Exit(EXIT_LEFT_BEHIND)
    if result.input_problems or result.failed_files:
        raise typer.Exit(1)
    if result.upload_error is not None:
        raise typer.Exit(EXIT_UPLOAD_FAILED)


# --- AWS commands: `config show`, `zones`, `cleanup` (issue 3) ---------------------------------------------
# Kept in their own block so they merge cleanly with the `run` command. boto3 is imported inside the commands.

config_app = typer.Typer(help="Inspect the settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")


def _load_settings(**flags: object) -> Settings:
    """The effective settings for these flags, or exit with the setting's one-line error."""
    from gpu_transcribe.settings import load_settings

    try:
        return load_settings(flags)
    except GpuTranscribeError as error:
        raise fail(error) from None


def _show_progress(event: ProgressEvent) -> None:
    stderr.print(event.message, style="dim", markup=False, highlight=False)


@config_app.command("show")
def config_show(region: RegionOption = None, aws_profile: ProfileOption = None) -> None:
    """Print the effective settings and where each value came from (flag, environment, file, default)."""
    from rich.table import Table

    from gpu_transcribe.settings import default_config_files, env_var

    settings = _load_settings(region=region, aws_profile=aws_profile)
    table = Table(title="gpu-transcribe settings", title_justify="left")
    table.add_column("setting", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("source", overflow="fold")
    table.add_column("environment variable", no_wrap=True, style="dim")
    for name, value, source in settings.rows():
        table.add_row(name, value, source, env_var(name))
    stdout.print(table)
    files = ", ".join(f"{p} ({'read' if p.is_file() else 'absent'})" for p in default_config_files())
    stdout.print(f"config files, first wins: {files}", highlight=False, soft_wrap=True)


@app.command("zones")
def zones(
    instance_type: Annotated[
        list[str] | None,
        typer.Option(
            "--instance-type", "-t", help="Instance type (repeatable); default: the instance_types setting."
        ),
    ] = None,
    region: RegionOption = None,
    aws_profile: ProfileOption = None,
) -> None:
    """List the zones for each instance type, cheapest spot price first, with on-demand price and saving."""
    from rich.table import Table

    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.prices import zone_prices

    settings = _load_settings(
        region=region, aws_profile=aws_profile, instance_types=",".join(instance_type or []) or None
    )
    ctx = AwsContext.from_settings(settings)
    rows: list[ZonePrice] = []
    try:
        with stderr.status(f"reading spot prices in {settings.region}"):
            for name in settings.instance_types:
                rows.extend(zone_prices(ctx, name))
    except GpuTranscribeError as error:
        raise fail(error) from None
    missing = [t for t in settings.instance_types if not any(r.instance_type == t for r in rows)]
    table = Table(title=f"zones in {settings.region}, cheapest spot first", title_justify="left")
    for header in ("zone", "instance type", "spot $/h", "on-demand $/h", "saving"):
        table.add_column(
            header, no_wrap=True, justify="right" if "$" in header or header == "saving" else "left"
        )
    sources = set()
    for row in rows:
        od = row.on_demand.price_usd_per_hour if row.on_demand else None
        if row.on_demand:
            sources.add(row.on_demand.source)
        saving = row.saving_fraction
        table.add_row(
            row.zone,
            row.instance_type,
            f"{row.spot_price_usd_per_hour:.4f}" if row.spot_price_usd_per_hour is not None else "-",
            f"{od:.4f}" if od is not None else "-",
            f"{saving:.0%}" if saving is not None else "-",
        )
    if rows:
        stdout.print(table)
        for source in sorted(sources):
            stdout.print(f"on-demand prices: {source}", highlight=False, soft_wrap=True)
    if missing:
        from gpu_transcribe.errors import CloudError

        raise fail(
            CloudError(f"no zone in {settings.region} offers {', '.join(missing)}; check instance_types")
        )


@app.command("cleanup")
def cleanup_command(
    all_owners: Annotated[
        bool, typer.Option("--all-owners", help="Include other callers' resources.")
    ] = False,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="Only resources at least this old (2h, 90m, 0); default: max lifetime + 10 minutes.",
        ),
    ] = None,
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Only this run (any age unless --older-than).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be removed; change nothing.")
    ] = False,
    region: RegionOption = None,
    aws_profile: ProfileOption = None,
) -> None:
    """Find gpu-transcribe's instances, volumes, key pairs and security groups by tag and remove them."""
    from rich.table import Table

    from gpu_transcribe.cleanup import cleanup, format_age
    from gpu_transcribe.errors import TeardownError
    from gpu_transcribe.settings import parse_duration_s

    settings = _load_settings(region=region, aws_profile=aws_profile)
    try:
        older_than_s = parse_duration_s(older_than) if older_than is not None else None
        report = cleanup(
            settings,
            all_owners=all_owners,
            older_than_s=older_than_s,
            run_id=run_id,
            dry_run=dry_run,
            on_progress=_show_progress,
        )
    except GpuTranscribeError as error:
        raise fail(error) from None
    if not report.outcomes:
        stdout.print(f"nothing of gpu-transcribe's found in {report.region}", highlight=False)
        return
    title = f"gpu-transcribe resources in {report.region}" + (
        " (dry run: nothing changed)" if dry_run else ""
    )
    table = Table(title=title, title_justify="left")
    for header in ("run id", "kind", "id", "age", "state", "owner", "action", "reason"):
        table.add_column(header, overflow="fold", no_wrap=header in ("kind", "age", "action"))
    for outcome in report.outcomes:
        res = outcome.resource
        age = res.age_s(report.now)
        table.add_row(
            res.run_id,
            res.kind,
            res.resource_id,
            format_age(age) if age is not None else "?",
            res.state or "-",
            "you" if res.owner_arn == report.caller_arn else (res.owner_arn or "-"),
            outcome.action,
            outcome.reason,
        )
    stdout.print(table)
    if report.failed:
        raise fail(
            TeardownError(
                f"{len(report.failed)} resource(s) could not be removed: "
                + "; ".join(f"{o.resource.kind} {o.resource.resource_id}: {o.reason}" for o in report.failed),
                [(f"{o.resource.kind} {o.resource.resource_id}", o.reason) for o in report.failed],
            )
        )


# --- images: `build-ami`, `images`, `images prune` (issue 5) -----------------------------------------------
# One block, appended last, so it merges cleanly with the `run` command. boto3 is imported inside them.

if TYPE_CHECKING:
    from gpu_transcribe.build import BuildPlan


def _print_output_tail(tail: str) -> None:
    if tail.strip():
        stderr.print("--- last lines of the provisioning ---", style="dim", highlight=False)
        stderr.print(tail, markup=False, highlight=False, soft_wrap=True)


@app.command("build-ami")
def build_ami(
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Hugging Face model id to cache in the image (setting: model)."),
    ] = None,
    revision: Annotated[
        str | None, typer.Option("--revision", help="Model revision (branch, tag or commit).")
    ] = None,
    base_ami: Annotated[
        str | None,
        typer.Option(
            "--base-ami",
            help="AMI to build on; default: the newest AWS Deep Learning Base OSS Nvidia Driver GPU AMI "
            "(Ubuntu 22.04), from its SSM public parameter.",
        ),
    ] = None,
    spot: Annotated[
        bool, typer.Option("--spot", help="Launch the builder on spot (then on-demand); default on-demand.")
    ] = False,
    instance_type: Annotated[
        list[str] | None,
        typer.Option(
            "--instance-type", "-t", help="Builder type (repeatable); default: the instance_types setting."
        ),
    ] = None,
    wheel: Annotated[
        Path | None,
        typer.Option("--wheel", help="A built gpu-transcribe wheel; default: build one from this checkout."),
    ] = None,
    login_user: Annotated[str, typer.Option("--login-user", help="The base AMI's SSH user.")] = "ubuntu",
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Show the base image, the builder's plan and the tags; launch nothing."
        ),
    ] = False,
    region: RegionOption = None,
    aws_profile: ProfileOption = None,
    provision_arg: Annotated[
        list[str] | None,
        typer.Option(
            "--provision-arg",
            hidden=True,
            help="Extra argument for ami/provision.py on the builder (repeatable; tests: "
            "--skip-system-packages, "
            "--model-dir, --lock requirements/cpu.lock, --python, --device cpu, --no-require-cuda).",
        ),
    ] = None,
) -> None:
    """Build the GPU image runs boot from: engine installed, model cached, both checked on the GPU."""
    from gpu_transcribe.aws.checkip import resolve_ssh_cidr
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.build import BuildRequest, format_phases, plan_build, run_build
    from gpu_transcribe.errors import InterruptedRunError, ProvisionError

    settings = _load_settings(region=region, aws_profile=aws_profile, model=model)
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

    def on_signal(name: str, during_teardown: bool) -> None:
        if during_teardown:
            stderr.print(f"{name}: still cleaning up; the builder is being terminated", style="bold yellow")
        else:
            stderr.print(f"{name}: stopping the build and terminating the builder...", style="bold yellow")

    def on_progress(event: ProgressEvent) -> None:
        if event.stage == "provision-output":
            return  # pip's chatter; the tail is shown if the provisioning fails
        style = "bold" if event.stage in ("provision", "phase") else "dim"
        stderr.print(event.message, style=style, markup=False, highlight=False, soft_wrap=True)

    try:
        ssh_cidr = resolve_ssh_cidr(settings.ssh_cidr, settings.source("ssh_cidr"))
        if dry_run:
            plan = plan_build(ctx, settings, request, ssh_cidr=ssh_cidr, on_progress=_show_progress)
            _print_build_plan(plan)
            return
        result = run_build(
            ctx, settings, request, ssh_cidr=ssh_cidr, on_progress=on_progress, on_signal=on_signal
        )
    except ProvisionError as exc:
        _print_output_tail(exc.output_tail)
        raise fail(exc) from None
    except InterruptedRunError as exc:
        raise fail(exc) from None
    except GpuTranscribeError as exc:
        raise fail(exc) from None
    image = result.image
    manifest = result.manifest
    warmup = manifest.get("warmup") or {}
    cost = f"${result.cost_usd:.4f}" if result.cost_usd is not None else "unknown (no price)"
    builder = result.instance
    price = (
        f"${builder.price_usd_per_hour:.4f}/h" if builder.price_usd_per_hour is not None else "price unknown"
    )
    lines = [
        f"image: {image.image_id} ({image.name}) in {settings.region}",
        f"size: {image.size_gib} GiB in {len(image.snapshot_ids)} snapshot(s): "
        + ", ".join(image.snapshot_ids),
        f"contents: gpu-transcribe {manifest.get('gpu_transcribe')}, {manifest.get('model')}"
        + (f"@{manifest.get('revision')}" if manifest.get("revision") else "")
        + f", torch {manifest.get('torch')}, CUDA {manifest.get('cuda') or '-'}"
        + f", driver {manifest.get('driver') or '-'}",
        f"warm-up: {warmup.get('device')} {warmup.get('dtype')}, load {warmup.get('load_s')} s, "
        f"transcribe {warmup.get('transcribe_s')} s: {warmup.get('text', '')!r}",
        f"builder: {builder.instance_id} {builder.market} {builder.instance_type} in {builder.zone} "
        f"at {price}",
        f"phases: {format_phases(result.phases)} (total {result.total_s:.1f} s)",
        f"cost: {cost} for {builder.billed_s:.0f} s of the builder (image storage is billed per GiB-month)",
    ]
    for line in lines:
        stdout.print(line, highlight=False, soft_wrap=True, markup=False)


def _print_build_plan(plan: BuildPlan) -> None:
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
    stdout.print("build-ami plan (dry run: nothing launched)", style="bold")
    for key, value in rows:
        stdout.print(f"{key}: {value}", highlight=False, soft_wrap=True, markup=False)


images_app = typer.Typer(
    help="List gpu-transcribe's images (AMIs); `images prune` removes old ones.", invoke_without_command=True
)
app.add_typer(images_app, name="images")


@images_app.callback()
def images_list(
    typer_ctx: typer.Context, region: RegionOption = None, aws_profile: ProfileOption = None
) -> None:
    """List our images: id, created, version, model, revision, size, and whether a live instance uses it."""
    if typer_ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.images import images_in_use, list_images

    settings = _load_settings(region=region, aws_profile=aws_profile)
    ctx = AwsContext.from_settings(settings)
    try:
        images = list_images(ctx)
        in_use = images_in_use(ctx)
    except GpuTranscribeError as exc:
        raise fail(exc) from None
    if not images:
        stdout.print(
            f"no gpu-transcribe images in {settings.region}; build one with `gpu-transcribe build-ami`",
            highlight=False,
        )
        return
    table = Table(title=f"gpu-transcribe images in {settings.region}, newest first", title_justify="left")
    for header in ("id", "created", "version", "model", "revision", "size", "state", "in use"):
        table.add_column(header, no_wrap=header in ("id", "created", "size", "state"), overflow="fold")
    for image in images:
        users = in_use.get(image.image_id, ())
        table.add_row(
            image.image_id,
            image.created_at.strftime("%Y-%m-%d %H:%M") if image.created_at else "?",
            image.version,
            image.model,
            image.revision or "-",
            f"{image.size_gib} GiB",
            image.state,
            f"yes: {', '.join(users)}" if users else "no",
        )
    stdout.print(table)


@images_app.command("prune")
def images_prune(
    keep: Annotated[
        int, typer.Option("--keep", min=0, help="Images to keep per model (the newest available ones).")
    ] = 2,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be removed; change nothing.")
    ] = False,
    region: RegionOption = None,
    aws_profile: ProfileOption = None,
) -> None:
    """Deregister images older than the newest N of each model and delete their snapshots. Images in use by a
    live instance, and images still being created, are kept."""
    from rich.table import Table

    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.images import delete_image, images_in_use, list_images, plan_prune
    from gpu_transcribe.errors import CloudError

    settings = _load_settings(region=region, aws_profile=aws_profile)
    ctx = AwsContext.from_settings(settings)
    problems: list[str] = []
    try:
        decisions = plan_prune(list_images(ctx), keep, images_in_use(ctx))
        done: dict[str, str] = {}
        for decision in decisions:
            if decision.action != "remove" or dry_run:
                continue
            image = decision.image
            removal = delete_image(ctx, image.image_id, snapshot_ids=image.snapshot_ids)
            done[image.image_id] = (
                f"deregistered, {len(removal.deleted_snapshots)} snapshot(s) deleted"
                if removal.deregistered
                else "already gone"
            )
            problems.extend(f"{what}: {why}" for what, why in removal.failed)
    except GpuTranscribeError as exc:
        raise fail(exc) from None
    if not decisions:
        stdout.print(f"no gpu-transcribe images in {settings.region}", highlight=False)
        return
    title = f"images prune --keep {keep} in {settings.region}" + (
        " (dry run: nothing changed)" if dry_run else ""
    )
    table = Table(title=title, title_justify="left")
    for header in ("id", "created", "version", "model", "action", "reason", "done"):
        table.add_column(header, overflow="fold", no_wrap=header in ("id", "created", "action"))
    for decision in decisions:
        image = decision.image
        action = decision.action if not (dry_run and decision.action == "remove") else "would remove"
        table.add_row(
            image.image_id,
            image.created_at.strftime("%Y-%m-%d %H:%M") if image.created_at else "?",
            image.version,
            image.model,
            action,
            decision.reason,
            done.get(image.image_id, "-"),
        )
    stdout.print(table)
    if problems:
        raise fail(CloudError(f"{len(problems)} snapshot(s) could not be deleted: " + "; ".join(problems)))
