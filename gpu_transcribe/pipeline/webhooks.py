"""Webhooks of the pipeline's job events: the URL checks, the signing secret's rotation, ``webhook verify``.

The events themselves are built and published by :mod:`gpu_transcribe.pipeline.results`; the notifier Lambda
(:mod:`gpu_transcribe.aws.pipeline.notifier_lambda`) delivers them. The secret lives in Secrets Manager
(``P-webhook``), read and written by :mod:`gpu_transcribe.aws.pipeline.webhook_secret`
(:class:`~gpu_transcribe.aws.pipeline.webhook_secret.WebhookSecret` shows its document): during a rotation
the notifier signs with both the current and the previous secret (Standard Webhooks allows several
space-separated signatures), until ``--finish-rotation`` or ``previous_until``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gpu_transcribe.aws.pipeline.webhook_secret import (
    WebhookSecret,
    read_webhook_secret,
    write_webhook_secret,
)
from gpu_transcribe.errors import CloudError, SettingsError
from gpu_transcribe_api.webhook_common import generate_secret, url_refusal

if TYPE_CHECKING:
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.settings import Settings

DEFAULT_ROTATION_HOURS = 24.0
"""How long ``pipeline webhook-secret --rotate`` keeps the previous secret signing, by default, hours."""


class WebhookUrlError(ValueError):
    """A webhook URL that may not be used (not http(s), no host, unresolvable, or a private address)."""


def check_webhook_url(url: str, allow_private: bool) -> str:
    """``url`` stripped, if webhooks may be sent there (see
    :func:`gpu_transcribe_api.webhook_common.url_refusal`).

    Raises:
        WebhookUrlError: why not; the message names the host, never the query (it may hold a token).
    """
    refusal = url_refusal(url, allow_private)
    if refusal:
        hint = "" if allow_private else " (--allow-private-webhooks allows private addresses)"
        raise WebhookUrlError(f"webhook URL refused: {refusal}{hint}")
    return url.strip()


# --- the secret ---------------------------------------------------------------------------------------


def webhook_secret_name(pipeline: str) -> str:
    """The Secrets Manager name of a pipeline's webhook secret: ``gpu-transcribe-<name>-webhook``."""
    return f"gpu-transcribe-{pipeline}-webhook"


def rotate_webhook_secret(
    ctx: AwsContext, name: str, keep_previous_s: float | None, now_s: float | None = None
) -> WebhookSecret:
    """Start a rotation: a new current secret, the old one kept signing as ``previous`` for
    ``keep_previous_s`` seconds (``None``: until :func:`finish_rotation`).

    Raises:
        LookupError: there is no such secret (deploy the pipeline first).
        CloudError, CredentialsError: as
            :func:`~gpu_transcribe.aws.pipeline.webhook_secret.read_webhook_secret`, or the write failed.
    """
    old = read_webhook_secret(ctx, name)
    if old is None:
        raise LookupError(f"no webhook secret {name}: deploy the pipeline first")
    moment = time.time() if now_s is None else now_s
    until = None if keep_previous_s is None else moment + keep_previous_s
    new = WebhookSecret(generate_secret(), old.current, until)
    write_webhook_secret(ctx, name, new)
    return new


def finish_rotation(ctx: AwsContext, name: str) -> WebhookSecret:
    """End a rotation: only the current secret signs from now on.

    Raises:
        LookupError, CloudError, CredentialsError: as :func:`rotate_webhook_secret`.
    """
    old = read_webhook_secret(ctx, name)
    if old is None:
        raise LookupError(f"no webhook secret {name}: deploy the pipeline first")
    new = WebhookSecret(old.current)
    write_webhook_secret(ctx, name, new)
    return new


# --- receiving (`webhook verify`) -------------------------------------------------------------------


def verify_request(secrets: Sequence[str], headers: Mapping[str, str], body: bytes) -> Any:
    """Check a webhook request with the ``standardwebhooks`` library; the parsed body if any secret
    verifies it (a rotation: the old or the new one).

    Raises:
        standardwebhooks.webhooks.WebhookVerificationError: no secret verifies it, a header is missing, or
            the timestamp is more than 5 min from now (the library's tolerance).
    """
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    error: WebhookVerificationError | None = None
    for secret in secrets:
        try:
            return Webhook(secret).verify(body, dict(headers))
        except WebhookVerificationError as exc:
            error = exc
    raise error or WebhookVerificationError("no secret given")


def parse_saved_request(text: str) -> tuple[dict[str, str], bytes]:
    """Headers and body of a saved HTTP request (``curl --trace-ascii``-free form: an optional request line,
    ``Name: value`` lines, a blank line, the body), or headers alone when there is no blank line.

    Raises:
        ValueError: a header line without ``:``.
    """
    head, _, body = text.replace("\r\n", "\n").partition("\n\n")
    headers: dict[str, str] = {}
    for number, line in enumerate(head.splitlines()):
        if not line.strip() or (number == 0 and " HTTP/" in line):
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise ValueError(f"header line {number + 1} has no ':': {line[:40]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers, body.encode()


# --- the commands' side (settings -> AWS) -------------------------------------------------------------


def pipeline_webhook_secret(
    settings: Settings,
    name: str | None,
    *,
    rotate: bool = False,
    keep_previous_hours: float | None = DEFAULT_ROTATION_HOURS,
    finish: bool = False,
) -> WebhookSecret:
    """``pipeline webhook-secret``: read the pipeline's secret, or rotate it, or finish a rotation.

    Args:
        settings: region and profile.
        name: the pipeline (default ``default``).
        rotate: start a rotation (a new current secret; the old one keeps signing).
        keep_previous_hours: with ``rotate``, hours the old one keeps signing (``None``: until ``finish``).
        finish: end a rotation (only the current secret signs).

    Raises:
        SettingsError: a bad name, or both ``rotate`` and ``finish``.
        CloudError: no such secret (the pipeline is not deployed), or Secrets Manager refused.
        CredentialsError: credentials missing or rejected.
    """
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.pipeline.config import pipeline_name

    if rotate and finish:
        raise SettingsError("rotate", "--rotate", "--rotate and --finish-rotation exclude each other")
    secret_name = webhook_secret_name(pipeline_name(name))
    ctx = AwsContext.from_settings(settings)
    try:
        if rotate:
            keep_s = None if keep_previous_hours is None else keep_previous_hours * 3600.0
            return rotate_webhook_secret(ctx, secret_name, keep_s)
        if finish:
            return finish_rotation(ctx, secret_name)
        found = read_webhook_secret(ctx, secret_name)
    except LookupError as exc:
        raise CloudError(f"{secret_name}: {exc}") from None
    if found is None:
        raise CloudError(f"no webhook secret {secret_name} in {ctx.region}: deploy the pipeline first")
    return found
