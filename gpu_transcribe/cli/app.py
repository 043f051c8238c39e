"""The command line's root: the Typer application, its command groups, the consoles, the settings of a
command, and the one place errors become exit codes. The commands themselves are in
:mod:`gpu_transcribe.cli.main`
(run, build-ami, images, zones, config, cleanup), :mod:`gpu_transcribe.cli.serve` (serve, server) and
:mod:`gpu_transcribe.cli.pipeline` (pipeline, submit, jobs, worker, webhook).

Results go to stdout, progress and errors to stderr; how they look is :mod:`gpu_transcribe.cli.render` and
:mod:`gpu_transcribe.cli.progress`. A :class:`~gpu_transcribe.errors.GpuTranscribeError` raised by any command
becomes ``error: <message>`` on stderr and the error's exit code in one place, :class:`_ErrorsToExitCodes`.
Heavy modules (boto3, paramiko, torch) are imported inside the commands, so ``gpu-transcribe --help`` stays
fast.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any, get_args

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup
from typer.exceptions import TyperException

from gpu_transcribe import __version__
from gpu_transcribe.errors import GpuTranscribeError

if TYPE_CHECKING:
    from gpu_transcribe.settings import Settings


# No emoji codes, no highlighting: paths, names and messages are printed as they are (markup is off or escaped
# wherever they are printed, see render.py).
class _ResultConsole(Console):
    """The stdout console: a reader that closes the pipe early ends the command quietly with exit status 0
    (Rich's own reaction is exit status 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        silence_stdout()
        raise typer.Exit(0)


stdout = _ResultConsole(emoji=False, highlight=False)
stderr = Console(stderr=True, emoji=False, highlight=False)

#: ``run`` exit statuses beyond the errors' own (README, "Exit status").
EXIT_UPLOAD_FAILED = 4
EXIT_LEFT_BEHIND = 5

#: Where the root command keeps ``--debug`` in the click context's ``meta`` (shared by every subcommand).
_DEBUG_KEY = "gpu_transcribe.debug"


#: Typer releases whose internal ``type_descriptor`` (on each parameter) :func:`_plain_metavars` reads; under
#: any other release the help keeps Typer's own metavars rather than guess at its internals.
_TYPER_TESTED = ("0.29.",)


def _plain_metavars(params: list[Any]) -> None:
    """Give each parameter that takes a value a metavar in the usual command-line style, where the command
    did not set one: ``N`` for numbers, ``FILE``/``DIR``/``PATH`` for paths, else the option's name in
    capitals (``--region REGION``); an argument's is its name in capitals, with ``...`` when it takes
    several. Typer would print Python type names instead (``<str>``, ``<int range>``, ``<list[Path]>``).
    Reads Typer's internal ``type_descriptor``, so only under the releases in ``_TYPER_TESTED``."""
    if not typer.__version__.startswith(_TYPER_TESTED):
        return
    for param in params:
        if param.metavar is not None or getattr(param, "is_flag", False) or getattr(param, "count", False):
            continue
        if param.param_type_name == "argument":
            param.metavar = param.name.upper() + ("..." if param.nargs != 1 else "")
            continue
        described = param.type_descriptor  # typer's view of the annotation
        element = get_args(described.annotation)[0] if described.is_list else described.annotation
        if element in (int, float):
            param.metavar = "N"
        elif described.is_path:
            info = described.parameter_info
            param.metavar = "FILE" if not info.dir_okay else "DIR" if not info.file_okay else "PATH"
        else:
            longest = max(param.opts, key=len)
            param.metavar = longest.lstrip("-").replace("-", "_").upper()


class Command(TyperCommand):
    """Every command's class: plain metavars (:func:`_plain_metavars`), and arguments shown by their
    metavar alone, in the usage line (``run [OPTIONS] PATHS...``) and the Arguments section."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_metavars(self.params)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = param.metavar or param.name.upper()
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append((param.metavar or param.name.upper(), record[1]))
            else:
                options.append(record)
        for title, records in (("Arguments", arguments), ("Options", options)):
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)


class Group(TyperGroup):
    """Every command group's class: its own options get plain metavars (:func:`_plain_metavars`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_metavars(self.params)


class Typer(typer.Typer):
    """``typer.Typer`` whose commands are :class:`Command` and whose groups are :class:`Group` unless
    told otherwise."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("cls", Group)
        kwargs.setdefault("rich_markup_mode", None)
        super().__init__(*args, **kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", Command)
        return super().command(*args, **kwargs)


class _ErrorsToExitCodes(Group):
    """The root command group. Every command runs inside its :meth:`invoke`, which turns a
    :class:`GpuTranscribeError` into one ``error:`` line on stderr and ``typer.Exit(error.exit_code)``, and
    any other exception (a bug) into one ``error: unexpected ...`` line and exit status 1, or its traceback
    with ``--debug``."""

    def invoke(self, ctx: Any) -> Any:  # typer.Context's base: the click Context vendored in typer
        try:
            return super().invoke(ctx)
        except GpuTranscribeError as error:
            from gpu_transcribe.cli.render import print_error

            print_error(error, stderr)
            raise typer.Exit(error.exit_code) from None
        except (typer.Exit, typer.Abort, TyperException):  # usage errors, exits: typer's own handling
            raise
        except BrokenPipeError:  # the reader of stdout has gone (`... | head -1`): nothing more to say
            silence_stdout()
            raise typer.Exit(0) from None
        except Exception as error:
            if ctx.meta.get(_DEBUG_KEY):
                raise
            from gpu_transcribe.cli.render import print_unexpected_error

            print_unexpected_error(error, stderr)
            raise typer.Exit(1) from None


app = Typer(
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
config_app = Typer(help="Inspect the settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")
images_app = Typer(
    help="List gpu-transcribe's images (AMIs), or prune old ones.", invoke_without_command=True
)
app.add_typer(images_app, name="images")
server_app = Typer(
    help="A warm GPU server of your own: up, status, tunnel, logs, down.\n\n`server up` starts `serve` on "
    "an instance that stays until it has been idle (or lived) long enough, or `server down`.",
    no_args_is_help=True,
)
app.add_typer(server_app, name="server")
pipeline_app = Typer(
    help="A job queue on spot GPU workers that scale from zero.\n\nOne CloudFormation stack (deploy, "
    "status, destroy).",
    no_args_is_help=True,
)
app.add_typer(pipeline_app, name="pipeline")
webhook_app = Typer(help="Help for receivers of the pipeline's webhooks.", no_args_is_help=True)
app.add_typer(webhook_app, name="webhook")


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


def silence_stdout() -> None:
    """Point the process's stdout at the null device, so that what is still buffered for a reader that has
    closed the pipe (``gpu-transcribe ... | head -1``) is dropped instead of raising ``BrokenPipeError``
    again when Python flushes it at exit."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def cli_settings(*, warn_ssh_cidr: bool = False, **flags: object) -> Settings:
    """The effective settings for the flags given (``None`` for a flag not given), after a warning on stderr
    for each ``GPU_TRANSCRIBE_*`` variable that is not a setting, and with ``warn_ssh_cidr`` (commands that
    launch, and ``config show``) for an ``ssh_cidr`` wider than one address.

    Raises:
        SettingsError: a value is bad; the message names the setting and its source.
    """
    from gpu_transcribe.cli.render import print_warning
    from gpu_transcribe.settings import load_settings, ssh_cidr_warning, unknown_env_vars

    for warning in unknown_env_vars():
        print_warning(warning, stderr)
    settings = load_settings(flags)
    wide = ssh_cidr_warning(settings) if warn_ssh_cidr else None
    if wide is not None:
        print_warning(wide, stderr)
    return settings
