"""How the CLI shows pipeline jobs (``jobs``, ``submit --wait``, ``worker``): a table, JSON, progress lines.

Part of the CLI layer, like :mod:`gpu_transcribe.cli.render`; the records are
:class:`~gpu_transcribe.aws.pipeline.jobs_table.JobRecord`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from gpu_transcribe.cli.render import _add_row, print_lines

if TYPE_CHECKING:
    from gpu_transcribe.aws.pipeline.jobs_table import JobRecord
    from gpu_transcribe.common import ProgressEvent


def _time(iso: str) -> str:
    """``2026-12-02T06:19:40.123Z`` as ``2026-12-02 06:19:40``."""
    return iso[:19].replace("T", " ") if iso else "-"


def jobs_json(records: Sequence[JobRecord]) -> str:
    """The records as a JSON list of objects (field name -> value; tuples as lists)."""
    return json.dumps([dataclasses.asdict(r) for r in records], indent=2, ensure_ascii=False)


def print_jobs(records: Sequence[JobRecord], console: Console) -> None:
    """A table: job id, status, file, audio duration, attempts (with engine failures and interruptions),
    worker, created and updated times (UTC), error."""
    table = Table(box=None, pad_edge=False)
    for name in ("job", "status"):  # never folded: scripts and eyes look for whole ids
        table.add_column(name, no_wrap=True)
    for name in ("file", "duration", "attempts", "worker", "created (UTC)", "updated", "error"):
        table.add_column(name, overflow="fold")
    for r in records:
        attempts = f"{r.attempts}"
        if r.engine_failures or r.interruptions:
            attempts += f" ({r.engine_failures} failed, {r.interruptions} interrupted)"
        duration = "-" if r.duration_s is None else f"{r.duration_s:.1f} s"
        _add_row(
            table,
            r.job_id,
            r.status,
            r.file_name,
            duration,
            attempts,
            r.owner or "-",
            _time(r.created_at),
            _time(r.updated_at),
            r.error or "",
        )
    console.print(table, soft_wrap=True)


def job_status_lines(records: Sequence[JobRecord]) -> list[str]:
    """One progress line per job: ``<job id> <status> <file>`` (``submit --wait`` on stderr)."""
    lines = []
    for r in records:
        tail = f": {r.error}" if r.error and r.status in ("failed", "dead_lettered") else ""
        lines.append(f"{r.job_id}  {r.status:<13} {r.file_name}{tail}")
    return lines


def worker_event_printer(console: Console) -> Callable[[ProgressEvent], None]:
    """A progress callback printing each worker event as ``worker: <message>`` on ``console``."""

    def on_event(event: ProgressEvent) -> None:
        """Print one event."""
        print_lines([f"worker: {event.message}"], console)

    return on_event
