"""``python -m gpu_transcribe_api``: the server without the client package, for a machine that has only the
engine installed (the options of ``gpu-transcribe serve``, both built from
:data:`~gpu_transcribe_api.serve_options.SERVE_OPTIONS`; the key also from ``$GPU_TRANSCRIBE_API_KEY``).

SIGINT or SIGTERM stop it cleanly (uvicorn then re-raises the signal, so the exit status is the signal's);
exit status 2 for a bad option (one ``error:`` line on stderr), 1 when the model fails to load.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from gpu_transcribe_api.serve_options import SERVE_OPTIONS, ServeOption, config_from_options
from gpu_transcribe_engine.errors import BadOptionError, EngineFailure


def _value_type(option: ServeOption) -> Callable[[str], Any]:
    """argparse's ``type`` for ``option``: its type, held to its range (an error names the range)."""

    def parse(text: str) -> Any:
        value = option.type(text)
        if option.minimum is not None and value < option.minimum:
            raise argparse.ArgumentTypeError(f"{text} is less than {option.minimum:g}")
        if option.maximum is not None and value > option.maximum:
            raise argparse.ArgumentTypeError(f"{text} is more than {option.maximum:g}")
        return value

    parse.__name__ = option.type.__name__  # argparse names the type in "invalid float value: 'x'"
    return parse


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m gpu_transcribe_api``, built from
    :data:`~gpu_transcribe_api.serve_options.SERVE_OPTIONS`."""
    parser = argparse.ArgumentParser(
        prog="python -m gpu_transcribe_api",
        description="Serve OpenAI's audio API with one loaded Whisper model.",
    )
    for option in SERVE_OPTIONS:
        if option.type is bool:
            parser.add_argument(*option.flags, dest=option.name, action="store_true", help=option.help)
            continue
        parser.add_argument(
            *option.flags,
            dest=option.name,
            type=_value_type(option),
            default=option.default,
            choices=option.choices,
            metavar=option.metavar,
            help=option.help if option.default is None else f"{option.help} [default: {option.default}]",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the server until it is stopped; returns the exit status."""
    args = build_parser().parse_args(argv)
    from gpu_transcribe_api.run import serve

    try:
        config = config_from_options(vars(args))
    except BadOptionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        serve(config)
    except EngineFailure as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
