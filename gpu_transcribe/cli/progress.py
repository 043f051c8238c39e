"""Live progress on stderr for the CLI: the engine's events as a spinner and bars, and progress lines.

Part of the CLI layer: orchestration reports through callbacks (progress events, the engine's JSON events,
signal notices) and the callbacks made here print them. Results are printed by
:mod:`gpu_transcribe.cli.render`.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from gpu_transcribe.run.engine_runner import ENGINE_STARTED

if TYPE_CHECKING:
    from gpu_transcribe.common import ProgressCallback, ProgressEvent
    from gpu_transcribe.instance.lifecycle import SignalCallback


class EngineProgress:
    """Shows the engine's JSON events as a spinner (model loading) and one bar per file (audio seconds)."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            # A field, not "{task.total:.1f}": total is None while the model loads (Rich cannot format None).
            TextColumn("{task.fields[audio]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._loading: TaskID | None = None
        self._files: dict[int, TaskID] = {}
        self._push: TaskID | None = None
        self._push_total = 0
        self._started = False
        self._stopped = False

    def __enter__(self) -> EngineProgress:
        return self

    def _ensure_started(self) -> None:
        if not self._started and not self._stopped:
            self._started = True
            self._progress.start()

    def start(self) -> None:
        """Start rendering with a "loading the model" spinner. Called on the runner's ``engine_started``
        event, so errors raised before the engine runs are printed without a half-drawn display."""
        if self._loading is None and not self._stopped:
            self._ensure_started()
            if self._push is not None:
                done = self._progress.tasks[self._push].total or 0
                self._progress.update(self._push, completed=done)
            self._loading = self._progress.add_task("loading the model", total=None, audio="")

    def note(self, message: str) -> None:
        """Print one progress line (above the bars while they show)."""
        self._console.print(message, style="dim", markup=False, highlight=False, soft_wrap=True)

    def on_signal(self, name: str, during_teardown: bool) -> None:
        """A signal callback for ``run`` (:class:`~gpu_transcribe.instance.lifecycle.TeardownGuard`): say
        that the
        instance is being terminated."""
        if during_teardown:
            self.note(f"{name} received: still cleaning up (the instance is being terminated)")
        else:
            self.note(f"{name} received: cleaning up (terminating the instance), please wait")

    def push_start(self, file_count: int, total_bytes: int) -> None:
        """Show a bar for the audio upload: ``total_bytes`` over ``file_count`` files."""
        self._ensure_started()
        self._push_total = total_bytes
        self._push = self._progress.add_task(
            f"pushing {file_count} file(s)", total=max(total_bytes, 1), audio=_mb_text(0, total_bytes)
        )

    def push_advance(self, path: object, delta_bytes: int) -> None:
        """Advance the upload bar by ``delta_bytes`` (thread-safe: Rich locks its tasks)."""
        if self._push is not None:
            self._progress.advance(self._push, delta_bytes)
            done = int(self._progress.tasks[self._push].completed)
            self._progress.update(self._push, audio=_mb_text(done, self._push_total))

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop rendering (idempotent)."""
        if not self._stopped:
            self._stopped = True
            if self._started:
                self._progress.stop()

    def on_event(self, event: dict[str, Any]) -> None:
        """Update the display for one engine event (see ``gpu_transcribe_engine.protocol``)."""
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
            self._progress.update(task, description=f"failed: {self._progress.tasks[task].description}")


def _mb_text(done_bytes: int, total_bytes: int) -> str:
    return f"{done_bytes / 1e6:>6.1f}/{total_bytes / 1e6:.1f} MB"


def _audio_text(done_s: float, total_s: float) -> str:
    return f"{done_s:>6.1f}/{total_s:.1f} s audio"


def event_printer(console: Console) -> ProgressCallback:
    """A progress callback printing each event's message, dimmed, as one line on ``console``."""

    def show(event: ProgressEvent) -> None:
        console.print(event.message, style="dim", markup=False, highlight=False)

    return show


def build_event_printer(console: Console) -> ProgressCallback:
    """``build-ami``'s progress callback: provisioning steps and phases in bold, other events dimmed; the
    provisioning's own output (pip's chatter) is skipped, its tail is shown if the provisioning fails."""

    def show(event: ProgressEvent) -> None:
        if event.stage == "provision-output":
            return
        style = "bold" if event.stage in ("provision", "phase") else "dim"
        console.print(event.message, style=style, markup=False, highlight=False, soft_wrap=True)

    return show


def build_signal_printer(console: Console) -> SignalCallback:
    """``build-ami``'s signal callback: say that the builder is being terminated."""

    def show(name: str, during_teardown: bool) -> None:
        if during_teardown:
            console.print(
                f"{name}: still cleaning up; the builder is being terminated",
                style="bold yellow",
                markup=False,
            )
        else:
            console.print(
                f"{name}: stopping the build and terminating the builder...",
                style="bold yellow",
                markup=False,
            )

    return show
