"""Rich rendering of engine events and results for the CLI (stderr). Part of the CLI layer."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from gpu_transcribe.engine_runner import ENGINE_STARTED, EngineRun


class EngineProgress:
    """Shows the engine's JSON events as a spinner (model loading) and one bar per file (audio seconds)."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            # A field, not "{task.total:.1f}": total is None while the model loads (Rich cannot format None).
            TextColumn("{task.fields[audio]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._loading: TaskID | None = None
        self._files: dict[int, TaskID] = {}
        self._stopped = False

    def __enter__(self) -> EngineProgress:
        return self

    def start(self) -> None:
        """Start rendering with a "loading the model" spinner. Called on the runner's ``engine_started``
        event, so errors raised before the engine runs are printed without a half-drawn display."""
        if self._loading is None and not self._stopped:
            self._progress.start()
            self._loading = self._progress.add_task("loading the model", total=None, audio="")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop rendering (idempotent)."""
        if not self._stopped:
            self._stopped = True
            if self._loading is not None:
                self._progress.stop()

    def on_event(self, event: dict[str, Any]) -> None:
        """Update the display for one engine event (see ``remote.protocol``)."""
        kind = event.get("event")
        if kind == ENGINE_STARTED:
            self.start()
        elif kind == "model_loaded" and self._loading is not None:
            self._progress.update(
                self._loading,
                description=(
                    f"model {event.get('model')} on {event.get('device')} {event.get('dtype')}"
                    f" ({event.get('algorithm')}), loaded in {float(event.get('load_s', 0)):.1f} s"
                ),
                total=1,
                completed=1,
            )
        elif kind == "file_started":
            name = str(event.get("audio", "")).rsplit("/", 1)[-1]
            self._files[int(event["index"])] = self._progress.add_task(name, total=None, audio="")
        elif kind == "progress" and int(event.get("index", -1)) in self._files:
            total_s, done_s = float(event.get("duration_s", 0)), float(event.get("done_s", 0))
            self._progress.update(
                self._files[int(event["index"])],
                total=total_s,
                completed=done_s,
                audio=_audio_text(done_s, total_s),
            )
        elif kind == "file_done" and int(event.get("index", -1)) in self._files:
            duration_s = float(event.get("duration_s", 0))
            self._progress.update(
                self._files[int(event["index"])],
                total=duration_s,
                completed=duration_s,
                audio=_audio_text(duration_s, duration_s),
            )
        elif kind == "file_failed" and int(event.get("index", -1)) in self._files:
            task = self._files[int(event["index"])]
            self._progress.update(
                task, description=f"[red]failed[/] {self._progress.tasks[task].description}"
            )


def _audio_text(done_s: float, total_s: float) -> str:
    return f"{done_s:>6.1f}/{total_s:.1f} s audio"


def engine_summary_table(run: EngineRun) -> Table:
    """One row per file: audio seconds, transcription seconds, real-time factor, outputs or the error."""
    table = Table(
        title=f"{run.model} on {run.device} {run.dtype}, {run.algorithm}, model load {run.load_s:.1f} s"
    )
    table.add_column("file")
    table.add_column("audio s", justify="right")
    table.add_column("transcribe s", justify="right")
    table.add_column("real-time factor", justify="right")
    table.add_column("outputs / error")
    for f in run.files:
        name = f.audio.rsplit("/", 1)[-1]
        if f.ok:
            rtf = f.real_time_factor
            table.add_row(
                name,
                f"{f.duration_s:.1f}",
                f"{f.transcribe_s:.2f}",
                f"{rtf:.3f}" if rtf is not None else "-",
                "\n".join(f.outputs.values()),
            )
        else:
            table.add_row(name, "-", "-", "-", f"[red]{f.message}[/]")
    return table


def print_engine_summary(run: EngineRun, console: Console | None = None) -> None:
    """Print :func:`engine_summary_table` and one error line per failed file to ``console`` (stderr)."""
    console = console or Console(stderr=True)
    console.print(engine_summary_table(run))
    for f in run.failed:
        console.print(f"[bold red]error:[/] {f.message}", highlight=False, soft_wrap=True)
