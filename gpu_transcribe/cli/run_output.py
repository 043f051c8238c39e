"""How ``gpu-transcribe run`` looks: the engine's events as a live spinner and bars on stderr while it runs,
then the summary (a row per file, the instances and their cost, the phases, one line per problem) on stderr,
and ``--dry-run``'s plan on stdout.

Part of :mod:`gpu_transcribe.cli.run`; everything is printed with :mod:`gpu_transcribe.cli.output`.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from gpu_transcribe.cli.output import (
    add_row,
    format_phases,
    money,
    plain,
    print_error,
    print_labelled,
    print_lines,
    print_table,
)
from gpu_transcribe.errors import OutputExistsError
from gpu_transcribe.run.engine_runner import ENGINE_STARTED

if TYPE_CHECKING:
    from gpu_transcribe.aws.ec2.launch_plan import LaunchPlan
    from gpu_transcribe.correct.config import CorrectionResult
    from gpu_transcribe.run import CloudRunResult, DryRunPlan
    from gpu_transcribe.run.engine_runner import EngineRun, FileOutcome

# --- while it runs ---------------------------------------------------------------------------------------


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
        print_lines([message], self._console, style="dim")

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


# --- the summary, the dry run ---------------------------------------------------------------------------


def _files_table(title: str) -> Table:
    """The per-file table of a run's summary, made to read at 80 columns: no borders, two-line headers, the
    numbers never wrapped, so that the file name keeps every other column (38 characters at 80 columns) and
    folds only beyond that. Output paths are not in it: they go to stdout, one a line."""
    table = Table(
        title=plain(title),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("file", overflow="fold")
    table.add_column("language", no_wrap=True)
    table.add_column("audio\ns", justify="right", no_wrap=True)
    table.add_column("transcribe\ns", justify="right", no_wrap=True)
    table.add_column("real-time\nfactor", justify="right", no_wrap=True)
    return table


def _add_file_row(table: Table, name: str, outcome: FileOutcome | None, ok: bool) -> None:
    """A row of :func:`_files_table`: the file's numbers and language, or the name marked failed (the
    reason follows the table as an ``error:`` line)."""
    if not ok or outcome is None:
        add_row(table, Text(f"{name} (failed)", style="red"), "-", "-", "-", "-")
        return
    rtf = outcome.real_time_factor
    add_row(
        table,
        name,
        outcome.language or "-",
        f"{outcome.duration_s:.1f}" if outcome.duration_s is not None else "-",
        f"{outcome.transcribe_s:.2f}" if outcome.transcribe_s is not None else "-",
        f"{rtf:.3f}" if rtf is not None else "-",
    )


def engine_summary_table(run: EngineRun) -> Table:
    """One row per file: its language (given or detected), audio seconds, transcription seconds and
    real-time factor, or that it failed; the title names the model, device, algorithm and formats."""
    formats = next((", ".join(f.outputs) for f in run.files if f.outputs), "")
    table = _files_table(
        f"{run.model} on {run.device} {run.dtype}, {run.algorithm}, model load {run.load_s:.1f} s"
        + (f"; outputs: {formats}" if formats else "")
    )
    for f in run.files:
        _add_file_row(table, f.audio.rsplit("/", 1)[-1], f, f.ok)
    return table


def print_engine_summary(run: EngineRun, console: Console) -> None:
    """``run --local``'s end: :func:`engine_summary_table` and one error line per failed file."""
    print_table(engine_summary_table(run), console)
    for f in run.failed:
        print_labelled("error", f.message, console)


def correction_line(result: CorrectionResult) -> str:
    """One line for a file's correction: counts, tokens and cost, or why it was skipped or failed."""
    name = result.source.name if result.source is not None else "transcript"
    if result.status != "corrected":
        return f"correction of {name} {result.status}: {result.reason}"
    line = (
        f"corrected {name} with {result.model_id}: {result.segments} segments, {result.segments_changed} "
        f"changed, {result.segments_refused} kept raw by the change limit, {result.pieces_kept_raw} of "
        f"{result.pieces} piece(s) kept raw; tokens {result.input_tokens:,} in, "
        f"{result.output_tokens:,} out, cost {money(result.cost_usd)}"
    )
    return line + (f" ({result.reason})" if result.reason else "")


def print_corrections(results: Iterable[CorrectionResult], console: Console) -> None:
    """``run --correct``: :func:`correction_line` per file (a warning colour when it did not correct)."""
    for result in results:
        if result.status == "corrected":
            print_lines([correction_line(result)], console)
        else:
            print_labelled("warning", correction_line(result), console, style="yellow")


def print_problems(problems: Iterable[object], console: Console) -> None:
    """One line per problem: ``skipped:`` for an input passed over because its output exists (not a
    failure), ``error:`` for anything else (an input that could not be used...)."""
    for problem in problems:
        if isinstance(problem, OutputExistsError):
            print_labelled("skipped", str(problem), console, style="yellow")
        else:
            print_labelled("error", str(problem), console)


def print_cloud_summary(result: CloudRunResult, console: Console) -> None:
    """The end of ``run``: a row per file (language, duration, transcription seconds, real-time factor; see
    :func:`_files_table`), the S3 folders written, a row per instance (type, zone, market, price, billed
    seconds, cost), each phase's seconds, then one ``error:`` line per problem."""
    formats = next((", ".join(f.outputs) for f in result.files if f.outputs), "")
    files = _files_table(
        f"run {result.run_id}"
        + (f" on {result.host}" if result.host else "")
        + (f"; outputs: {formats}" if formats else "")
    )
    for f in result.files:
        _add_file_row(files, f.audio.path.name, f.outcome, f.ok)
    print_table(files, console)
    uploaded: dict[str, int] = {}
    for upload in (u for f in result.files for u in f.uploads):
        folder = upload.url.rsplit("/", 1)[0] + "/"
        uploaded[folder] = uploaded.get(folder, 0) + 1
    for folder, count in uploaded.items():
        print_lines([f"s3: {folder} ({count} objects)"], console)
    if result.instances:
        machines = Table(title="instances")
        for header in ("instance", "type", "zone", "market", "$/hour", "billed s", "cost"):
            machines.add_column(
                header, justify="right" if header in ("$/hour", "billed s", "cost") else "left"
            )
        for i in result.instances:
            add_row(
                machines,
                i.instance_id + (" (lost)" if i.interrupted else ""),
                i.instance_type,
                i.zone,
                i.market,
                money(i.price_usd_per_hour),
                f"{i.billed_s:.0f}",
                money(i.cost_usd),
            )
        print_table(machines, console)
        print_lines([f"total cost: {money(result.cost_usd)}"], console, soft_wrap=False)
    print_lines([f"phases: {format_phases(result.phases_s.items())}"], console)
    for note in result.notes:
        print_lines([f"note: {note}"], console)
    for lost in result.lost:
        print_labelled("lost", str(lost), console, style="yellow")
    print_problems(result.input_problems, console)
    print_problems(
        (
            f"{f.audio.path}: "
            + (f.outcome.message if f.outcome is not None else "not transcribed (the instance was lost)")
            for f in result.failed_files
        ),
        console,
    )
    if result.upload_error is not None:
        print_problems([f"{result.upload_error} (the transcripts are kept locally)"], console)
    if result.teardown_error is not None:
        print_problems([result.teardown_error], console)


def print_dry_run(plan: DryRunPlan, console: Console, errors: Console) -> None:
    """``run --dry-run``: first the input files that cannot be used (on ``errors``), then what would be
    launched, where, in what order, with which tags, at what cost, as far as it could be planned (on
    ``console``); then one ``error:`` line (on ``errors``) for each thing a real run would stop at
    (:attr:`DryRunPlan.missing`)."""
    print_problems(plan.input_problems, errors)
    launch = plan.plan
    size_mb = sum(f.size_bytes for f in plan.files) / 1e6
    if launch is None:
        print_lines(
            [
                f"would transcribe {len(plan.files)} file(s) ({size_mb:.1f} MB); the launch could not be "
                "planned (below)"
            ],
            console,
        )
    else:
        _print_launch_plan(plan, launch, size_mb, console)
    for missing in plan.missing:
        print_error(missing, errors)


def _print_launch_plan(plan: DryRunPlan, launch: LaunchPlan, size_mb: float, console: Console) -> None:
    """The launch part of :func:`print_dry_run`."""
    spec = launch.spec
    image = plan.image
    about = ""
    if image and image.created_at:
        about = f" (gpu-transcribe {image.version}, {image.model}, created {image.created_at:%Y-%m-%d})"
    print_lines(
        [
            f"would transcribe {len(plan.files)} file(s) ({size_mb:.1f} MB) on "
            f"{', '.join(spec.instance_types)} ({spec.market}) in {launch.image.image_id}{about}"
        ],
        console,
    )
    table = Table(title="launch order (nothing launched)")
    for header in ("#", "market", "type", "zone", "spot $/h", "on-demand $/h"):
        table.add_column(header, justify="right" if "$" in header or header == "#" else "left")
    for n, option in enumerate(launch.options, 1):
        on_demand = option.zone.on_demand.price_usd_per_hour if option.zone.on_demand else None
        add_row(
            table,
            str(n),
            option.market,
            option.instance_type,
            option.zone.zone,
            money(option.zone.spot_price_usd_per_hour),
            money(on_demand),
        )
    print_table(table, console)
    for skipped in launch.skipped:
        print_lines(
            [f"skipped: {skipped.market} in {skipped.zone} ({skipped.error_code})"],
            console,
            soft_wrap=False,
        )
    print_lines(
        ["tags: " + ", ".join(f"{k}={v}" for k, v in launch.tags)],
        console,
    )
    for line in (
        f"ssh: port 22 open to {spec.ssh_cidr} only (setting ssh_cidr)",
        f"outputs: {plan.s3_url}" if plan.s3_url else "outputs: not uploaded (--no-s3, or no bucket set)",
    ):
        print_lines([line], console)
    print_lines(
        [
            f"estimated cost: {money(plan.estimated_cost_usd)} for a {plan.estimate_s:.0f} s run at the "
            "first option's price (EC2 bills per second, 60 s minimum); a real run's summary reports billed "
            "seconds"
        ],
        console,
    )
    print_lines([f"outputs to: {plan.s3_url or 'local files only'}"], console, soft_wrap=False)
