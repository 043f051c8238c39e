"""How the CLI shows results and errors: one function per result type, printing Rich tables and lines.

Part of the CLI layer. Each function takes the result (a frozen data class from the orchestration modules) and
the console to print on: the CLI passes stdout for results and stderr for summaries and errors. Live progress
is :mod:`gpu_transcribe.cli.progress`. Only light modules are imported here; the result types are for type
checking.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from gpu_transcribe.errors import GpuTranscribeError, OutputExistsError, ProvisionError

if TYPE_CHECKING:
    from gpu_transcribe.account.catalog import ImageList, PruneReport, ZonePrices
    from gpu_transcribe.account.cleanup import CleanupReport
    from gpu_transcribe.aws.ec2.launch_plan import LaunchPlan
    from gpu_transcribe.build_ami import BuildPlan, BuildResult
    from gpu_transcribe.correct.config import CorrectionResult
    from gpu_transcribe.run import CloudRunResult, DryRunPlan
    from gpu_transcribe.run.engine_runner import EngineRun, FileOutcome
    from gpu_transcribe.settings import Settings


def print_error(error: GpuTranscribeError, console: Console) -> None:
    """``error: <message>`` as one line; for a failed provisioning, its last output lines first."""
    if isinstance(error, ProvisionError) and error.output_tail.strip():
        console.print("--- last lines of the provisioning ---", style="dim", highlight=False)
        print_lines([error.output_tail], console)
    console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)


def print_warning(message: str, console: Console) -> None:
    """``warning: <message>`` as one line (not fatal: the command goes on)."""
    console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def print_unexpected_error(error: BaseException, console: Console) -> None:
    """An error that is not a :class:`GpuTranscribeError` (a bug) as one line, with how to see more."""
    message = " ".join(str(error).split())
    console.print(
        f"[bold red]error:[/] unexpected {type(error).__name__}: {escape(message)} "
        "(rerun with gpu-transcribe --debug ... to see the traceback)",
        highlight=False,
        soft_wrap=True,
    )


def to_json(report: Any) -> str:
    """A frozen dataclass result (``ZonePrices``, ``ImageList``, ``CleanupReport``...) as indented JSON: its
    fields, nested dataclasses as objects, tuples as lists, times as ISO 8601 strings, paths as strings."""
    import dataclasses
    import json

    def convert(value: object) -> object:
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, Path):
            return str(value)
        raise TypeError(f"{type(value).__name__} is not JSON")

    return json.dumps(dataclasses.asdict(report), indent=2, default=convert, ensure_ascii=False)


def print_json(report: Any, console: Console) -> None:
    """``report`` as JSON (:func:`to_json`): plain text, never wrapped or highlighted, for scripts."""
    console.print(to_json(report), markup=False, highlight=False, soft_wrap=True)


def plain(value: object) -> Text:
    """``value`` as literal text for a table cell or title: brackets are not Rich markup, nothing is
    highlighted (paths, file names, S3 keys, messages and setting values are printed as they are)."""
    return Text(str(value))


def _add_row(table: Table, *cells: object) -> None:
    """Add a row whose cells are printed literally (see :func:`plain`); a :class:`Text` is kept as is."""
    table.add_row(*(c if isinstance(c, Text) else plain(c) for c in cells))


def print_lines(lines: Iterable[str], console: Console) -> None:
    """Each of ``lines`` as is: no markup, no highlighting, never wrapped (paths, plan and result lines)."""
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def print_output_paths(paths: Iterable[Path | str], console: Console) -> None:
    """One written transcript per line (stdout of ``run``, for scripts)."""
    print_lines((str(p) for p in paths), console)


def format_phases(phases: Iterable[tuple[str, float]]) -> str:
    """``wheel 1.5 s, launch 42.0 s, ...`` from ``(phase, seconds)`` pairs."""
    return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases)


def _money(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"${value:.{digits}f}"


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "?"


# --- settings, zones, cleanup --------------------------------------------------------------------------


def settings_json(settings: Settings) -> dict[str, dict[str, object]]:
    """``config show --json``: ``{setting: {"value": typed value, "source": where it came from}}``; lists
    for sequences, an object for ``tags``, ``null`` for an unset value."""
    out: dict[str, dict[str, object]] = {}
    for name, _text, source in settings.rows():
        value = getattr(settings, name)
        if isinstance(value, tuple):
            pairs = all(isinstance(v, tuple) for v in value)
            value = {str(k): v for k, v in value} if value and pairs else list(value)
        elif value is not None and not isinstance(value, (str, int, float, bool)):
            value = str(value)
        out[name] = {"value": value, "source": source}
    return out


#: Below this many columns, or not on a terminal, ``config show`` prints ``name = value  (source)`` lines.
SETTINGS_TABLE_MIN_WIDTH = 120


def print_settings(settings: Settings, config_files: Sequence[Path], console: Console) -> None:
    """``config show``: each setting's value, its source and environment variable, then the config files.

    A table on a terminal at least :data:`SETTINGS_TABLE_MIN_WIDTH` columns wide; otherwise (a pipe, a
    narrow terminal) one ``name = value  (source)`` line per setting, so no value is ever cut.
    """
    from gpu_transcribe.settings import env_var

    rows = settings.rows()
    if console.is_terminal and console.width >= SETTINGS_TABLE_MIN_WIDTH:
        table = Table(title="gpu-transcribe settings", title_justify="left")
        table.add_column("setting", no_wrap=True)
        table.add_column("value", overflow="fold", min_width=12)
        table.add_column("source", overflow="fold", min_width=8)
        table.add_column("environment variable", no_wrap=True, style="dim")
        for name, value, source in rows:
            _add_row(table, name, value, source, env_var(name))
        console.print(table)
    else:
        print_lines((f"{name} = {value}  ({source})" for name, value, source in rows), console)
    files = ", ".join(f"{p} ({'read' if p.is_file() else 'absent'})" for p in config_files)
    console.print(f"config files, first wins: {files}", markup=False, highlight=False, soft_wrap=True)


def print_zones(report: ZonePrices, console: Console) -> None:
    """``zones``: a row per (type, zone) with spot and on-demand $/h and the saving, then the price sources.
    Prints nothing when no zone offers any of the types (the error says so)."""
    if not report.rows:
        return
    table = Table(title=plain(f"zones in {report.region}, cheapest spot first"), title_justify="left")
    for header in ("zone", "instance type", "spot $/h", "on-demand $/h", "saving"):
        right = "$" in header or header == "saving"
        table.add_column(header, no_wrap=True, justify="right" if right else "left")
    for row in report.rows:
        od = row.on_demand.price_usd_per_hour if row.on_demand else None
        spot = row.spot_price_usd_per_hour
        saving = row.saving_fraction
        _add_row(
            table,
            row.zone,
            row.instance_type,
            f"{spot:.4f}" if spot is not None else "-",
            f"{od:.4f}" if od is not None else "-",
            f"{saving:.0%}" if saving is not None else "-",
        )
    console.print(table)
    for source in report.on_demand_sources:
        console.print(f"on-demand prices: {source}", markup=False, highlight=False, soft_wrap=True)


def print_cleanup(report: CleanupReport, console: Console) -> None:
    """``cleanup``: a row per resource found (run, kind, id, age, state, owner, action, reason)."""
    from gpu_transcribe.account.cleanup import format_age

    if not report.outcomes:
        console.print(f"nothing of gpu-transcribe's found in {report.region}", markup=False, highlight=False)
        _print_pipelines(report, console)
        return
    title = f"gpu-transcribe resources in {report.region}" + (
        " (dry run: nothing changed)" if report.dry_run else ""
    )
    table = Table(title=plain(title), title_justify="left")
    for header in ("run id", "kind", "id", "age", "state", "owner", "action", "reason"):
        table.add_column(header, overflow="fold", no_wrap=header in ("kind", "age", "action"))
    for outcome in report.outcomes:
        res = outcome.resource
        age = res.age_s(report.now)
        _add_row(
            table,
            res.run_id,
            res.kind,
            res.resource_id,
            format_age(age) if age is not None else "?",
            res.state or "-",
            "you" if res.owner_arn == report.caller_arn else (res.owner_arn or "-"),
            outcome.action,
            outcome.reason,
        )
    console.print(table)
    _print_pipelines(report, console)


def _print_pipelines(report: CleanupReport, console: Console) -> None:
    """The pipeline stacks ``cleanup`` found: listed, never removed (``pipeline destroy`` does that)."""
    from gpu_transcribe.aws.models import TAG_OWNER
    from gpu_transcribe.aws.pipeline.models import PIPELINE_STACK_PREFIX

    lines = []
    for stack in report.pipelines:
        owner = dict(stack.tags).get(TAG_OWNER, "")
        who = "you" if owner == report.caller_arn else (owner or "owner unknown")
        name = stack.name.removeprefix(PIPELINE_STACK_PREFIX)
        lines.append(
            f"pipeline {name}: stack {stack.name} {stack.status}, {who}; not removed by cleanup "
            f"(gpu-transcribe pipeline destroy --name {name})"
        )
    if report.pipelines_note:
        lines.append(f"note: {report.pipelines_note}")
    print_lines(lines, console)


# --- images and build-ami ------------------------------------------------------------------------------


def print_images(listing: ImageList, console: Console) -> None:
    """``images``: a row per image of ours, newest first, with the live instances using it."""
    if not listing.images:
        console.print(
            f"no gpu-transcribe images in {listing.region}; build one with `gpu-transcribe build-ami`",
            markup=False,
            highlight=False,
        )
        return
    table = Table(
        title=plain(f"gpu-transcribe images in {listing.region}, newest first"), title_justify="left"
    )
    for header in ("id", "created", "version", "model", "revision", "size", "state", "in use"):
        table.add_column(header, no_wrap=header in ("id", "created", "size", "state"), overflow="fold")
    for use in listing.images:
        image = use.image
        _add_row(
            table,
            image.image_id,
            _when(image.created_at),
            image.version,
            image.model,
            image.revision or "-",
            f"{image.size_gib} GiB",
            image.state,
            f"yes: {', '.join(use.used_by)}" if use.used_by else "no",
        )
    console.print(table)


def print_prune(report: PruneReport, console: Console) -> None:
    """``images prune``: a row per image with the decision, its reason and what removing it did."""
    if not report.outcomes:
        console.print(f"no gpu-transcribe images in {report.region}", markup=False, highlight=False)
        return
    title = f"images prune --keep {report.keep} in {report.region}" + (
        " (dry run: nothing changed)" if report.dry_run else ""
    )
    table = Table(title=plain(title), title_justify="left")
    for header in ("id", "created", "version", "model", "action", "reason", "done"):
        table.add_column(header, overflow="fold", no_wrap=header in ("id", "created", "action"))
    for outcome in report.outcomes:
        decision, removal = outcome.decision, outcome.removal
        image = decision.image
        action = "would remove" if report.dry_run and decision.action == "remove" else decision.action
        if removal is None:
            done = "-"
        elif removal.deregistered:
            done = f"deregistered, {len(removal.deleted_snapshots)} snapshot(s) deleted"
        else:
            done = "already gone"
        _add_row(
            table,
            image.image_id,
            _when(image.created_at),
            image.version,
            image.model,
            action,
            decision.reason,
            done,
        )
    console.print(table)


def print_build_plan(plan: BuildPlan, console: Console) -> None:
    """``build-ami --dry-run``: the base image, the builder, its tries, the image name, the provisioning
    command and the tags."""
    from gpu_transcribe.ssh import command_line

    launch = plan.launch
    spec = launch.spec
    volume_gib = max(spec.root_volume_size_gib or 0, launch.image.root_volume_size_gib)
    tries = []
    for option in launch.options:
        price = option.zone.spot_price_usd_per_hour
        shown = f" (spot ${price:.4f}/h)" if option.market == "spot" and price is not None else ""
        tries.append(f"{option.market} {option.instance_type} in {option.zone.zone}{shown}")
    rows = [
        ("base image", f"{plan.base_image_id} {launch.image.name} (from {plan.base_image_source})"),
        ("builder", f"{', '.join(spec.instance_types)}, {spec.market}, run {spec.run_id}"),
        ("root volume", f"{volume_gib} GiB gp3, encrypted"),
        ("tries", "; ".join(tries)),
        ("image name", plan.image_name),
        ("install prefix", plan.remote_prefix),
        ("provisioning", command_line(plan.provision_argv)),
        ("tags", ", ".join(f"{k}={v}" for k, v in launch.tags)),
    ]
    console.print("build-ami plan (dry run: nothing launched)", style="bold")
    print_lines((f"{key}: {value}" for key, value in rows), console)


def build_result_lines(result: BuildResult, region: str) -> list[str]:
    """``build-ami``'s result, one line each: the image, its size and snapshots, its contents (from the
    manifest), the warm-up, the builder, the phases' seconds and the builder's cost."""
    image, manifest, builder = result.image, result.manifest, result.instance
    warmup = manifest.get("warmup") or {}
    cost = f"${result.cost_usd:.4f}" if result.cost_usd is not None else "unknown (no price)"
    price = (
        f"${builder.price_usd_per_hour:.4f}/h" if builder.price_usd_per_hour is not None else "price unknown"
    )
    revision = f"@{manifest.get('revision')}" if manifest.get("revision") else ""
    return [
        f"image: {image.image_id} ({image.name}) in {region}",
        f"size: {image.size_gib} GiB in {len(image.snapshot_ids)} snapshot(s): "
        + ", ".join(image.snapshot_ids),
        f"contents: gpu-transcribe {manifest.get('gpu_transcribe')}, {manifest.get('model')}{revision}"
        f", torch {manifest.get('torch')}, CUDA {manifest.get('cuda') or '-'}"
        f", driver {manifest.get('driver') or '-'}",
        f"warm-up: {warmup.get('device')} {warmup.get('dtype')}, load {warmup.get('load_s')} s, "
        f"transcribe {warmup.get('transcribe_s')} s: {warmup.get('text', '')!r}",
        f"builder: {builder.instance_id} {builder.market} {builder.instance_type} in {builder.zone} "
        f"at {price}",
        f"phases: {format_phases(result.phases)} (total {result.total_s:.1f} s)",
        f"cost: {cost} for {builder.billed_s:.0f} s of the builder (image storage is billed per GiB-month)",
    ]


# --- run -------------------------------------------------------------------------------------------------


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
        _add_row(table, Text(f"{name} (failed)", style="red"), "-", "-", "-", "-")
        return
    rtf = outcome.real_time_factor
    _add_row(
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
    console.print(engine_summary_table(run))
    for f in run.failed:
        console.print(f"[bold red]error:[/] {escape(f.message)}", highlight=False, soft_wrap=True)


def correction_line(result: CorrectionResult) -> str:
    """One line for a file's correction: counts, tokens and cost, or why it was skipped or failed."""
    name = result.source.name if result.source is not None else "transcript"
    if result.status != "corrected":
        return f"correction of {name} {result.status}: {result.reason}"
    line = (
        f"corrected {name} with {result.model_id}: {result.segments} segments, {result.segments_changed} "
        f"changed, {result.segments_refused} kept raw by the change limit, {result.pieces_kept_raw} of "
        f"{result.pieces} piece(s) kept raw; tokens {result.input_tokens:,} in, "
        f"{result.output_tokens:,} out, cost {_money(result.cost_usd)}"
    )
    return line + (f" ({result.reason})" if result.reason else "")


def print_corrections(results: Iterable[CorrectionResult], console: Console) -> None:
    """``run --correct``: :func:`correction_line` per file (a warning colour when it did not correct)."""
    for result in results:
        style = "" if result.status == "corrected" else "[yellow]warning:[/] "
        console.print(f"{style}{escape(correction_line(result))}", highlight=False, soft_wrap=True)


def print_problems(problems: Iterable[object], console: Console) -> None:
    """One line per problem: ``skipped:`` for an input passed over because its output exists (not a
    failure), ``error:`` for anything else (an input that could not be used...)."""
    for problem in problems:
        label = "[yellow]skipped:[/]" if isinstance(problem, OutputExistsError) else "[bold red]error:[/]"
        console.print(f"{label} {escape(str(problem))}", highlight=False, soft_wrap=True)


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
    console.print(files)
    uploaded: dict[str, int] = {}
    for upload in (u for f in result.files for u in f.uploads):
        folder = upload.url.rsplit("/", 1)[0] + "/"
        uploaded[folder] = uploaded.get(folder, 0) + 1
    for folder, count in uploaded.items():
        console.print(f"s3: {folder} ({count} objects)", markup=False, highlight=False, soft_wrap=True)
    if result.instances:
        machines = Table(title="instances")
        for header in ("instance", "type", "zone", "market", "$/hour", "billed s", "cost"):
            machines.add_column(
                header, justify="right" if header in ("$/hour", "billed s", "cost") else "left"
            )
        for i in result.instances:
            _add_row(
                machines,
                i.instance_id + (" (lost)" if i.interrupted else ""),
                i.instance_type,
                i.zone,
                i.market,
                _money(i.price_usd_per_hour),
                f"{i.billed_s:.0f}",
                _money(i.cost_usd),
            )
        console.print(machines)
        console.print(f"total cost: {_money(result.cost_usd)}", markup=False, highlight=False)
    console.print(
        f"phases: {format_phases(result.phases_s.items())}", markup=False, highlight=False, soft_wrap=True
    )
    for note in result.notes:
        console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    for lost in result.lost:
        console.print(f"[yellow]lost:[/] {escape(str(lost))}", highlight=False, soft_wrap=True)
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
        console.print(
            f"would transcribe {len(plan.files)} file(s) ({size_mb:.1f} MB); the launch could not be planned "
            "(below)",
            markup=False,
            highlight=False,
            soft_wrap=True,
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
    console.print(
        f"would transcribe {len(plan.files)} file(s) ({size_mb:.1f} MB) on {', '.join(spec.instance_types)} "
        f"({spec.market}) in {launch.image.image_id}{about}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    table = Table(title="launch order (nothing launched)")
    for header in ("#", "market", "type", "zone", "spot $/h", "on-demand $/h"):
        table.add_column(header, justify="right" if "$" in header or header == "#" else "left")
    for n, option in enumerate(launch.options, 1):
        on_demand = option.zone.on_demand.price_usd_per_hour if option.zone.on_demand else None
        _add_row(
            table,
            str(n),
            option.market,
            option.instance_type,
            option.zone.zone,
            _money(option.zone.spot_price_usd_per_hour),
            _money(on_demand),
        )
    console.print(table)
    for skipped in launch.skipped:
        console.print(
            f"skipped: {skipped.market} in {skipped.zone} ({skipped.error_code})",
            markup=False,
            highlight=False,
        )
    console.print(
        "tags: " + ", ".join(f"{k}={v}" for k, v in launch.tags),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    for line in (
        f"ssh: port 22 open to {spec.ssh_cidr} only (setting ssh_cidr)",
        f"outputs: {plan.s3_url}" if plan.s3_url else "outputs: not uploaded (--no-s3, or no bucket set)",
    ):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"estimated cost: {_money(plan.estimated_cost_usd)} for a {plan.estimate_s:.0f} s run at the first "
        "option's price (EC2 bills per second, 60 s minimum); a real run's summary reports billed seconds",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"outputs to: {plan.s3_url or 'local files only'}", markup=False, highlight=False)
