"""Standard Webhooks helpers shared by the server's sender and the pipeline's notifier Lambda: stdlib only.

Why stdlib only: the pipeline's notifier Lambda brings the Python runtime's stdlib and boto3 and nothing else;
its zip holds this file under its own path beside ``gpu_transcribe/aws/pipeline/notifier_lambda.py``
(``gpu_transcribe.pipeline.lambda_code.notifier_zip``), which imports it as it is.
So the signature here is computed with ``hmac`` and ``base64`` exactly as the Standard Webhooks spec says
(standardwebhooks.com: ``v1,`` + base64 of HMAC-SHA256 over ``"{id}.{timestamp}.{body}"`` with the secret's
base64-decoded bytes as key); the tests check it against the spec authors' ``standardwebhooks`` library's
``Webhook.verify``. Nothing here may import ``gpu_transcribe`` (it ships in the engine image with the API).
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import ipaddress
import secrets
import socket
from datetime import UTC
from urllib.parse import urlsplit

SECRET_PREFIX = "whsec_"
UNRESOLVED = "does not resolve"
"""In :func:`url_refusal`'s answer for a host that does not resolve: worth trying again later."""
SECRET_BYTES = 32
"""Random bytes in a generated secret; the spec allows 24 to 64 (base64 after the ``whsec_`` prefix)."""


def generate_secret() -> str:
    """A new signing secret: ``whsec_`` + base64 of :data:`SECRET_BYTES` random bytes (Standard Webhooks)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def check_secret(secret: str) -> str:
    """Return ``secret`` stripped if it is a usable Standard Webhooks secret.

    Raises:
        ValueError: not ``whsec_`` + base64, or fewer than 24 bytes (the spec's minimum); the message does
            not contain the secret.
    """
    secret = secret.strip()
    body = secret.removeprefix(SECRET_PREFIX)
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except ValueError:
        raise ValueError("the webhook secret is not whsec_ followed by base64") from None
    if not secret.startswith(SECRET_PREFIX) or len(raw) < 24:
        raise ValueError("the webhook secret must be whsec_ followed by base64 of 24 to 64 random bytes")
    return secret


def sign_v1(secret: str, msg_id: str, timestamp_s: int | str, body: str) -> str:
    """The ``v1,<base64>`` signature of one message (Standard Webhooks: HMAC-SHA256 with the secret's
    decoded bytes over ``"{msg_id}.{timestamp_s}.{body}"``); ``timestamp_s`` is Unix seconds (an
    integer or its decimal text)."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX) + "==")
    digest = hmac.new(key, f"{msg_id}.{timestamp_s}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def safe_url(url: str) -> str:
    """The URL for logs: scheme, host, port and path; no query, fragment or user info (they may hold
    tokens)."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def retry_after_s(value: str | None, now_s: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP date (RFC 9110, 10.2.3).

    Returns:
        The delay (>= 0), or ``None`` if the header is missing or unreadable.
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now_s)


def url_address(url: str, allow_private: bool) -> tuple[str | None, str]:
    """Resolve ``url``'s host once and check every address it has: ``(None, address)`` with the address to
    connect to (the first one; connect to it, not to the name, so a second DNS answer cannot differ), or
    ``(why not, "")``.

    Refused: a scheme other than ``http``/``https``, no host, a host that does not resolve (DNS, now; the
    reason then holds :data:`UNRESOLVED`), and, unless ``allow_private``, a host any of whose addresses is
    not public: private, loopback, link-local, reserved, unspecified, multicast, or an IPv4-mapped form of
    those (``ipaddress``'s ``is_global``, which counts ``::ffff:0:0/96`` as private; on EC2
    ``169.254.169.254`` is the instance metadata service). Decimal, hexadecimal and octal IPv4 forms
    (``http://2852039166/``) resolve to the address they mean, so they are checked as that address.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not an http(s) URL with a host", ""
    try:
        infos = socket.getaddrinfo(parts.hostname, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return f"{parts.hostname} {UNRESOLVED} ({exc})", ""
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not (allow_private or (address.is_global and not address.is_multicast)):
            return f"{parts.hostname} is {address}, not a public address", ""
    return None, str(infos[0][4][0])


def url_refusal(url: str, allow_private: bool) -> str | None:
    """Why a webhook may not be sent to ``url`` (see :func:`url_address`), or ``None`` if it may.
    Checked at deploy time and again before each delivery, since DNS answers change."""
    return url_address(url, allow_private)[0]
