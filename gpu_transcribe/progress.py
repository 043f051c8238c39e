"""Rich rendering of engine events and results for the CLI (stderr). Part of the CLI layer."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from gpu_transcribe.engine_runner import ENGINE_STARTED, EngineRun

if TYPE_CHECKING:
    from gpu_transcribe.run import CloudRunResult, DryRunPlan


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


def _mb_text(done_bytes: int, total_bytes: int) -> str:
    return f"{done_bytes / 1e6:>6.1f}/{total_bytes / 1e6:.1f} MB"


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
    table.add_column("outputs / error", overflow="fold")
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


def _money(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"${value:.{digits}f}"


def print_cloud_summary(result: CloudRunResult, console: Console) -> None:
    """The end of ``run``: a row per file (duration, transcription seconds, real-time factor, outputs,
    S3), a row per instance (type, zone, market, price, billed seconds, cost), each phase's seconds, then one
    ``error:`` line per problem."""
    files = Table(title=f"run {result.run_id}" + (f" on {result.host}" if result.host else ""))
    for header in ("file", "audio s", "transcribe s", "real-time factor", "outputs", "s3"):
        numeric = header.endswith((" s", "factor"))
        files.add_column(header, justify="right" if numeric else "left", overflow="fold")
    for f in result.files:
        o = f.outcome
        if f.ok and o is not None:
            rtf = o.real_time_factor
            files.add_row(
                f.audio.path.name,
                f"{o.duration_s:.1f}" if o.duration_s is not None else "-",
                f"{o.transcribe_s:.2f}" if o.transcribe_s is not None else "-",
                f"{rtf:.3f}" if rtf is not None else "-",
                "\n".join(str(p) for p in f.outputs.values()),
                "\n".join(u.url for u in f.uploads) or "-",
            )
        else:
            why = o.message if o is not None else "not transcribed"
            files.add_row(f.audio.path.name, "-", "-", "-", f"[red]{why}[/]", "-")
    console.print(files)
    if result.instances:
        machines = Table(title="instances")
        for header in ("instance", "type", "zone", "market", "$/hour", "billed s", "cost"):
            machines.add_column(
                header, justify="right" if header in ("$/hour", "billed s", "cost") else "left"
            )
        for i in result.instances:
            machines.add_row(
                i.instance_id + (" (lost)" if i.interrupted else ""),
                i.instance_type,
                i.zone,
                i.market,
                _money(i.price_usd_per_hour),
                f"{i.billed_s:.0f}",
                _money(i.cost_usd),
            )
        console.print(machines)
        console.print(f"total cost: {_money(result.cost_usd)}", highlight=False)
    phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result.phases_s.items())
    console.print(f"phases: {phases}", highlight=False, soft_wrap=True)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    for lost in result.lost:
        console.print(f"[yellow]lost:[/] {lost}", highlight=False, soft_wrap=True)
    for problem in result.input_problems:
        console.print(f"[bold red]error:[/] {problem}", highlight=False, soft_wrap=True)
    for f in result.failed_files:
        why = f.outcome.message if f.outcome is not None else "not transcribed (the instance was lost)"
        console.print(f"[bold red]error:[/] {f.audio.path}: {why}", highlight=False, soft_wrap=True)
    if result.upload_error is not None:
        console.print(
            f"[bold red]error:[/] {result.upload_error} (the transcripts are kept locally)",
            highlight=False,
            soft_wrap=True,
        )
    if result.teardown_error is not None:
        console.print(f"[bold red]error:[/] {result.teardown_error}", highlight=False, soft_wrap=True)


def print_dry_run(plan: DryRunPlan, console: Console) -> None:
    """``run --dry-run``: what would be launched, where, in what order, with which tags, at what cost."""
    launch = plan.plan
    spec = launch.spec
    image = plan.image
    console.print(
        f"would transcribe {len(plan.files)} file(s) "
        f"({sum(f.size_bytes for f in plan.files) / 1e6:.1f} MB) on {', '.join(spec.instance_types)} "
        f"({spec.market}) in {launch.image.image_id}"
        + (f" (gpu-transcribe {image.version}, {image.model}, created {image.created_at:%Y-%m-%d})" if image
           and image.created_at else ""),
        highlight=False,
        soft_wrap=True,
    )  # fmt: skip
    table = Table(title="launch order (nothing launched)")
    for header in ("#", "market", "type", "zone", "spot $/h", "on-demand $/h"):
        table.add_column(header, justify="right" if "$" in header or header == "#" else "left")
    for n, option in enumerate(launch.options, 1):
        on_demand = option.zone.on_demand.price_usd_per_hour if option.zone.on_demand else None
        table.add_row(
            str(n),
            option.market,
            option.instance_type,
            option.zone.zone,
            _money(option.zone.spot_price_usd_per_hour),
            _money(on_demand),
        )
    console.print(table)
    for skipped in launch.skipped:
        console.print(f"skipped: {skipped.market} in {skipped.zone} ({skipped.error_code})", highlight=False)
    console.print("tags: " + ", ".join(f"{k}={v}" for k, v in launch.tags), highlight=False, soft_wrap=True)
    console.print(
        f"estimated cost: {_money(plan.estimated_cost_usd)} for a {plan.estimate_s:.0f} s run at the first "
        "option's price (EC2 bills per second, 60 s minimum); a real run's summary reports billed seconds",
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"outputs to: {plan.s3_url or 'local files only (--no-s3)'}", highlight=False)
    for problem in plan.input_problems:
        console.print(f"[bold red]error:[/] {problem}", highlight=False, soft_wrap=True)
