"""The commands of the transcription API: ``serve`` (this machine) and ``server up|status|tunnel|logs|down``
(a warm GPU instance of your own running it). Parsing and printing only; see :mod:`gpu_transcribe.cli.app`.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import typer

from gpu_transcribe.cli import options as opt
from gpu_transcribe.cli.app import (
    EXIT_LEFT_BEHIND,
    app,
    cli_settings,
    server_app,
    stderr,
    stdout,
)
from gpu_transcribe.errors import EngineError, SettingsError, TeardownError
from gpu_transcribe_api.config import ServerConfigError
from gpu_transcribe_api.serve_options import SERVE_OPTIONS, ServeOption, config_from_options
from gpu_transcribe_engine.errors import ModelLoadError

# --- serve -----------------------------------------------------------------------------------------------


def _typer_parameters(options: tuple[ServeOption, ...]) -> list[inspect.Parameter]:
    """One keyword parameter per option, annotated with its ``typer.Option`` (flags, help, range) and type
    (a ``Literal`` of its choices, when it has some), for the signature Typer reads."""
    parameters = []
    for option in options:
        value_type: Any = Literal[option.choices] if option.choices else option.type
        if option.default is None:
            value_type = value_type | None
        info = typer.Option(
            *option.flags,
            help=option.help,
            metavar=option.metavar,
            min=option.minimum,
            max=option.maximum,
        )
        parameters.append(
            inspect.Parameter(
                option.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=option.default,
                annotation=Annotated[value_type, info],
            )
        )
    return parameters


def serve(**values: Any) -> None:
    """Serve OpenAI's audio API here, with one loaded model.

    /v1/audio/transcriptions and /transcribe, on this machine, until Ctrl-C. Logs go to stderr."""
    try:
        config = config_from_options(values)
    except ServerConfigError as error:
        raise SettingsError("serve", "command line", str(error)) from None
    from gpu_transcribe_api.run import serve as run_server
    from gpu_transcribe_engine.device import resolve_device
    from gpu_transcribe_engine.hub import check_hub_model, is_hub_id

    try:  # before uvicorn starts: --device cuda on a machine without a GPU is a bad option (exit status 2)
        resolve_device(config.device)
    except ValueError as error:
        raise SettingsError("device", "--device", str(error)) from None
    try:
        if is_hub_id(config.model):  # before uvicorn starts: one line in seconds when the hub is out of reach
            check_hub_model(config.model, config.revision)
        run_server(config)
    except ModelLoadError as error:
        raise EngineError(error.code, str(error)) from None


# The options come from the one declaration python -m gpu_transcribe_api builds its parser from.
serve.__signature__ = inspect.Signature(_typer_parameters(SERVE_OPTIONS))  # type: ignore[attr-defined]
app.command("serve")(serve)


# --- server: up, status, tunnel, logs, down ----------------------------------------------------------------


@server_app.command("up")
def server_up_command(
    name: opt.ServerName = "default",
    market: opt.ServerMarket = None,
    instance_type: opt.InstanceType = None,
    idle_stop_min: opt.ServerIdleStopMin = 30,
    max_lifetime_h: opt.ServerMaxLifetimeH = 12.0,
    port: opt.ServerPort = 8000,
    model: opt.ServerModel = None,
    region: opt.Region = None,
    aws_profile: opt.Profile = None,
) -> None:
    """Launch an instance running `gpu-transcribe serve`.

    It stays running (until idle or too old, or `server down`); prints how to reach it."""
    from gpu_transcribe.cli.progress import event_printer
    from gpu_transcribe.cli.render_warm import print_server_lines, server_signal_printer, up_lines
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
    print_server_lines(up_lines(state), stdout)


@contextlib.contextmanager
def _left_behind_exits_5() -> Iterator[None]:
    """A :class:`TeardownError` (something could not be removed from AWS) exits with ``run``'s status 5."""
    try:
        yield
    except TeardownError as error:
        from gpu_transcribe.cli.render import print_error

        print_error(error, stderr)
        raise typer.Exit(EXIT_LEFT_BEHIND) from None


@server_app.command("status")
def server_status_command(
    name: opt.ServerName = "default", aws_profile: opt.Profile = None, json: opt.Json = False
) -> None:
    """The server's state, age, cost so far, requests and idle time.

    Its instance's state, age, price and cost so far, the requests served and the idle time."""
    from gpu_transcribe.cli.progress import event_printer
    from gpu_transcribe.cli.render import print_json
    from gpu_transcribe.cli.render_warm import print_server_lines, status_lines
    from gpu_transcribe.warm import server_status

    status = server_status(cli_settings(aws_profile=aws_profile), name, on_progress=event_printer(stderr))
    if json:
        print_json(status, stdout)
    else:
        print_server_lines(status_lines(status), stdout)


@server_app.command("tunnel")
def server_tunnel_command(
    name: opt.ServerName = "default", local_port: opt.LocalPort = 8000, aws_profile: opt.Profile = None
) -> None:
    """Forward 127.0.0.1:PORT here to the server, until Ctrl-C.

    Over SSH, with the instance's host key pinned."""
    from gpu_transcribe.cli.progress import event_printer
    from gpu_transcribe.cli.render_warm import print_server_lines, tunnel_lines
    from gpu_transcribe.common import ProgressEvent
    from gpu_transcribe.warm import run_tunnel

    warn = event_printer(stderr)

    run_tunnel(
        cli_settings(aws_profile=aws_profile),
        name,
        local_port=local_port,
        on_ready=lambda info: print_server_lines(tunnel_lines(info), stdout),
        on_error=lambda message: warn(ProgressEvent("note", message)),
        on_progress=warn,
    )
    stderr.print("tunnel closed; the server keeps running", style="dim", markup=False, highlight=False)


@server_app.command("logs")
def server_logs_command(
    name: opt.ServerName = "default", lines: opt.LogLines = 100, aws_profile: opt.Profile = None
) -> None:
    """The server's last log lines.

    From its systemd journal, or its log file."""
    from gpu_transcribe.cli.progress import event_printer
    from gpu_transcribe.warm import server_logs

    text = server_logs(
        cli_settings(aws_profile=aws_profile), name, lines=lines, on_progress=event_printer(stderr)
    )
    stdout.print(text.rstrip("\n"), markup=False, highlight=False, soft_wrap=True)


@server_app.command("down")
def server_down_command(name: opt.ServerName = "default", aws_profile: opt.Profile = None) -> None:
    """Stop the server and remove its resources.

    Terminates its instance, deletes its key pair, security group and state file."""
    from gpu_transcribe.cli.progress import event_printer
    from gpu_transcribe.cli.render_warm import down_lines, print_server_lines
    from gpu_transcribe.warm import server_down

    with _left_behind_exits_5():
        report = server_down(cli_settings(aws_profile=aws_profile), name, on_progress=event_printer(stderr))
    print_server_lines(down_lines(report), stdout)
