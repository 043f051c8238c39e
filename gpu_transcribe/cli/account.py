"""The account commands: ``config show``, ``zones``, ``cleanup``, ``images`` and ``images prune``; their
options, their groups (``config``, ``images``) and how their results look (tables on stdout, or JSON).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gpu_transcribe.account.catalog import (
    ImageList,
    PruneReport,
    ZonePrices,
    list_images,
    prune_images,
    zone_prices,
)
from gpu_transcribe.cli import options as opt
from gpu_transcribe.cli.base import Typer, cli_settings
from gpu_transcribe.cli.output import (
    add_row,
    event_printer,
    plain,
    print_json,
    print_lines,
    print_table,
    stderr,
    stdout,
)
from gpu_transcribe.settings import Settings, default_config_files, env_var, parse_duration_s

if TYPE_CHECKING:
    from gpu_transcribe.account.cleanup import CleanupReport

config_app = Typer(help="Inspect the settings.", no_args_is_help=True)
images_app = Typer(
    help="List gpu-transcribe's images (AMIs), or prune old ones.", invoke_without_command=True
)

# --- options ---------------------------------------------------------------------------------------------

SettingsJson = Annotated[
    bool,
    typer.Option("--json", help='Print {"setting": {"value": ..., "source": ...}} as JSON, for scripts.'),
]
AllOwners = Annotated[bool, typer.Option("--all-owners", help="Include other callers' resources.")]
OlderThan = Annotated[
    str | None,
    typer.Option(
        "--older-than",
        metavar="AGE",
        help="Only resources at least this old (2h, 90m, 0); default: max lifetime + 10 minutes.",
    ),
]
RunId = Annotated[
    str | None, typer.Option("--run-id", metavar="RUN", help="Only this run (any age unless --older-than).")
]
Keep = Annotated[
    int, typer.Option("--keep", min=0, help="Images to keep per model (the newest available ones).")
]


# --- config show, zones, cleanup ----------------------------------------------------------------------


@config_app.command("show")
def config_show(
    region: opt.Region = None, aws_profile: opt.Profile = None, as_json: SettingsJson = False
) -> None:
    """Print the effective settings and where each one came from.

    Its source: a flag, the environment, a file, or the default."""
    settings = cli_settings(warn_ssh_cidr=True, region=region, aws_profile=aws_profile)
    if as_json:
        print_lines([json.dumps(settings_json(settings), indent=2)], stdout)
        return
    print_settings(settings, default_config_files(), stdout)


def zones(
    instance_type: opt.InstanceType = None,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
    json: opt.Json = False,
) -> None:
    """List each instance type's zones, cheapest spot price first.

    With the on-demand price and the saving."""
    settings = cli_settings(
        region=region, aws_profile=aws_profile, instance_types=",".join(instance_type or []) or None
    )
    with stderr.status(escape(f"reading spot prices in {settings.region}")):
        report = zone_prices(settings)
    (print_json if json else print_zones)(report, stdout)
    if report.error is not None:
        raise report.error


def cleanup_command(
    all_owners: AllOwners = False,
    older_than: OlderThan = None,
    run_id: RunId = None,
    dry_run: opt.DryRun = False,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
    json: opt.Json = False,
) -> None:
    """Remove what gpu-transcribe left in AWS, found by its tags.

    Instances, volumes, key pairs and security groups."""
    # Function-level: account.cleanup imports cryptography through aws.models (~50 ms off --help).
    from gpu_transcribe.account.cleanup import cleanup

    settings = cli_settings(region=region, aws_profile=aws_profile)
    report = cleanup(
        settings,
        all_owners=all_owners,
        older_than_s=parse_duration_s(older_than) if older_than is not None else None,
        run_id=run_id,
        dry_run=dry_run,
        on_progress=event_printer(stderr),
    )
    (print_json if json else print_cleanup)(report, stdout)
    if report.error is not None:
        raise report.error


@images_app.callback()
def images_list(
    typer_ctx: typer.Context,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
    json: opt.Json = False,
) -> None:
    """List our images: id, created, version, model, revision, size, and whether a live instance uses it."""
    if typer_ctx.invoked_subcommand is not None:
        return
    listing = list_images(cli_settings(region=region, aws_profile=aws_profile))
    (print_json if json else print_images)(listing, stdout)


@images_app.command("prune")
def images_prune(
    keep: Keep = 2,
    dry_run: opt.DryRun = False,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Remove images beyond the newest N of each model.

    Deregisters them and deletes their snapshots. Images in use by a live instance, and images still being
    created, are kept."""
    report = prune_images(cli_settings(region=region, aws_profile=aws_profile), keep=keep, dry_run=dry_run)
    print_prune(report, stdout)
    if report.error is not None:
        raise report.error


# --- how the results look --------------------------------------------------------------------------------


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "?"


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
    rows = settings.rows()
    if console.is_terminal and console.width >= SETTINGS_TABLE_MIN_WIDTH:
        table = Table(title="gpu-transcribe settings", title_justify="left")
        table.add_column("setting", no_wrap=True)
        table.add_column("value", overflow="fold", min_width=12)
        table.add_column("source", overflow="fold", min_width=8)
        table.add_column("environment variable", no_wrap=True, style="dim")
        for name, value, source in rows:
            add_row(table, name, value, source, env_var(name))
        print_table(table, console)
    else:
        print_lines((f"{name} = {value}  ({source})" for name, value, source in rows), console)
    files = ", ".join(f"{p} ({'read' if p.is_file() else 'absent'})" for p in config_files)
    print_lines([f"config files, first wins: {files}"], console)


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
        add_row(
            table,
            row.zone,
            row.instance_type,
            f"{spot:.4f}" if spot is not None else "-",
            f"{od:.4f}" if od is not None else "-",
            f"{saving:.0%}" if saving is not None else "-",
        )
    print_table(table, console)
    print_lines((f"on-demand prices: {source}" for source in report.on_demand_sources), console)


def print_cleanup(report: CleanupReport, console: Console) -> None:
    """``cleanup``: a row per resource found (run, kind, id, age, state, owner, action, reason)."""
    # Function-level: account.cleanup imports cryptography through aws.models (~50 ms off --help).
    from gpu_transcribe.account.cleanup import format_age

    if not report.outcomes:
        print_lines([f"nothing of gpu-transcribe's found in {report.region}"], console, soft_wrap=False)
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
        add_row(
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
    print_table(table, console)
    _print_pipelines(report, console)


def _print_pipelines(report: CleanupReport, console: Console) -> None:
    """The pipeline stacks ``cleanup`` found: listed, never removed (``pipeline destroy`` does that)."""
    # Function-level: aws.models imports cryptography (~30 ms off --help).
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


def print_images(listing: ImageList, console: Console) -> None:
    """``images``: a row per image of ours, newest first, with the live instances using it."""
    if not listing.images:
        print_lines(
            [f"no gpu-transcribe images in {listing.region}; build one with `gpu-transcribe build-ami`"],
            console,
            soft_wrap=False,
        )
        return
    table = Table(
        title=plain(f"gpu-transcribe images in {listing.region}, newest first"), title_justify="left"
    )
    for header in ("id", "created", "version", "model", "revision", "size", "state", "in use"):
        table.add_column(header, no_wrap=header in ("id", "created", "size", "state"), overflow="fold")
    for use in listing.images:
        image = use.image
        add_row(
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
    print_table(table, console)


def print_prune(report: PruneReport, console: Console) -> None:
    """``images prune``: a row per image with the decision, its reason and what removing it did."""
    if not report.outcomes:
        print_lines([f"no gpu-transcribe images in {report.region}"], console, soft_wrap=False)
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
        add_row(
            table,
            image.image_id,
            _when(image.created_at),
            image.version,
            image.model,
            action,
            decision.reason,
            done,
        )
    print_table(table, console)
