"""How ``gpu-transcribe server ...`` prints its results (the orchestration in :mod:`gpu_transcribe.warm`
prints nothing). Results go to stdout, progress to stderr; nothing here is Rich markup (values are printed
literally)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console

from gpu_transcribe.account.cleanup import format_age
from gpu_transcribe.cli.render import print_lines
from gpu_transcribe.instance.lifecycle import SignalCallback

if TYPE_CHECKING:
    from gpu_transcribe.warm import DownReport, ServerState, ServerStatus, TunnelInfo


def _money(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"${value:.{digits}f}"


def _flag(name: str) -> str:
    return "" if name == "default" else f" --name {name}"


def up_lines(state: ServerState) -> list[str]:
    """``server up``'s result: what runs where, its limits, and how to reach it (the tunnel and the key)."""
    price = _money(state.price_usd_per_hour)
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
        f"  price     {_money(status.price_usd_per_hour)}/h, {_money(status.cost_usd, 3)} so far",
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


def print_server_lines(lines: list[str], console: Console) -> None:
    """Print result lines literally."""
    print_lines(lines, console)


def server_signal_printer(console: Console) -> SignalCallback:
    """``server up``'s signal callback: say that everything is being removed."""

    def show(name: str, during_teardown: bool) -> None:
        message = (
            f"{name} received: still cleaning up (the instance is being terminated)"
            if during_teardown
            else f"{name} received: cleaning up (terminating the server's instance), please wait"
        )
        console.print(message, style="bold yellow", markup=False, highlight=False)

    return show
