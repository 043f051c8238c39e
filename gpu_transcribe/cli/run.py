"""``gpu-transcribe run``: its options, the checks of its flags, and a run on a new instance, ``--host`` or
``--local``. Parsing and printing only; how a run looks is :mod:`gpu_transcribe.cli.run_output`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gpu_transcribe.cli import options as opt
from gpu_transcribe.cli.base import EXIT_LEFT_BEHIND, EXIT_UPLOAD_FAILED, cli_settings
from gpu_transcribe.cli.output import print_output_paths, stderr, stdout
from gpu_transcribe.errors import LocalRunInterruptedError, SettingsError
from gpu_transcribe_engine.options import DEFAULT_FORMATS, DEFAULT_MODEL, DEVICES, TranscribeOptions

if TYPE_CHECKING:
    from gpu_transcribe.run import CloudRunRequest
    from gpu_transcribe.run.local import LocalRunRequest
    from gpu_transcribe.settings import Settings

# --- run's own options (those shared with other commands are in options.py) -------------------------------

#: ``--format``'s default: the engine's default formats, comma-separated.
DEFAULT_FORMATS_ARG = ",".join(DEFAULT_FORMATS)
Model = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        metavar="ID_OR_DIR",
        help=f"Whisper model: a Hugging Face id, or with --local a model directory. "
        f"Default: setting model ({DEFAULT_MODEL}).",
    ),
]
Paths = Annotated[
    list[Path],
    typer.Argument(
        metavar="AUDIO...",
        help="Audio files, or directories searched for audio (wav, flac, mp3, ogg, opus, m4a...).",
        show_default=False,
    ),
]
OutputDir = Annotated[
    Path | None,
    typer.Option(
        "--output-dir", "-o", metavar="DIR", help="Write every output here. Default: beside each input file."
    ),
]
Format = Annotated[
    str,
    typer.Option(
        "--format", "-f", metavar="LIST", help="Output formats, comma-separated, any of: txt,json,srt,vtt."
    ),
]
BatchSize = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        min=1,
        max=256,
        help="Windows decoded together (batched algorithm). Default: per device.",
    ),
]
Algorithm = Annotated[
    str,
    typer.Option(
        "--algorithm",
        help="auto (= batched), batched (silence-cut windows decoded together: faster, and more accurate in "
        "the README's measurements) or sequential (OpenAI's long-form algorithm, conditioned on the "
        "previous text).",
    ),
]
BeamSize = Annotated[int, typer.Option("--beam-size", min=1, max=16, help="Beam search width; 1 is greedy.")]
Task = Annotated[str, typer.Option("--task", help="transcribe, or translate (into English).")]
Device = Annotated[
    str | None,
    typer.Option(
        "--device",
        help="With --local only: auto (cuda if torch sees a GPU), cpu or cuda.",
        show_default=False,
    ),
]
Local = Annotated[bool, typer.Option("--local", help="Transcribe on this machine; no cloud.")]
SkipExisting = Annotated[
    bool,
    typer.Option(
        "--skip-existing",
        help="Pass over inputs whose outputs already exist. Default (neither): report them and pass over.",
    ),
]
NoS3 = Annotated[bool, typer.Option("--no-s3", help="Do not upload the outputs to S3.")]
Correct = Annotated[
    bool,
    typer.Option(
        "--correct",
        help="Also correct each transcript with a language model on Amazon Bedrock (correct_* settings) and "
        "write it beside the raw one as STEM.corrected.FORMAT; adds json to --format.",
    ),
]
UploadAudio = Annotated[
    bool, typer.Option("--upload-audio", help="Also store the audio files in S3 (not with --no-s3).")
]
UpdateEngine = Annotated[
    bool,
    typer.Option(
        "--update-engine", help="Use an image of another version; install this version on it first."
    ),
]
Host = Annotated[
    str | None,
    typer.Option(
        "--host",
        metavar="USER@HOST[:PORT]",
        help="Run on an existing machine, user@address[:port]; no EC2 at all.",
    ),
]
Identity = Annotated[
    Path | None,
    typer.Option("--identity", "-i", metavar="KEY_FILE", help="With --host: the private key to log in with."),
]
KnownHosts = Annotated[
    Path | None,
    typer.Option(
        "--known-hosts", help="With --host: known_hosts file with the host's key (~/.ssh/known_hosts)."
    ),
]
Market = Annotated[str | None, typer.Option("--market", help="spot-then-on-demand, spot or on-demand.")]
Bucket = Annotated[str | None, typer.Option("--s3-bucket", metavar="BUCKET", help="Bucket for the outputs.")]


# --- run ---------------------------------------------------------------------------------------------------


def run(
    paths: Paths,
    local: Local = False,
    output_dir: OutputDir = None,
    formats: Format = DEFAULT_FORMATS_ARG,
    language: opt.Language = None,
    model: Model = None,
    revision: opt.Revision = None,
    batch_size: BatchSize = None,
    algorithm: Algorithm = "auto",
    beam_size: BeamSize = TranscribeOptions.beam_size,
    task: Task = "transcribe",
    word_timestamps: opt.WordTimestamps = False,
    prompt: opt.Prompt = None,
    max_line_width: opt.MaxLineWidth = None,
    max_line_count: opt.MaxLineCount = None,
    max_cue_duration: opt.MaxCueDuration = None,
    device: Device = None,
    overwrite: opt.Overwrite = False,
    skip_existing: SkipExisting = False,
    no_s3: NoS3 = False,
    correct: Correct = False,
    upload_audio: UploadAudio = False,
    dry_run: opt.DryRun = False,
    update_engine: UpdateEngine = False,
    host: Host = None,
    identity: Identity = None,
    known_hosts: KnownHosts = None,
    instance_type: opt.InstanceType = None,
    market: Market = None,
    s3_bucket: Bucket = None,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Transcribe audio files on a GPU instance, --local or --host.

    Transcript paths go to stdout, one a line; progress and the summary to stderr."""
    # Function-level: the run package (instance session, inputs, outputs) adds ~40 ms to every --help.
    from gpu_transcribe.correct.config import CorrectionConfig
    from gpu_transcribe.run import CloudRunRequest, parse_host
    from gpu_transcribe.run.inputs import validate_options
    from gpu_transcribe.run.local import LocalRunRequest, check_model
    from gpu_transcribe.run.outputs import existing_policy

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
    validate_options(options, formats)  # every choice checked before any work, and before a spinner
    existing = existing_policy(overwrite, skip_existing)
    inputs = tuple(str(p) for p in paths)
    format_list = tuple(formats.split(","))
    correction = None
    if correct:  # the correction reads the raw JSON (segment times), so --correct always writes it
        format_list += () if "json" in format_list else ("json",)
        correction = CorrectionConfig.from_settings(settings)
    if local:
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
    # Function-level: run_output and the run package add ~40 ms to every --help.
    from gpu_transcribe.cli.run_output import (
        EngineProgress,
        print_corrections,
        print_engine_summary,
        print_problems,
    )
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
    # Function-level: run_output and the run package add ~40 ms to every --help.
    from gpu_transcribe.cli.run_output import (
        EngineProgress,
        print_cloud_summary,
        print_corrections,
        print_dry_run,
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
