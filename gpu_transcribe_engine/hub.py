"""Whether a model named by its Hugging Face id can come from the hub: found in the local cache, or the hub
reachable. Checked before ``from_pretrained``, whose own retries take about half a minute to give up when
the hub cannot be reached; this check says so in :data:`HUB_CONNECT_TIMEOUT_S` at most.
"""

from __future__ import annotations

import socket
import threading
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from gpu_transcribe_engine.errors import HubUnreachableError
from gpu_transcribe_engine.options import looks_like_path

#: Seconds a TCP connection to the hub (or to the proxy in front of it) may take before the hub counts as
#: unreachable. A reachable hub answers a connection in well under a second; name resolution that hangs is
#: cut off at the same limit.
HUB_CONNECT_TIMEOUT_S = 3.0

#: What to do instead, in every message: a model directory, and how to get one from this repository.
_INSTEAD = (
    "pass --model DIR with a local Whisper model directory (`make offline-model` writes one to "
    "models/whisper-base)"
)


def is_hub_id(model: str) -> bool:
    """Whether ``model`` names a hub repository (``KBLab/kb-whisper-small``) rather than a directory here
    (written as a path, or an existing path)."""
    return not (looks_like_path(model) or Path(model).expanduser().exists())


def check_hub_model(model: str, revision: str | None, timeout_s: float = HUB_CONNECT_TIMEOUT_S) -> None:
    """Make sure the hub id ``model`` at ``revision`` (``None``: ``main``) can be loaded: its ``config.json``
    is in the local Hugging Face cache, or the hub (``HF_ENDPOINT``, default https://huggingface.co)
    accepts a TCP connection within ``timeout_s`` seconds.

    Raises:
        HubUnreachableError: not cached, and ``HF_HUB_OFFLINE`` is set or the hub cannot be reached; one
            line naming the model and the endpoint and saying to pass a model directory.
    """
    from huggingface_hub import constants, try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(model, "config.json", revision=revision or "main")
    except ValueError:  # not a valid repository id: from_pretrained says what is wrong with it
        cached = None
    if isinstance(cached, str):
        return
    if constants.HF_HUB_OFFLINE:
        raise HubUnreachableError(
            f"model {model!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; {_INSTEAD}"
        )
    endpoint = constants.ENDPOINT
    reason = _connect_error(endpoint, timeout_s)
    if reason is not None:
        raise HubUnreachableError(
            f"cannot reach the Hugging Face hub at {endpoint} ({reason}) to download model {model!r}, "
            f"which is not in the local cache; {_INSTEAD}"
        )


def _connect_error(url: str, timeout_s: float) -> str | None:
    """Why a TCP connection to ``url``'s host (or the proxy the environment sets for it) failed within
    ``timeout_s`` seconds, or ``None`` when it succeeded."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxied = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxied.hostname or "", proxied.port or 80
    outcome: list[str | None] = []

    def connect() -> None:  # in a thread: name resolution has no timeout of its own
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(f"{host}:{port}: {exc.strerror or exc}")

    thread = threading.Thread(target=connect, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        return f"{host}:{port}: no answer in {timeout_s:.0f} s"
    return outcome[0]
