"""The command line: parses, prints, and maps errors to exit codes. Nothing else lives here.

Results go to stdout, progress and errors to stderr. Heavy modules (boto3, paramiko, torch) are imported
inside the commands, so ``gpu-transcribe --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gpu_transcribe import __version__
from gpu_transcribe.errors import GpuTranscribeError
from remote.options import DEFAULT_FORMATS, DEFAULT_LANGUAGE, DEFAULT_MODEL, TranscribeOptions

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
    str, typer.Option("--language", "-l", help="Language code (sv, en, ...) or 'auto' to detect.")
]
ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="Hugging Face model id or a local model directory.")
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


@app.command()
def run(
    paths: PathsArg,
    local: Annotated[bool, typer.Option("--local", help="Transcribe on this machine; no cloud.")] = False,
    output_dir: OutputDirOpt = None,
    formats: FormatOpt = DEFAULT_FORMATS_ARG,
    language: LanguageOpt = DEFAULT_LANGUAGE,
    model: ModelOpt = DEFAULT_MODEL,
    revision: RevisionOpt = None,
    batch_size: BatchSizeOpt = None,
    algorithm: AlgorithmOpt = "auto",
    beam_size: BeamSizeOpt = TranscribeOptions.beam_size,
    task: TaskOpt = "transcribe",
    device: DeviceOpt = "auto",
) -> None:
    """Transcribe audio files. Transcript paths go to stdout; progress and the summary to stderr."""
    from gpu_transcribe.local import LocalRunRequest, run_local
    from gpu_transcribe.progress import EngineProgress, print_engine_summary

    options = TranscribeOptions(
        language=language,
        task=task,  # type: ignore[arg-type]  # validated by TranscribeOptions.validated()
        beam_size=beam_size,
        batch_size=batch_size,
        algorithm=algorithm,  # type: ignore[arg-type]
    )
    if not local:
        raise fail(
            GpuTranscribeError(
                "cloud runs are not available in this version yet; use --local to transcribe here"
            )
        )
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
