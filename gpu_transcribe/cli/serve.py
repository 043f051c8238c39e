"""``gpu-transcribe serve``: OpenAI's audio API on this machine. Its options are declared once, in
:data:`gpu_transcribe_api.serve_options.SERVE_OPTIONS`, which ``python -m gpu_transcribe_api`` reads too; the
warm GPU instance running it (``server up|status|...``) is :mod:`gpu_transcribe.cli.warm`.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any, Literal

import typer

from gpu_transcribe.errors import EngineError, SettingsError
from gpu_transcribe_api.config import ServerConfigError
from gpu_transcribe_api.serve_options import SERVE_OPTIONS, ServeOption, config_from_options
from gpu_transcribe_engine.errors import ModelLoadError


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


# The options come from the one declaration python -m gpu_transcribe_api builds its parser from; cli/main.py
# adds the command to the application.
serve.__signature__ = inspect.Signature(_typer_parameters(SERVE_OPTIONS))  # type: ignore[attr-defined]
