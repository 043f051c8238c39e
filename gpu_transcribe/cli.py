"""The command line: parses, prints, and maps errors to exit codes. Nothing else lives here.

Results go to stdout, progress and errors to stderr. Heavy modules (boto3, paramiko, torch) are imported
inside the commands, so ``gpu-transcribe --help`` stays fast.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from gpu_transcribe import __version__
from gpu_transcribe.errors import GpuTranscribeError

app = typer.Typer(
    name="gpu-transcribe",
    help="Transcribe audio on a short-lived AWS GPU spot instance, or on this machine with --local.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
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
