"""The command line: parses options, calls one orchestration function per command, prints the result.

This module has ``run``, ``build-ami``, ``images``, ``zones``, ``config``, ``cleanup`` and the entry point;
:mod:`gpu_transcribe.cli.serve` and :mod:`gpu_transcribe.cli.pipeline` add the others, and
:mod:`gpu_transcribe.cli.app` holds the application, the consoles and the one error mapping. Results go to
stdout, progress and errors to stderr; how they look is :mod:`gpu_transcribe.cli.render` and
:mod:`gpu_transcribe.cli.progress`. Heavy modules (boto3, paramiko, torch) are imported inside the commands,
so
``gpu-transcribe --help`` stays fast.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from gpu_transcribe.cli import options as opt
from gpu_transcribe.cli.app import (
    EXIT_LEFT_BEHIND,
    EXIT_UPLOAD_FAILED,
    app,
    cli_settings,
    config_app,
    images_app,
    silence_stdout,
    stderr,
    stdout,
)
from gpu_transcribe_engine.options import TranscribeOptions

if TYPE_CHECKING:
    from gpu_transcribe.run import CloudRunRequest
    from gpu_transcribe.run.local import LocalRunRequest
    from gpu_transcribe.settings import Settings


def main() -> None:
    """Console-script entry point. A reader that closes stdout early (``gpu-transcribe config show --json |
    head -1``) ends the command quietly with exit status 0: what was buffered for it is dropped."""
    try:
        app()
    except SystemExit:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            silence_stdout()
            raise SystemExit(0) from None
        raise


# --- run -------------------------------------------------------------------------------------------------


@app.command()
def run(
    paths: opt.Paths,
    local: opt.Local = False,
    output_dir: opt.OutputDir = None,
    formats: opt.Format = opt.DEFAULT_FORMATS_ARG,
    language: opt.Language = None,
    model: opt.Model = None,
    revision: opt.Revision = None,
    batch_size: opt.BatchSize = None,
    algorithm: opt.Algorithm = "auto",
    beam_size: opt.BeamSize = TranscribeOptions.beam_size,
    task: opt.Task = "transcribe",
    word_timestamps: opt.WordTimestamps = False,
    prompt: opt.Prompt = None,
    max_line_width: opt.MaxLineWidth = None,
    max_line_count: opt.MaxLineCount = None,
    max_cue_duration: opt.MaxCueDuration = None,
    device: opt.Device = None,
    overwrite: opt.Overwrite = False,
    skip_existing: opt.SkipExisting = False,
    no_s3: opt.NoS3 = False,
    correct: opt.Correct = False,
    upload_audio: opt.UploadAudio = False,
    dry_run: opt.DryRun = False,
    update_engine: opt.UpdateEngine = False,
    host: opt.Host = None,
    identity: opt.Identity = None,
    known_hosts: opt.KnownHosts = None,
    instance_type: opt.InstanceType = None,
    market: opt.Market = None,
    s3_bucket: opt.Bucket = None,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Transcribe audio files on a GPU instance, --local or --host.

    Transcript paths go to stdout, one a line; progress and the summary to stderr."""
    settings = cli_settings(
        warn_ssh_cidr=not local,
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
        word_timestamps=word_timestamps,
        prompt=prompt,
        max_line_width=max_line_width,
        max_line_count=max_line_count,
        max_cue_s=max_cue_duration,
    )
    _check_run_flags(
        local=local,
        host=host,
        dry_run=dry_run,
        device=device,
        identity=identity,
        known_hosts=known_hosts,
        no_s3=no_s3,
        upload_audio=upload_audio,
    )
    from gpu_transcribe.run.inputs import validate_options

    validate_options(options, formats)  # every choice checked before any work, and before a spinner
    from gpu_transcribe.run.outputs import existing_policy

    existing = existing_policy(overwrite, skip_existing)
    inputs = tuple(str(p) for p in paths)
    format_list = tuple(formats.split(","))
    correction = None
    if correct:  # the correction reads the raw JSON (segment times), so --correct always writes it
        from gpu_transcribe.correct.config import CorrectionConfig

        format_list += () if "json" in format_list else ("json",)
        correction = CorrectionConfig.from_settings(settings)
    if local:
        from gpu_transcribe.run.local import LocalRunRequest, check_model

        check_model(settings.model, settings.source("model"))
        _run_local(
            LocalRunRequest(
                paths=inputs,
                output_dir=output_dir,
                formats=format_list,
                options=options,
                model=settings.model,
                revision=revision,
                device=device or "auto",
                existing=existing,
                correct=correction,
            )
        )
        return
    from gpu_transcribe.run import CloudRunRequest, parse_host

    request = CloudRunRequest(
        paths=inputs,
        output_dir=output_dir,
        formats=format_list,
        options=options,
        model=settings.model,
        revision=revision,
        upload=not no_s3,
        upload_audio=upload_audio,
        update_engine=update_engine,
        host=parse_host(host, identity, known_hosts) if host else None,
        existing=existing,
        correct=correction,
    )
    _run_remote(request, settings, dry_run=dry_run)


def _check_run_flags(
    *,
    local: bool,
    host: str | None,
    dry_run: bool,
    device: str | None,
    identity: object,
    known_hosts: object,
    no_s3: bool,
    upload_audio: bool,
) -> None:
    """Refuse flags that contradict each other or do not apply to this kind of run, and a bad ``--device``.

    Raises:
        SettingsError: naming the flags and what to do (exit status 2).
    """
    from gpu_transcribe.errors import SettingsError
    from gpu_transcribe_engine.options import DEVICES

    where = [name for name, given in (("--local", local), ("--host", host), ("--dry-run", dry_run)) if given]
    if len(where) > 1:
        raise SettingsError(
            where[0],
            "command line",
            f"{' and '.join(where)} cannot be combined: --local runs here, --host on your machine, "
            "--dry-run plans a cloud launch; choose one",
            "one of --local, --host, --dry-run",
        )
    if device is not None and device not in DEVICES:
        raise SettingsError(
            "device",
            "--device",
            f"--device: {device!r} is not one of {', '.join(DEVICES)}",
            ", ".join(DEVICES),
        )
    misplaced = [
        (
            device is not None and not local,
            "--device",
            "--device applies only with --local (an instance or --host uses its GPU); drop it or add --local",
        ),
        (identity is not None and not host, "--identity", "--identity applies only with --host; drop it"),
        (
            known_hosts is not None and not host,
            "--known-hosts",
            "--known-hosts applies only with --host; drop it",
        ),
        (
            upload_audio and no_s3,
            "--upload-audio",
            "--upload-audio stores the audio in S3, which --no-s3 turns off; drop one of them",
        ),
    ]
    for given, name, message in misplaced:
        if given:
            raise SettingsError(name.lstrip("-"), name, message)


def _run_local(request: LocalRunRequest) -> None:
    from gpu_transcribe.cli.progress import EngineProgress
    from gpu_transcribe.cli.render import (
        print_corrections,
        print_engine_summary,
        print_output_paths,
        print_problems,
    )
    from gpu_transcribe.errors import LocalRunInterruptedError
    from gpu_transcribe.run.local import run_local

    try:
        with EngineProgress(stderr) as progress:
            result = run_local(request, on_event=progress.on_event)
    except LocalRunInterruptedError as stopped:
        # What a normal run would have printed of the finished files; the error line follows.
        print_problems(stopped.problems, stderr)
        print_output_paths(stopped.outputs, stdout)
        raise
    print_problems(result.input_problems, stderr)
    if result.engine is not None:
        print_engine_summary(result.engine, stderr)
        print_corrections(result.corrections, stderr)
        print_output_paths((p for f in result.engine.files for p in f.outputs.values()), stdout)
        print_output_paths((p for c in result.corrections for p in c.outputs.values()), stdout)
    if not result.ok:
        raise typer.Exit(1)


def _run_remote(request: CloudRunRequest, settings: Settings, *, dry_run: bool) -> None:
    from gpu_transcribe.cli.progress import EngineProgress
    from gpu_transcribe.cli.render import (
        print_cloud_summary,
        print_corrections,
        print_dry_run,
        print_output_paths,
    )
    from gpu_transcribe.run import RunCallbacks, plan_run, run_cloud, run_on_host
    from gpu_transcribe.run.outputs import problems_fail_run

    with EngineProgress(stderr) as progress:
        callbacks = RunCallbacks(
            on_progress=lambda event: progress.note(event.message),
            on_engine_event=progress.on_event,
            on_push_start=progress.push_start,
            on_push_progress=progress.push_advance,
            on_signal=progress.on_signal,
        )
        if dry_run:
            plan = plan_run(request, settings, callbacks)
            progress.stop()
            print_dry_run(plan, stdout, stderr)
            codes = [error.exit_code for error in plan.missing]
            if problems_fail_run(plan.input_problems):
                codes.append(1)
            if codes:
                raise typer.Exit(max(codes))
            return
        result = (run_on_host if request.host else run_cloud)(request, settings, callbacks)
    print_cloud_summary(result, stderr)
    print_corrections([f.correction for f in result.files if f.correction is not None], stderr)
    print_output_paths((p for f in result.files for p in f.outputs.values()), stdout)
    if result.teardown_error is not None:
        raise typer.Exit(EXIT_LEFT_BEHIND)
    if problems_fail_run(result.input_problems) or result.failed_files:
        raise typer.Exit(1)
    if result.upload_error is not None:
        raise typer.Exit(EXIT_UPLOAD_FAILED)


# --- settings, zones, cleanup ----------------------------------------------------------------------------


@config_app.command("show")
def config_show(
    region: opt.Region = None, aws_profile: opt.Profile = None, as_json: opt.SettingsJson = False
) -> None:
    """Print the effective settings and where each one came from.

    Its source: a flag, the environment, a file, or the default."""
    from gpu_transcribe.cli.render import print_settings, settings_json
    from gpu_transcribe.settings import default_config_files

    settings = cli_settings(warn_ssh_cidr=True, region=region, aws_profile=aws_profile)
    if as_json:
        import json

        print(json.dumps(settings_json(settings), indent=2))
        return
    print_settings(settings, default_config_files(), stdout)


@app.command("zones")
def zones(
    instance_type: opt.InstanceType = None,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
    json: opt.Json = False,
) -> None:
    """List each instance type's zones, cheapest spot price first.

    With the on-demand price and the saving."""
    from gpu_transcribe.account.catalog import zone_prices
    from gpu_transcribe.cli.render import print_json, print_zones

    settings = cli_settings(
        region=region, aws_profile=aws_profile, instance_types=",".join(instance_type or []) or None
    )
    with stderr.status(escape(f"reading spot prices in {settings.region}")):
        report = zone_prices(settings)
    (print_json if json else print_zones)(report, stdout)
    if report.error is not None:
        raise report.error


@app.command("cleanup")
def cleanup_command(
    all_owners: opt.AllOwners = False,
    older_than: opt.OlderThan = None,
    run_id: opt.RunId = None,
    dry_run: opt.DryRun = False,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
    json: opt.Json = False,
) -> None:
    """Remove what gpu-transcribe left in AWS, found by its tags.

    Instances, volumes, key pairs and security groups."""
    from gpu_transcribe.account.cleanup import cleanup
    from gpu_transcribe.cli.progress import event_printer
    from gpu_transcribe.cli.render import print_cleanup, print_json
    from gpu_transcribe.settings import parse_duration_s

    settings = cli_settings(region=region, aws_profile=aws_profile)
    report = cleanup(
        settings,
        all_owners=all_owners,
        older_than_s=parse_duration_s(older_than) if older_than is not None else None,
        run_id=run_id,
        dry_run=dry_run,
        on_progress=event_printer(stderr),
    )
    (print_json if json else print_cleanup)(report, stdout)
    if report.error is not None:
        raise report.error


# --- images: build-ami, images, images prune -------------------------------------------------------------


@app.command("build-ami")
def build_ami(
    model: opt.ImageModel = None,
    revision: opt.Revision = None,
    base_ami: opt.BaseAmi = None,
    spot: opt.Spot = False,
    instance_type: opt.InstanceType = None,
    wheel: opt.Wheel = None,
    login_user: opt.LoginUser = "ubuntu",
    dry_run: opt.DryRun = False,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
    provision_arg: opt.ProvisionArg = None,
) -> None:
    """Build the GPU image (AMI) that runs boot from.

    The engine installed, the model cached, both checked on the GPU."""
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.ec2.checkip import resolve_ssh_cidr
    from gpu_transcribe.build_ami import BuildRequest, plan_build, run_build
    from gpu_transcribe.cli.progress import build_event_printer, build_signal_printer, event_printer
    from gpu_transcribe.cli.render import build_result_lines, print_build_plan, print_lines

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


@images_app.callback()
def images_list(
    typer_ctx: typer.Context,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
    json: opt.Json = False,
) -> None:
    """List our images: id, created, version, model, revision, size, and whether a live instance uses it."""
    if typer_ctx.invoked_subcommand is not None:
        return
    from gpu_transcribe.account.catalog import list_images
    from gpu_transcribe.cli.render import print_images, print_json

    listing = list_images(cli_settings(region=region, aws_profile=aws_profile))
    (print_json if json else print_images)(listing, stdout)


@images_app.command("prune")
def images_prune(
    keep: opt.Keep = 2,
    dry_run: opt.DryRun = False,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Remove images beyond the newest N of each model.

    Deregisters them and deletes their snapshots. Images in use by a live instance, and images still being
    created, are kept."""
    from gpu_transcribe.account.catalog import prune_images
    from gpu_transcribe.cli.render import print_prune

    report = prune_images(cli_settings(region=region, aws_profile=aws_profile), keep=keep, dry_run=dry_run)
    print_prune(report, stdout)
    if report.error is not None:
        raise report.error


# The other commands register themselves on the application when imported (after this module's own, so that
# --help lists run first).
from gpu_transcribe.cli import pipeline as cli_pipeline  # noqa: E402
from gpu_transcribe.cli import serve as cli_serve  # noqa: E402

__all__ = ["app", "cli_pipeline", "cli_serve", "main"]
