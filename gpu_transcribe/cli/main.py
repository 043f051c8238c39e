"""The command line's application: the root command, each command family added to it in the order
``gpu-transcribe --help`` lists them, and the console-script entry point.

One module per command family, each owning its options, its Typer group and how its results look:
:mod:`~gpu_transcribe.cli.run`, :mod:`~gpu_transcribe.cli.account` (zones, cleanup, config, images),
:mod:`~gpu_transcribe.cli.build_ami`, :mod:`~gpu_transcribe.cli.jobs` (submit, jobs),
:mod:`~gpu_transcribe.cli.worker`, :mod:`~gpu_transcribe.cli.serve`, :mod:`~gpu_transcribe.cli.warm`
(server), :mod:`~gpu_transcribe.cli.pipeline` and :mod:`~gpu_transcribe.cli.webhook`. They build on
:mod:`~gpu_transcribe.cli.base` and print through :mod:`~gpu_transcribe.cli.output`.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from gpu_transcribe import __version__
from gpu_transcribe.cli import account, build_ami, jobs, pipeline, run, serve, warm, webhook, worker
from gpu_transcribe.cli.base import DEBUG_KEY, ErrorsToExitCodes, Typer
from gpu_transcribe.cli.output import print_lines, silence_stdout, stdout

app = Typer(
    name="gpu-transcribe",
    cls=ErrorsToExitCodes,
    help="Transcribe audio on a short-lived AWS GPU spot instance, or on this machine with --local.",
    no_args_is_help=True,
    # --install-completion / --show-completion: typer imports its shell code only when they are used.
    add_completion=True,
    pretty_exceptions_enable=False,
    # Plain help text: typer's Rich help imports markdown-it and costs ~0.1 s on every --help (measured).
    rich_markup_mode=None,
)


def _version_callback(value: bool) -> None:
    if value:
        print_lines([f"gpu-transcribe {__version__}"], stdout, soft_wrap=False)
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
    typer_ctx.meta[DEBUG_KEY] = debug


# The commands, then the groups: --help lists them in this order.
app.command("run")(run.run)
app.command("zones")(account.zones)
app.command("cleanup")(account.cleanup_command)
app.command("build-ami")(build_ami.build_ami)
app.command("submit")(jobs.submit)
app.command("worker")(worker.worker)
app.command("serve")(serve.serve)
app.add_typer(account.config_app, name="config")
app.add_typer(account.images_app, name="images")
app.add_typer(warm.server_app, name="server")
app.add_typer(pipeline.pipeline_app, name="pipeline")
app.add_typer(webhook.webhook_app, name="webhook")
app.add_typer(jobs.jobs_app, name="jobs")


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


__all__ = ["app", "main"]
