"""The command line: parses options, calls one orchestration function per command, prints the result.

Results go to stdout, progress and errors to stderr; how they look is :mod:`gpu_transcribe.render` and
:mod:`gpu_transcribe.progress`. A :class:`~gpu_transcribe.errors.GpuTranscribeError` raised by any command
becomes ``error: <message>`` on stderr and the error's exit code in one place, :class:`_ErrorsToExitCodes`.
Heavy modules (boto3, paramiko, torch) are imported inside the commands, so ``gpu-transcribe --help`` stays
fast.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup
from typer.exceptions import TyperException

from gpu_transcribe import __version__
from gpu_transcribe import cli_options as opt
from gpu_transcribe.errors import GpuTranscribeError
from remote.options import DEFAULT_MODEL, TranscribeOptions

if TYPE_CHECKING:
    from gpu_transcribe.local import LocalRunRequest
    from gpu_transcribe.run import CloudRunRequest
    from gpu_transcribe.settings import Settings

# No emoji codes, no highlighting: paths, names and messages are printed as they are (markup is off or escaped
# wherever they are printed, see render.py).
stdout = Console(emoji=False, highlight=False)
stderr = Console(stderr=True, emoji=False, highlight=False)

#: ``run`` exit statuses beyond the errors' own (README, "Exit status").
EXIT_UPLOAD_FAILED = 4
EXIT_LEFT_BEHIND = 5

#: Where the root command keeps ``--debug`` in the click context's ``meta`` (shared by every subcommand).
_DEBUG_KEY = "gpu_transcribe.debug"


class _ErrorsToExitCodes(TyperGroup):
    """The root command group. Every command runs inside its :meth:`invoke`, which turns a
    :class:`GpuTranscribeError` into one ``error:`` line on stderr and ``typer.Exit(error.exit_code)``, and
    any other exception (a bug) into one ``error: unexpected ...`` line and exit status 1, or its traceback
    with ``--debug``."""

    def invoke(self, ctx: Any) -> Any:  # typer.Context's base: the click Context vendored in typer
        try:
            return super().invoke(ctx)
        except GpuTranscribeError as error:
            from gpu_transcribe.render import print_error

            print_error(error, stderr)
            raise typer.Exit(error.exit_code) from None
        except (typer.Exit, typer.Abort, TyperException):  # usage errors, exits: typer's own handling
            raise
        except Exception as error:
            if ctx.meta.get(_DEBUG_KEY):
                raise
            from gpu_transcribe.render import print_unexpected_error

            print_unexpected_error(error, stderr)
            raise typer.Exit(1) from None


app = typer.Typer(
    name="gpu-transcribe",
    cls=_ErrorsToExitCodes,
    help="Transcribe audio on a short-lived AWS GPU spot instance, or on this machine with --local.",
    no_args_is_help=True,
    # --install-completion / --show-completion: typer imports its shell code only when they are used.
    add_completion=True,
    pretty_exceptions_enable=False,
    # Plain help text: typer's Rich help imports markdown-it and costs ~0.1 s on every --help (measured).
    rich_markup_mode=None,
)
config_app = typer.Typer(help="Inspect the settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")
images_app = typer.Typer(
    help="List gpu-transcribe's images (AMIs); `images prune` removes old ones.", invoke_without_command=True
)
app.add_typer(images_app, name="images")
server_app = typer.Typer(
    help="A warm GPU server of your own: `server up` starts `serve` on an instance that stays until it has "
    "been idle (or lived) long enough, or `server down`.",
    no_args_is_help=True,
)
app.add_typer(server_app, name="server")
pipeline_app = typer.Typer(
    help="A queue of transcription jobs on spot GPU workers that scale from zero: one CloudFormation stack "
    "(deploy, status, destroy).",
    no_args_is_help=True,
)
app.add_typer(pipeline_app, name="pipeline")
webhook_app = typer.Typer(help="Help for receivers of the pipeline's webhooks.", no_args_is_help=True)
app.add_typer(webhook_app, name="webhook")


def main() -> None:
    """Console-script entry point."""
    app()


def _version_callback(value: bool) -> None:
    if value:
        stdout.print(f"gpu-transcribe {__version__}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    typer_ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version.")
    ] = False,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", help="Show the traceback of an unexpected error (a bug) instead of one line."
        ),
    ] = False,
) -> None:
    """Transcribe audio on a short-lived AWS GPU spot instance, or on this machine with --local."""
    typer_ctx.meta[_DEBUG_KEY] = debug


def _settings(*, warn_ssh_cidr: bool = False, **flags: object) -> Settings:
    """The effective settings for the flags given (``None`` for a flag not given), after a warning on stderr
    for each ``GPU_TRANSCRIBE_*`` variable that is not a setting, and with ``warn_ssh_cidr`` (commands that
    launch, and ``config show``) for an ``ssh_cidr`` wider than one address.

    Raises:
        SettingsError: a value is bad; the message names the setting and its source.
    """
    from gpu_transcribe.render import print_warning
    from gpu_transcribe.settings import load_settings, ssh_cidr_warning, unknown_env_vars

    for warning in unknown_env_vars():
        print_warning(warning, stderr)
    settings = load_settings(flags)
    wide = ssh_cidr_warning(settings) if warn_ssh_cidr else None
    if wide is not None:
        print_warning(wide, stderr)
    return settings


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
    """Transcribe audio files on a new GPU instance (or --local, or --host). Transcript paths go to stdout;
    progress and the summary to stderr."""
    settings = _settings(
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
    from gpu_transcribe.inputs import validate_options

    validate_options(options, formats)  # every choice checked before any work, and before a spinner
    from gpu_transcribe.outputs import existing_policy

    existing = existing_policy(overwrite, skip_existing)
    inputs = tuple(str(p) for p in paths)
    format_list = tuple(formats.split(","))
    correction = None
    if correct:  # the correction reads the raw JSON (segment times), so --correct always writes it
        from gpu_transcribe.correct import CorrectionConfig

        format_list += () if "json" in format_list else ("json",)
        correction = CorrectionConfig.from_settings(settings)
    if local:
        from gpu_transcribe.local import LocalRunRequest, check_model

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
    from remote.options import DEVICES

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
    from gpu_transcribe.errors import LocalRunInterruptedError
    from gpu_transcribe.local import run_local
    from gpu_transcribe.progress import EngineProgress
    from gpu_transcribe.render import (
        print_corrections,
        print_engine_summary,
        print_output_paths,
        print_problems,
    )

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
    from gpu_transcribe.outputs import problems_fail_run
    from gpu_transcribe.progress import EngineProgress
    from gpu_transcribe.render import (
        print_cloud_summary,
        print_corrections,
        print_dry_run,
        print_output_paths,
    )
    from gpu_transcribe.run import RunCallbacks, plan_run, run_cloud, run_on_host

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
            print_dry_run(plan, stdout)
            return
        result = (run_on_host if request.host else run_cloud)(request, settings, callbacks)
    print_cloud_summary(result, stderr)
    print_corrections([f.correction for f in result.files if f.correction is not None], stderr)
    print_output_paths((p for f in result.files for p in f.outputs.values()), stdout)
    if result.teardown_error is not None:
        raise typer.Exit(EXIT_LEFT_BEHIND)
    if problems_fail_run(result.input_problems, len(result.files)) or result.failed_files:
        raise typer.Exit(1)
    if result.upload_error is not None:
        raise typer.Exit(EXIT_UPLOAD_FAILED)


# --- serve -----------------------------------------------------------------------------------------------


@app.command("serve")
def serve(
    bind: opt.Bind = "127.0.0.1",
    port: opt.Port = 8000,
    model: opt.ServeModel = DEFAULT_MODEL,
    revision: opt.Revision = None,
    device: opt.ServeDevice = "auto",
    api_key_file: opt.ApiKeyFile = None,
    max_upload_mb: opt.MaxUploadMb = 200,
    max_queue: opt.MaxQueue = 64,
    idle_stop_min: opt.IdleStopMin = None,
    max_lifetime_h: opt.MaxLifetimeH = None,
    jobs_dir: opt.JobsDir = None,
    job_ttl_h: opt.JobTtlH = 24.0,
    webhook_secret_file: opt.WebhookSecretFile = None,
) -> None:
    """Serve OpenAI's audio API (/v1/audio/transcriptions) and /transcribe with one loaded model, on this
    machine, until Ctrl-C. Logs go to stderr."""
    from gpu_transcribe.errors import EngineError, SettingsError
    from remote.errors import ModelLoadError
    from remote.server.config import MIB, ServerConfig, ServerConfigError, read_api_key

    try:
        config = (
            ServerConfig(
                bind=bind,
                port=port,
                model=model,
                revision=revision,
                device=device,
                api_key=read_api_key(api_key_file) if api_key_file is not None else None,
                max_upload_bytes=int(max_upload_mb * MIB),
                max_queue=max_queue,
                idle_stop_s=idle_stop_min * 60 if idle_stop_min is not None else None,
                max_lifetime_s=max_lifetime_h * 3600 if max_lifetime_h is not None else None,
                jobs_dir=jobs_dir,
                job_ttl_s=job_ttl_h * 3600,
                webhook_secret_file=webhook_secret_file,
            )
            .with_env()
            .checked()
        )
    except ServerConfigError as error:
        raise SettingsError("serve", "command line", str(error)) from None
    from remote.server.run import serve as run_server

    try:
        run_server(config)
    except ModelLoadError as error:
        raise EngineError(error.code, str(error)) from None


# --- settings, zones, cleanup ----------------------------------------------------------------------------


@config_app.command("show")
def config_show(
    region: opt.Region = None, aws_profile: opt.Profile = None, as_json: opt.SettingsJson = False
) -> None:
    """Print the effective settings and where each value came from (flag, environment, file, default)."""
    from gpu_transcribe.render import print_settings, settings_json
    from gpu_transcribe.settings import default_config_files

    settings = _settings(warn_ssh_cidr=True, region=region, aws_profile=aws_profile)
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
    """List the zones for each instance type, cheapest spot price first, with on-demand price and saving."""
    from gpu_transcribe.catalog import zone_prices
    from gpu_transcribe.render import print_json, print_zones

    settings = _settings(
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
    """Find gpu-transcribe's instances, volumes, key pairs and security groups by tag and remove them."""
    from gpu_transcribe.cleanup import cleanup
    from gpu_transcribe.progress import event_printer
    from gpu_transcribe.render import print_cleanup, print_json
    from gpu_transcribe.settings import parse_duration_s

    settings = _settings(region=region, aws_profile=aws_profile)
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
    model: opt.Model = None,
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
    """Build the GPU image runs boot from: engine installed, model cached, both checked on the GPU."""
    from gpu_transcribe.aws.checkip import resolve_ssh_cidr
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.build_ami import BuildRequest, plan_build, run_build
    from gpu_transcribe.progress import build_event_printer, build_signal_printer, event_printer
    from gpu_transcribe.render import build_result_lines, print_build_plan, print_lines

    settings = _settings(warn_ssh_cidr=True, region=region, aws_profile=aws_profile, model=model)
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
    from gpu_transcribe.catalog import list_images
    from gpu_transcribe.render import print_images, print_json

    listing = list_images(_settings(region=region, aws_profile=aws_profile))
    (print_json if json else print_images)(listing, stdout)


@images_app.command("prune")
def images_prune(
    keep: opt.Keep = 2,
    dry_run: opt.DryRun = False,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Deregister images older than the newest N of each model and delete their snapshots. Images in use by a
    live instance, and images still being created, are kept."""
    from gpu_transcribe.catalog import prune_images
    from gpu_transcribe.render import print_prune

    report = prune_images(_settings(region=region, aws_profile=aws_profile), keep=keep, dry_run=dry_run)
    print_prune(report, stdout)
    if report.error is not None:
        raise report.error


# --- the pipeline's jobs: submit, jobs, worker --------------------------------------------------------------


def _pipeline(name: str | None, region: str | None, aws_profile: str | None) -> tuple[Any, Any, Settings]:
    """``(AwsContext, PipelineConfig, Settings)`` for ``--pipeline NAME`` (the pipeline's own region wins).

    Raises:
        PipelineNotFoundError: no description file and no stack of the pipeline.
        PipelineConfigError: a description file or stack that cannot be used.
        CloudError, CredentialsError: reading the stack failed.
    """
    from dataclasses import replace

    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.pipeline.jobs import find_pipeline

    settings = _settings(region=region, aws_profile=aws_profile)
    ctx = AwsContext.from_settings(settings)
    config = find_pipeline(ctx, name, default_language=settings.language)
    if config.region and config.region != ctx.region:
        ctx = replace(ctx, region=config.region)
    return ctx, config, settings


@app.command()
def submit(
    paths: opt.AudioFiles,
    language: opt.Language = None,
    formats: opt.JobFormat = None,
    model: opt.JobModel = None,
    webhook_url: opt.JobWebhookUrl = None,
    correct: opt.JobCorrect = False,
    pipeline: opt.PipelineOption = None,
    wait: opt.Wait = False,
    output_dir: opt.OutputDir = None,
    overwrite: opt.Overwrite = False,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Submit audio files to the pipeline: one job each. Job ids go to stdout, one per line; with --wait,
    progress on stderr and the outputs downloaded (-o DIR, default: here)."""
    from gpu_transcribe.aws.jobs_table import JobOptions
    from gpu_transcribe.pipeline.jobs import PipelineInputError
    from gpu_transcribe.pipeline.submit import check_files, submit_files, wake_fleet
    from gpu_transcribe.render import print_lines
    from remote.options import parse_formats

    if output_dir is not None and not wait:
        raise PipelineInputError("-o/--output-dir applies only with --wait; drop it or add --wait")
    try:
        format_names = parse_formats(formats) if formats else ()
        if language is not None:
            language = TranscribeOptions(language=language).validated().language
    except ValueError as exc:
        raise PipelineInputError(str(exc)) from None
    check_files(paths)
    ctx, config, _ = _pipeline(pipeline, region, aws_profile)
    if correct and format_names and "json" not in format_names:  # the correction reads the raw JSON
        format_names = (*format_names, "json")
    options = JobOptions(language=language, formats=format_names, model=model, correct=correct)
    jobs = submit_files(
        ctx,
        config,
        paths,
        options,
        on_submitted=lambda job: print_lines([job.job_id], stdout),
        webhook_url=webhook_url or "",
    )
    try:
        scaled = wake_fleet(ctx, config)
    except GpuTranscribeError as exc:  # the jobs are queued; the scheduled scaler runs within a minute
        print_lines([f"note: could not wake the workers now ({exc}); the scaler's schedule will"], stderr)
    else:
        if scaled is not None and scaled["raised"]:
            print_lines([f"workers: desired {scaled['desired_before']} -> {scaled['desired']}"], stderr)
    if wait:
        _wait_and_fetch(ctx, config, [job.job_id for job in jobs], output_dir, overwrite)


def _wait_and_fetch(ctx: Any, config: Any, job_ids: list[str], output_dir: Any, overwrite: bool) -> None:
    from pathlib import Path

    from gpu_transcribe.pipeline.jobs import fetch_outputs, wait_for_jobs
    from gpu_transcribe.render import print_lines
    from gpu_transcribe.render_jobs import job_status_lines

    records = wait_for_jobs(
        ctx, config, job_ids, on_change=lambda rs: print_lines(job_status_lines(rs), stderr)
    )
    result = fetch_outputs(ctx, config, job_ids, output_dir or Path("."), overwrite=overwrite)
    print_lines((f"wrote {path}" for path in result.written), stderr)
    failed = [r for r in records if r.status != "succeeded"]
    if failed:
        from gpu_transcribe.errors import GpuTranscribeError as _Error

        raise _Error(
            f"{len(failed)} of {len(records)} job(s) did not succeed: " + ", ".join(r.job_id for r in failed)
        )


class _JobsGroup(TyperGroup):
    """``jobs ID...`` and ``jobs --status S`` mean ``jobs list ...``: anything that is not a subcommand."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


jobs_app = typer.Typer(
    cls=_JobsGroup,
    help="The pipeline's jobs: `jobs [JOB_ID...]` lists them, `jobs fetch` downloads outputs, `jobs retry` "
    "resubmits failed ones, `jobs watch` follows job events.",
)
app.add_typer(jobs_app, name="jobs")


@jobs_app.command("list")
def jobs_list(
    job_ids: opt.JobIds = None,
    status: opt.JobStatus = None,
    since: opt.Since = None,
    json: opt.Json = False,
    pipeline: opt.PipelineOption = None,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """List jobs (all, or those named): status, file, duration, attempts, worker, times, error."""
    from gpu_transcribe.pipeline.jobs import list_jobs
    from gpu_transcribe.render import print_lines
    from gpu_transcribe.render_jobs import jobs_json, print_jobs

    ctx, config, _ = _pipeline(pipeline, region, aws_profile)
    records = list_jobs(ctx, config, job_ids or (), status=status, since=since)
    if json:
        print_lines([jobs_json(records)], stdout)
    else:
        print_jobs(records, stdout)


@jobs_app.command("fetch")
def jobs_fetch(
    job_ids: opt.JobIdsRequired,
    output_dir: opt.FetchDir,
    overwrite: opt.Overwrite = False,
    pipeline: opt.PipelineOption = None,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Download the outputs of succeeded jobs into DIR (paths on stdout); jobs not done are named on stderr
    and the exit status is 1."""
    from gpu_transcribe.errors import GpuTranscribeError as _Error
    from gpu_transcribe.pipeline.jobs import fetch_outputs
    from gpu_transcribe.render import print_output_paths

    ctx, config, _ = _pipeline(pipeline, region, aws_profile)
    result = fetch_outputs(ctx, config, job_ids, output_dir, overwrite=overwrite)
    print_output_paths(result.written, stdout)
    if result.not_ready:
        named = ", ".join(f"{job_id} ({status})" for job_id, status in result.not_ready)
        raise _Error(f"no outputs for {named}: only succeeded jobs have them")


@jobs_app.command("retry")
def jobs_retry(
    job_ids: opt.JobIdsRequired,
    pipeline: opt.PipelineOption = None,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Resubmit failed or dead-lettered jobs (engine failures reset); their ids go to stdout."""
    from gpu_transcribe.errors import GpuTranscribeError as _Error
    from gpu_transcribe.pipeline.jobs import retry_jobs
    from gpu_transcribe.render import print_lines

    ctx, config, _ = _pipeline(pipeline, region, aws_profile)
    result = retry_jobs(ctx, config, job_ids)
    print_lines(result.requeued, stdout)
    if result.refused:
        named = ", ".join(f"{job_id} ({status})" for job_id, status in result.refused)
        raise _Error(f"not resubmitted: {named}; only failed or dead-lettered jobs are")


@app.command()
def worker(
    model: opt.Model = None,
    device: opt.WorkerDevice = "auto",
    exit_when_idle: opt.ExitWhenIdle = None,
    max_lifetime_h: opt.WorkerMaxLifetimeH = None,
    pipeline: opt.PipelineOption = None,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Take jobs from the pipeline's queue and transcribe them here (what the fleet's instances run). Progress
    on stderr; exits 0 when idle for --exit-when-idle seconds, at --max-lifetime-h hours or after a spot
    interruption notice, 130/143 on SIGINT/SIGTERM after handing its jobs back."""
    import signal

    from gpu_transcribe.correct import CorrectionConfig
    from gpu_transcribe.pipeline.worker import Worker, WorkerOptions
    from gpu_transcribe.render_jobs import worker_event_printer

    ctx, config, settings = _pipeline(pipeline, region, aws_profile)
    chosen = model or config.default_model or settings.model
    loop = Worker(
        ctx,
        config,
        WorkerOptions(
            model=chosen,
            device=device,
            exit_when_idle_s=exit_when_idle,
            max_lifetime_s=None if max_lifetime_h is None else max_lifetime_h * 3600.0,
            correction=CorrectionConfig.from_settings(settings).for_pipeline(
                config.correct_model_id, config.correct_region
            ),
        ),
        on_event=worker_event_printer(stderr),
    )
    codes = {signal.SIGINT: 130, signal.SIGTERM: 143}
    for signum in codes:
        signal.signal(signum, lambda number, _frame: loop.request_stop(signal.Signals(number).name))
    report = loop.run()
    stderr.print(
        f"worker {report.worker_id}: {len(report.succeeded)} succeeded, {len(report.failed)} failed, "
        f"{len(report.released)} handed back; stopped: {report.reason}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    by_name = {s.name: code for s, code in codes.items()}
    if report.reason in by_name:
        raise typer.Exit(by_name[report.reason])


# --- server: up, status, tunnel, logs, down ----------------------------------------------------------------


@server_app.command("up")
def server_up_command(
    name: opt.ServerName = "default",
    market: opt.ServerMarket = None,
    instance_type: opt.InstanceType = None,
    idle_stop_min: opt.ServerIdleStopMin = 30,
    max_lifetime_h: opt.ServerMaxLifetimeH = 12.0,
    port: opt.ServerPort = 8000,
    model: opt.Model = None,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Launch an instance running `gpu-transcribe serve` and leave it running; prints how to reach it."""
    from gpu_transcribe.progress import event_printer
    from gpu_transcribe.render_server import print_server_lines, server_signal_printer, up_lines
    from gpu_transcribe.server import ServerUpRequest, server_up

    settings = _settings(
        warn_ssh_cidr=True,
        region=region,
        aws_profile=aws_profile,
        instance_types=",".join(instance_type or []) or None,
        market=market,
        model=model,
    )
    request = ServerUpRequest(
        name=name, port=port, idle_stop_min=idle_stop_min, max_lifetime_h=max_lifetime_h
    )
    with _left_behind_exits_5():
        state = server_up(
            settings,
            request.validated(),
            on_progress=event_printer(stderr),
            on_signal=server_signal_printer(stderr),
        )
    print_server_lines(up_lines(state), stdout)


@contextlib.contextmanager
def _left_behind_exits_5() -> Iterator[None]:
    """A :class:`TeardownError` (something could not be removed from AWS) exits with ``run``'s status 5."""
    from gpu_transcribe.errors import TeardownError

    try:
        yield
    except TeardownError as error:
        from gpu_transcribe.render import print_error

        print_error(error, stderr)
        raise typer.Exit(EXIT_LEFT_BEHIND) from None


@server_app.command("status")
def server_status_command(
    name: opt.ServerName = "default", aws_profile: opt.Profile = None, json: opt.Json = False
) -> None:
    """The server's instance state, age, price and cost so far, requests served and idle time."""
    from gpu_transcribe.progress import event_printer
    from gpu_transcribe.render import print_json
    from gpu_transcribe.render_server import print_server_lines, status_lines
    from gpu_transcribe.server import server_status

    status = server_status(_settings(aws_profile=aws_profile), name, on_progress=event_printer(stderr))
    if json:
        print_json(status, stdout)
    else:
        print_server_lines(status_lines(status), stdout)


@server_app.command("tunnel")
def server_tunnel_command(
    name: opt.ServerName = "default", local_port: opt.LocalPort = 8000, aws_profile: opt.Profile = None
) -> None:
    """Forward 127.0.0.1:PORT here to the server over SSH (pinned host key) until Ctrl-C."""
    from gpu_transcribe.common import ProgressEvent
    from gpu_transcribe.progress import event_printer
    from gpu_transcribe.render_server import print_server_lines, tunnel_lines
    from gpu_transcribe.server import run_tunnel

    warn = event_printer(stderr)

    run_tunnel(
        _settings(aws_profile=aws_profile),
        name,
        local_port=local_port,
        on_ready=lambda info: print_server_lines(tunnel_lines(info), stdout),
        on_error=lambda message: warn(ProgressEvent("note", message)),
        on_progress=warn,
    )
    stderr.print("tunnel closed; the server keeps running", style="dim", markup=False, highlight=False)


@server_app.command("logs")
def server_logs_command(
    name: opt.ServerName = "default", lines: opt.LogLines = 100, aws_profile: opt.Profile = None
) -> None:
    """The server's last log lines (its systemd journal, or its log file)."""
    from gpu_transcribe.progress import event_printer
    from gpu_transcribe.server import server_logs

    text = server_logs(
        _settings(aws_profile=aws_profile), name, lines=lines, on_progress=event_printer(stderr)
    )
    stdout.print(text.rstrip("\n"), markup=False, highlight=False, soft_wrap=True)


@server_app.command("down")
def server_down_command(name: opt.ServerName = "default", aws_profile: opt.Profile = None) -> None:
    """Stop the server: terminate its instance, delete its key pair, security group and state file."""
    from gpu_transcribe.progress import event_printer
    from gpu_transcribe.render_server import down_lines, print_server_lines
    from gpu_transcribe.server import server_down

    with _left_behind_exits_5():
        report = server_down(_settings(aws_profile=aws_profile), name, on_progress=event_printer(stderr))
    print_server_lines(down_lines(report), stdout)


# --- pipeline: deploy, status, destroy -------------------------------------------------------------------


@pipeline_app.command("deploy")
def pipeline_deploy(
    name: opt.PipelineName = None,
    max_workers: opt.MaxWorkers = None,
    instance_types: opt.InstanceTypes = None,
    s3_bucket: opt.PipelineBucket = None,
    image: opt.Image = None,
    webhook_url: opt.WebhookUrl = None,
    allow_private_webhooks: opt.AllowPrivateWebhooks = False,
    correct: opt.PipelineCorrect = False,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Create or update the pipeline's stack (through a change set, its events shown as progress) and print
    what it holds."""
    from gpu_transcribe.pipeline.deploy import DeployRequest, deploy_pipeline
    from gpu_transcribe.progress import event_printer
    from gpu_transcribe.render import print_lines
    from gpu_transcribe.render_pipeline import deployment_lines

    settings = _settings(
        region=region,
        aws_profile=aws_profile,
        instance_types=instance_types,
        s3_bucket=s3_bucket,
        image_id=image,
    )
    request = DeployRequest(
        name=name,
        max_workers=max_workers,
        bucket=settings.s3_bucket if s3_bucket else None,  # the flag only: s3_bucket is run's upload bucket
        image_id=settings.image_id,
        webhook_url=webhook_url or "",
        allow_private_webhooks=allow_private_webhooks,
        correct=correct,
    )
    result = deploy_pipeline(settings, request, on_progress=event_printer(stderr))
    print_lines(deployment_lines(result), stdout)


@pipeline_app.command("status")
def pipeline_status_command(
    name: opt.PipelineName = None,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
    json: opt.Json = False,
) -> None:
    """The stack, jobs waiting, in flight and dead-lettered, the workers and their cost per hour now."""
    from gpu_transcribe.pipeline.deploy import pipeline_status
    from gpu_transcribe.render import print_json, print_lines
    from gpu_transcribe.render_pipeline import status_lines

    settings = _settings(region=region, aws_profile=aws_profile)
    with stderr.status(escape(f"reading pipeline {name or 'default'} in {settings.region}")):
        report = pipeline_status(settings, name)
    if json:
        print_json(report, stdout)
    else:
        print_lines(status_lines(report), stdout)


@pipeline_app.command("destroy")
def pipeline_destroy(
    name: opt.PipelineName = None,
    delete_data: opt.DeleteData = False,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Delete the pipeline's stack: workers, queues (with any jobs in them), table, roles, scaler. The bucket
    is kept unless --delete-data."""
    from gpu_transcribe.pipeline.deploy import destroy_pipeline
    from gpu_transcribe.progress import event_printer
    from gpu_transcribe.render import print_lines
    from gpu_transcribe.render_pipeline import destroyed_lines

    settings = _settings(region=region, aws_profile=aws_profile)
    result = destroy_pipeline(settings, name, delete_data=delete_data, on_progress=event_printer(stderr))
    print_lines(destroyed_lines(result), stdout)


# --- job events: the webhook secret, verifying a request, watching the results queue ---------------------


@pipeline_app.command("webhook-secret")
def pipeline_webhook_secret_command(
    name: opt.PipelineName = None,
    rotate: Annotated[
        bool, typer.Option("--rotate", help="Start a rotation: a new secret; the old one keeps signing.")
    ] = False,
    keep_previous_hours: Annotated[
        float,
        typer.Option(
            "--keep-previous-hours",
            min=0.0,
            help="With --rotate: hours the old secret keeps signing (0: until --finish-rotation).",
        ),
    ] = 24.0,
    finish_rotation: Annotated[
        bool, typer.Option("--finish-rotation", help="End a rotation: only the new secret signs.")
    ] = False,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Print the pipeline's webhook signing secret (stdout; whsec_...), or rotate it. During a rotation
    every webhook carries both signatures, so receivers can switch at their own pace."""
    from datetime import UTC, datetime

    from gpu_transcribe.pipeline.results import pipeline_webhook_secret

    settings = _settings(region=region, aws_profile=aws_profile)
    secret = pipeline_webhook_secret(
        settings,
        name,
        rotate=rotate,
        keep_previous_hours=keep_previous_hours or None,
        finish=finish_rotation,
    )
    stdout.print(secret.current, markup=False, highlight=False, soft_wrap=True)
    if secret.previous:
        until = secret.previous_until
        when = (
            "until --finish-rotation"
            if until is None
            else "until " + datetime.fromtimestamp(until, tz=UTC).isoformat(timespec="seconds")
        )
        stderr.print(f"rotating: the previous secret also signs {when}", markup=False, highlight=False)


@webhook_app.command("verify")
def webhook_verify_command(
    secret_file: opt.SecretFile,
    headers_file: opt.HeadersFile = None,
    body_file: opt.BodyFile = None,
) -> None:
    """Say whether a webhook request's signature is valid (exit 0) or not (exit 1), with the
    standardwebhooks library (its 5-minute timestamp tolerance included)."""
    import sys

    from standardwebhooks.webhooks import WebhookVerificationError

    from gpu_transcribe.pipeline.results import parse_saved_request, verify_request

    secrets = [line.strip() for line in secret_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    raw = body_file.read_bytes() if body_file is not None else sys.stdin.buffer.read()
    if headers_file is not None:
        headers, _ = parse_saved_request(headers_file.read_text(encoding="utf-8"))
        body = raw
    else:
        headers, body = parse_saved_request(raw.decode("utf-8"))
    try:
        payload = verify_request(secrets, headers, body)
    except (WebhookVerificationError, ValueError) as exc:
        stdout.print(f"invalid: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    kind = payload.get("type", "?") if isinstance(payload, dict) else "?"
    stdout.print(f"valid: {headers.get('webhook-id')} {kind}", markup=False, highlight=False)


@jobs_app.command("watch")
def jobs_watch(
    pipeline: opt.PipelineOption = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the events on the queue (for another reader).")
    ] = False,
    once: Annotated[bool, typer.Option("--once", help="Stop when the queue is empty.")] = False,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Follow the pipeline's results queue: one JSON job event per line on stdout (deleted once printed,
    unless --keep). A pull channel for systems that cannot receive webhooks (docs/pipeline.md)."""
    import json as json_module

    from gpu_transcribe.aws.clients import AwsContext, aws_errors, sqs_client
    from gpu_transcribe.pipeline.results import results_queue_url, watch_results

    settings = _settings(region=region, aws_profile=aws_profile)
    queue_url = results_queue_url(settings, pipeline)
    ctx = AwsContext.from_settings(settings)
    with aws_errors(ctx, "reading the results queue"):
        for event in watch_results(
            sqs_client(ctx), queue_url, delete=not keep, wait_s=0 if once else 20, stop_when_empty=once
        ):
            stdout.print(json_module.dumps(event), markup=False, highlight=False, soft_wrap=True)
