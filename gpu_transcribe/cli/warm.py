"""``gpu-transcribe server up|status|tunnel|logs|down``: a warm GPU instance of your own running ``serve``.
The ``server`` group, its options, and how its results look (lines on stdout; the orchestration in
:mod:`gpu_transcribe.warm` prints nothing).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from gpu_transcribe.cli import options as opt
from gpu_transcribe.cli.base import EXIT_LEFT_BEHIND, Typer, cli_settings
from gpu_transcribe.cli.output import (
    event_printer,
    money,
    print_error,
    print_json,
    print_lines,
    stderr,
    stdout,
)
from gpu_transcribe.common import ProgressEvent
from gpu_transcribe.errors import TeardownError
from gpu_transcribe_engine.options import DEFAULT_MODEL

if TYPE_CHECKING:
    from gpu_transcribe.instance.lifecycle import SignalCallback
    from gpu_transcribe.warm import DownReport, ServerState, ServerStatus, TunnelInfo

server_app = Typer(
    help="A warm GPU server of your own: up, status, tunnel, logs, down.\n\n`server up` starts `serve` on "
    "an instance that stays until it has been idle (or lived) long enough, or `server down`.",
    no_args_is_help=True,
)

# --- options ---------------------------------------------------------------------------------------------

ServerModel = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        metavar="ID",
        help=f"Whisper model the server loads: a Hugging Face id. Default: setting model ({DEFAULT_MODEL}).",
    ),
]
ServerName = Annotated[
    str, typer.Option("--name", help="The server's name: one server per name, each with its own state file.")
]
ServerMarket = Annotated[
    str | None,
    typer.Option("--market", help="spot, on-demand or spot-then-on-demand; default: the market setting."),
]
ServerPort = Annotated[
    int, typer.Option("--port", min=1, max=65535, help="The server's port on the instance's 127.0.0.1.")
]
ServerIdleStopMin = Annotated[
    int,
    typer.Option(
        "--idle-stop-min", min=1, help="The server powers the instance off after this many minutes idle."
    ),
]
ServerMaxLifetimeH = Annotated[
    float,
    typer.Option(
        "--max-lifetime-h",
        min=0.01,
        max=24.0,
        help="... and this many hours after it started, whatever happens (at most 24).",
    ),
]
LocalPort = Annotated[
    int, typer.Option("--local-port", min=1, max=65535, help="The port on this machine's 127.0.0.1.")
]
LogLines = Annotated[int, typer.Option("--lines", "-n", min=1, help="How many of the last log lines.")]


# --- server: up, status, tunnel, logs, down ----------------------------------------------------------------


@server_app.command("up")
def server_up_command(
    name: ServerName = "default",
    market: ServerMarket = None,
    instance_type: opt.InstanceType = None,
    idle_stop_min: ServerIdleStopMin = 30,
    max_lifetime_h: ServerMaxLifetimeH = 12.0,
    port: ServerPort = 8000,
    model: ServerModel = None,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Launch an instance running `gpu-transcribe serve`.

    It stays running (until idle or too old, or `server down`); prints how to reach it."""
    # Function-level: the warm package adds ~20 ms to every --help.
    from gpu_transcribe.warm import ServerUpRequest, server_up

    settings = cli_settings(
        warn_ssh_cidr=True,
        region=region,
        aws_profile=aws_profile,
        instance_types=",".join(instance_type or []) or None,
        market=market,
        model=model,
    )
    request = ServerUpRequest(
        name=name, port=port, idle_stop_min=idle_stop_min, max_lifetime_h=max_lifetime_h
    )
    with _left_behind_exits_5():
        state = server_up(
            settings,
            request.validated(),
            on_progress=event_printer(stderr),
            on_signal=server_signal_printer(stderr),
        )
    print_lines(up_lines(state), stdout)


@contextlib.contextmanager
def _left_behind_exits_5() -> Iterator[None]:
    """A :class:`TeardownError` (something could not be removed from AWS) exits with ``run``'s status 5."""
    try:
        yield
    except TeardownError as error:
        print_error(error, stderr)
        raise typer.Exit(EXIT_LEFT_BEHIND) from None


@server_app.command("status")
def server_status_command(
    name: ServerName = "default", aws_profile: opt.Profile = None, json: opt.Json = False
) -> None:
    """The server's state, age, cost so far, requests and idle time.

    Its instance's state, age, price and cost so far, the requests served and the idle time."""
    # Function-level: the warm package adds ~20 ms to every --help.
    from gpu_transcribe.warm import server_status

    status = server_status(cli_settings(aws_profile=aws_profile), name, on_progress=event_printer(stderr))
    if json:
        print_json(status, stdout)
    else:
        print_lines(status_lines(status), stdout)


@server_app.command("tunnel")
def server_tunnel_command(
    name: ServerName = "default", local_port: LocalPort = 8000, aws_profile: opt.Profile = None
) -> None:
    """Forward 127.0.0.1:PORT here to the server, until Ctrl-C.

    Over SSH, with the instance's host key pinned."""
    # Function-level: the warm package adds ~20 ms to every --help.
    from gpu_transcribe.warm import run_tunnel

    warn = event_printer(stderr)

    run_tunnel(
        cli_settings(aws_profile=aws_profile),
        name,
        local_port=local_port,
        on_ready=lambda info: print_lines(tunnel_lines(info), stdout),
        on_error=lambda message: warn(ProgressEvent("note", message)),
        on_progress=warn,
    )
    print_lines(["tunnel closed; the server keeps running"], stderr, style="dim", soft_wrap=False)


@server_app.command("logs")
def server_logs_command(
    name: ServerName = "default", lines: LogLines = 100, aws_profile: opt.Profile = None
) -> None:
    """The server's last log lines.

    From its systemd journal, or its log file."""
    # Function-level: the warm package adds ~20 ms to every --help.
    from gpu_transcribe.warm import server_logs

    text = server_logs(
        cli_settings(aws_profile=aws_profile), name, lines=lines, on_progress=event_printer(stderr)
    )
    print_lines([text.rstrip("\n")], stdout)


@server_app.command("down")
def server_down_command(name: ServerName = "default", aws_profile: opt.Profile = None) -> None:
    """Stop the server and remove its resources.

    Terminates its instance, deletes its key pair, security group and state file."""
    # Function-level: the warm package adds ~20 ms to every --help.
    from gpu_transcribe.warm import server_down

    with _left_behind_exits_5():
        report = server_down(cli_settings(aws_profile=aws_profile), name, on_progress=event_printer(stderr))
    print_lines(down_lines(report), stdout)


# --- how it looks ----------------------------------------------------------------------------------------


def _flag(name: str) -> str:
    return "" if name == "default" else f" --name {name}"


def up_lines(state: ServerState) -> list[str]:
    """``server up``'s result: what runs where, its limits, and how to reach it (the tunnel and the key)."""
    price = money(state.price_usd_per_hour)
    return [
        f"server {state.name} is up: {state.instance_id} ({state.market} {state.instance_type} in "
        f"{state.zone}, {price}/h)",
        f"  stops itself after {state.idle_stop_min} min without a request, or {state.max_lifetime_h:g} h "
        f"after it started; `gpu-transcribe server down{_flag(state.name)}` stops it now",
        f"  reach it: `gpu-transcribe server tunnel{_flag(state.name)}` (http://127.0.0.1:8000 here, "
        "OpenAI base URL http://127.0.0.1:8000/v1; --local-port for another port)",
        f"  API key: {state.api_key}  (header: Authorization: Bearer <key>)",
        f"  (also in {state.path}, mode 0600)",
    ]


def tunnel_lines(info: TunnelInfo) -> list[str]:
    """``server tunnel``'s lines once it is open: the URL and how to use the key."""
    return [
        f"tunnel to server {info.name} ({info.instance_id}) open: {info.url}",
        f"  export OPENAI_BASE_URL={info.base_url}",
        f"  export OPENAI_API_KEY={info.api_key}",
        f"  curl -H 'Authorization: Bearer {info.api_key}' -F file=@audio.wav -F model=whisper "
        f"{info.base_url}/audio/transcriptions",
        "  Ctrl-C closes the tunnel (the server keeps running)",
    ]


def status_lines(status: ServerStatus) -> list[str]:
    """``server status`` as lines."""
    # Function-level: account.cleanup imports cryptography through aws.models (~50 ms off --help).
    from gpu_transcribe.account.cleanup import format_age

    state = status.state
    if status.interrupted:
        state = "interrupted (EC2 reclaimed the spot instance)"
    elif status.state_reason and status.state != "running":
        state = f"{status.state} ({status.state_reason})"
    lines = [
        f"server {status.name}: {state}",
        f"  instance  {status.instance_id}, {status.market} {status.instance_type} in {status.zone} "
        f"({status.region})",
        f"  age       {format_age(status.age_s)} (launched {status.launched_at:%Y-%m-%d %H:%M} UTC)",
        f"  price     {money(status.price_usd_per_hour)}/h, {money(status.cost_usd, 3)} so far",
    ]
    if status.health_status is not None:
        ready = "ready" if status.health_status == 200 else f"HTTP {status.health_status or 'no answer'}"
        lines.append(f"  server    {ready}")
    if status.requests_served is not None:
        lines.append(f"  requests  {status.requests_served} served")
    if status.idle_s is not None and status.idle_left_s is not None:
        lines.append(
            f"  idle      {format_age(status.idle_s)}; stops after {status.idle_stop_min} min idle "
            f"({format_age(status.idle_left_s)} left)"
        )
    lines.append(f"  lifetime  {status.max_lifetime_h:g} h ({format_age(status.lifetime_left_s)} left)")
    if status.health_error:
        lines.append(f"  note      {status.health_error}")
    return lines


def down_lines(report: DownReport) -> list[str]:
    """``server down``'s result."""
    if not report.found:
        return [f"no server named {report.name} here; nothing to do"]
    done = ", ".join(f"{o.resource.kind} {o.resource.resource_id}: {o.action}" for o in report.outcomes)
    return [f"server {report.name} is down ({done or 'nothing was left'})"]


def server_signal_printer(console: Console) -> SignalCallback:
    """``server up``'s signal callback: say that everything is being removed."""

    def show(name: str, during_teardown: bool) -> None:
        message = (
            f"{name} received: still cleaning up (the instance is being terminated)"
            if during_teardown
            else f"{name} received: cleaning up (terminating the server's instance), please wait"
        )
        print_lines([message], console, style="bold yellow", soft_wrap=False)

    return show
