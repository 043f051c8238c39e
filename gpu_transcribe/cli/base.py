"""What every command module builds on: the Typer classes (plain metavars in every help), the root group that
turns errors into exit codes, the settings of a command, and ``run``'s exit statuses.

A :class:`~gpu_transcribe.errors.GpuTranscribeError` raised by any command becomes ``error: <message>`` on
stderr and the error's exit code in one place, :class:`ErrorsToExitCodes`. The application is put together in
:mod:`gpu_transcribe.cli.main`; what is printed, and where, is :mod:`gpu_transcribe.cli.output`.
"""

from __future__ import annotations

from typing import Any, get_args

import typer
from typer.core import TyperCommand, TyperGroup
from typer.exceptions import TyperException

from gpu_transcribe.cli.output import (
    print_error,
    print_unexpected_error,
    print_warning,
    silence_stdout,
    stderr,
)
from gpu_transcribe.errors import GpuTranscribeError
from gpu_transcribe.settings import Settings, load_settings, ssh_cidr_warning, unknown_env_vars

#: ``run`` exit statuses beyond the errors' own (README, "Exit status").
EXIT_UPLOAD_FAILED = 4
EXIT_LEFT_BEHIND = 5

#: Where the root command keeps ``--debug`` in the click context's ``meta`` (shared by every subcommand).
DEBUG_KEY = "gpu_transcribe.debug"


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


class ErrorsToExitCodes(Group):
    """The root command group. Every command runs inside its :meth:`invoke`, which turns a
    :class:`GpuTranscribeError` into one ``error:`` line on stderr and ``typer.Exit(error.exit_code)``, and
    any other exception (a bug) into one ``error: unexpected ...`` line and exit status 1, or its traceback
    with ``--debug``."""

    def invoke(self, ctx: Any) -> Any:  # typer.Context's base: the click Context vendored in typer
        try:
            return super().invoke(ctx)
        except GpuTranscribeError as error:
            print_error(error, stderr)
            raise typer.Exit(error.exit_code) from None
        except (typer.Exit, typer.Abort, TyperException):  # usage errors, exits: typer's own handling
            raise
        except BrokenPipeError:  # the reader of stdout has gone (`... | head -1`): nothing more to say
            silence_stdout()
            raise typer.Exit(0) from None
        except Exception as error:
            if ctx.meta.get(DEBUG_KEY):
                raise
            print_unexpected_error(error, stderr)
            raise typer.Exit(1) from None


def cli_settings(*, warn_ssh_cidr: bool = False, **flags: object) -> Settings:
    """The effective settings for the flags given (``None`` for a flag not given), after a warning on stderr
    for each ``GPU_TRANSCRIBE_*`` variable that is not a setting, and with ``warn_ssh_cidr`` (commands that
    launch, and ``config show``) for an ``ssh_cidr`` wider than one address.

    Raises:
        SettingsError: a value is bad; the message names the setting and its source.
    """
    for warning in unknown_env_vars():
        print_warning(warning, stderr)
    settings = load_settings(flags)
    wide = ssh_cidr_warning(settings) if warn_ssh_cidr else None
    if wide is not None:
        print_warning(wide, stderr)
    return settings
