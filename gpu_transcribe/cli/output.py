"""Everything the command line prints goes through here: results to stdout (text or JSON), progress,
warnings and errors to stderr, and text from users, AWS or the engine printed literally.

Two consoles, :data:`stdout` and :data:`stderr`, without emoji codes or highlighting. Each ``print_*``
function takes the console to print on (stdout by default for results, stderr for warnings and errors) and
prints its text as it is: with ``markup=False``, or with the message passed through
:func:`rich.markup.escape` where a label (``error:``, ``warning:``) is coloured. Table cells are literal
:class:`~rich.text.Text` (:func:`plain`, :func:`add_row`). The command modules own how their results look
and print them with these functions.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from gpu_transcribe.errors import GpuTranscribeError, ProvisionError

if TYPE_CHECKING:
    from gpu_transcribe.common import ProgressCallback, ProgressEvent


class _ResultConsole(Console):
    """The stdout console: a reader that closes the pipe early ends the command quietly with exit status 0
    (Rich's own reaction is exit status 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        silence_stdout()
        raise typer.Exit(0)


# No emoji codes, no highlighting: paths, names and messages are printed as they are (markup is off or escaped
# wherever they are printed).
stdout = _ResultConsole(emoji=False, highlight=False)
stderr = Console(stderr=True, emoji=False, highlight=False)


def silence_stdout() -> None:
    """Point the process's stdout at the null device, so that what is still buffered for a reader that has
    closed the pipe (``gpu-transcribe ... | head -1``) is dropped instead of raising ``BrokenPipeError``
    again when Python flushes it at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


# --- text ------------------------------------------------------------------------------------------------


def print_lines(
    lines: Iterable[str], console: Console = stdout, *, style: str | None = None, soft_wrap: bool = True
) -> None:
    """Each of ``lines`` as is: no markup, no highlighting, in ``style`` if given; never wrapped unless
    ``soft_wrap`` is false (then Rich folds a line longer than the console is wide)."""
    for line in lines:
        console.print(line, style=style, markup=False, highlight=False, soft_wrap=soft_wrap)


def print_output_paths(paths: Iterable[Path | str], console: Console = stdout) -> None:
    """One written file per line (stdout of ``run``, ``jobs fetch``, for scripts)."""
    print_lines((str(p) for p in paths), console)


def print_labelled(label: str, message: str, console: Console = stderr, *, style: str = "bold red") -> None:
    """``<label>: <message>`` as one line, the label coloured with ``style``, the message literal."""
    console.print(f"[{style}]{label}:[/] {escape(message)}", highlight=False, soft_wrap=True)


def print_error(error: GpuTranscribeError | str, console: Console = stderr) -> None:
    """``error: <message>`` as one line; for a failed provisioning, its last output lines first."""
    if isinstance(error, ProvisionError) and error.output_tail.strip():
        print_lines(["--- last lines of the provisioning ---"], console, style="dim", soft_wrap=False)
        print_lines([error.output_tail], console)
    print_labelled("error", str(error), console)


def print_warning(message: str, console: Console = stderr) -> None:
    """``warning: <message>`` as one line (not fatal: the command goes on)."""
    print_labelled("warning", message, console, style="yellow")


def print_unexpected_error(error: BaseException, console: Console = stderr) -> None:
    """An error that is not a :class:`GpuTranscribeError` (a bug) as one line, with how to see more."""
    message = " ".join(str(error).split())
    print_labelled(
        "error",
        f"unexpected {type(error).__name__}: {message} (rerun with gpu-transcribe --debug ... to see the "
        "traceback)",
        console,
    )


def event_printer(console: Console = stderr) -> ProgressCallback:
    """A progress callback printing each event's message, dimmed, as one line on ``console``."""

    def show(event: ProgressEvent) -> None:
        print_lines([event.message], console, style="dim", soft_wrap=False)

    return show


# --- JSON ------------------------------------------------------------------------------------------------


def to_json(report: Any) -> str:
    """A frozen dataclass result (``ZonePrices``, ``ImageList``, ``CleanupReport``...) as indented JSON: its
    fields, nested dataclasses as objects, tuples as lists, times as ISO 8601 strings, paths as strings."""

    def convert(value: object) -> object:
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, Path):
            return str(value)
        raise TypeError(f"{type(value).__name__} is not JSON")

    return json.dumps(dataclasses.asdict(report), indent=2, default=convert, ensure_ascii=False)


def print_json(report: Any, console: Console = stdout) -> None:
    """``report`` as JSON (:func:`to_json`): plain text, never wrapped or highlighted, for scripts."""
    print_lines([to_json(report)], console)


# --- tables ----------------------------------------------------------------------------------------------


def plain(value: object) -> Text:
    """``value`` as literal text for a table cell or title: brackets are not Rich markup, nothing is
    highlighted (paths, file names, S3 keys, messages and setting values are printed as they are)."""
    return Text(str(value))


def add_row(table: Table, *cells: object) -> None:
    """Add a row whose cells are printed literally (see :func:`plain`); a :class:`Text` is kept as is."""
    table.add_row(*(c if isinstance(c, Text) else plain(c) for c in cells))


def print_table(table: Table, console: Console = stdout, *, soft_wrap: bool = False) -> None:
    """A Rich table whose cells were made with :func:`add_row` (literal text)."""
    console.print(table, soft_wrap=soft_wrap)


def money(value: float | None, digits: int = 4) -> str:
    """``$0.5260`` (US dollars, ``digits`` decimals), or ``-`` when unknown."""
    return "-" if value is None else f"${value:.{digits}f}"


def format_phases(phases: Iterable[tuple[str, float]]) -> str:
    """``wheel 1.5 s, launch 42.0 s, ...`` from ``(phase, seconds)`` pairs."""
    return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases)
