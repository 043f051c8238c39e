"""The source address allowed to reach port 22: the ``ssh_cidr`` setting, or this machine's public IP.

The secure default is the caller's own public address as a ``/32``. It cannot be known offline, so ``auto``
(the default) asks AWS's ``https://checkip.amazonaws.com/`` at run time, and if that fails the run stops with
a line asking for the setting. We never fall back to ``0.0.0.0/0``. No boto3 here.
"""

from __future__ import annotations

import ipaddress
import urllib.request
from collections.abc import Callable

from gpu_transcribe.errors import SettingsError

CHECKIP_URL = "https://checkip.amazonaws.com/"
CHECKIP_TIMEOUT_S = 5.0


def detect_public_ip(url: str = CHECKIP_URL, timeout_s: float = CHECKIP_TIMEOUT_S) -> str:
    """This machine's public IP address as AWS sees it.

    Raises:
        OSError: the service could not be reached (``urllib.error.URLError`` is an ``OSError``).
        ValueError: the answer is not an IP address.
    """
    with urllib.request.urlopen(url, timeout=timeout_s) as reply:
        text = reply.read(64).decode("ascii", "replace").strip()
    return str(ipaddress.ip_address(text))


def resolve_ssh_cidr(
    value: str, source: str = "default", *, detect: Callable[[], str] = detect_public_ip
) -> str:
    """The CIDR block for the security group rule.

    Args:
        value: the ``ssh_cidr`` setting: ``auto`` or a CIDR block.
        source: where the setting came from, for the error message.
        detect: returns this machine's public IP (a seam for tests).

    Returns:
        ``value`` itself, or for ``auto`` the detected address as ``/32`` (IPv4) or ``/128`` (IPv6).

    Raises:
        SettingsError: ``auto`` and the address could not be detected; the message asks for the setting.
    """
    if value != "auto":
        return str(ipaddress.ip_network(value, strict=True))
    try:
        address = ipaddress.ip_address(detect())
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise SettingsError(
            "ssh_cidr",
            source,
            f"ssh_cidr is auto (from {source}) but this machine's public IP could not be detected through "
            f"{CHECKIP_URL} ({reason}); set ssh_cidr to your public address, e.g. "
            'GPU_TRANSCRIBE_SSH_CIDR=203.0.113.7/32 or ssh_cidr = "203.0.113.7/32" in gpu-transcribe.toml',
            "a CIDR block such as 203.0.113.7/32",
        ) from None
    return f"{address}/{address.max_prefixlen}"
