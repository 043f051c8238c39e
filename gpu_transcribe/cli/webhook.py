"""``gpu-transcribe webhook verify``: help for receivers of the pipeline's webhooks. The ``webhook`` group
and its options.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from gpu_transcribe.cli.base import Typer
from gpu_transcribe.cli.output import print_lines, stdout

webhook_app = Typer(help="Help for receivers of the pipeline's webhooks.", no_args_is_help=True)

# --- options ---------------------------------------------------------------------------------------------

SecretFile = Annotated[
    Path,
    typer.Option(
        "--secret-file",
        exists=True,
        dir_okay=False,
        help="The signing secret (whsec_...); several lines: any of them (a rotation).",
    ),
]
HeadersFile = Annotated[
    Path | None,
    typer.Option(
        "--headers-file",
        metavar="FILE",
        exists=True,
        dir_okay=False,
        help="The request's headers (Name: value lines); without it BODY_FILE is a whole saved request.",
    ),
]
BodyFile = Annotated[
    Path | None,
    typer.Argument(
        exists=True,
        dir_okay=False,
        help="The body, or a saved request (headers, a blank line, the body). Default: stdin.",
    ),
]


# --- webhook verify --------------------------------------------------------------------------------------


@webhook_app.command("verify")
def webhook_verify_command(
    secret_file: SecretFile,
    headers_file: HeadersFile = None,
    body_file: BodyFile = None,
) -> None:
    """Check a webhook request's signature: valid (exit 0) or not (1).

    With the standardwebhooks library (its 5-minute timestamp tolerance included)."""
    # Function-level: standardwebhooks comes with the server extra only; the pipeline package reaches boto3.
    from standardwebhooks.webhooks import WebhookVerificationError

    from gpu_transcribe.pipeline.webhooks import parse_saved_request, verify_request

    secrets = [line.strip() for line in secret_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    raw = body_file.read_bytes() if body_file is not None else sys.stdin.buffer.read()
    if headers_file is not None:
        headers, _ = parse_saved_request(headers_file.read_text(encoding="utf-8"))
        body = raw
    else:
        headers, body = parse_saved_request(raw.decode("utf-8"))
    try:
        payload = verify_request(secrets, headers, body)
    except (WebhookVerificationError, ValueError) as exc:
        print_lines([f"invalid: {exc}"], stdout, soft_wrap=False)
        raise typer.Exit(1) from None
    kind = payload.get("type", "?") if isinstance(payload, dict) else "?"
    print_lines([f"valid: {headers.get('webhook-id')} {kind}"], stdout, soft_wrap=False)
