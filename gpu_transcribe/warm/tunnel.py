"""``gpu-transcribe server tunnel``: ``127.0.0.1:PORT`` here forwarded over SSH to a server's port on its
instance. Orchestration: no printing."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpu_transcribe.common import ProgressCallback, no_progress
from gpu_transcribe.warm.manage import connect_server, follow_caller, require_state, running_info
from gpu_transcribe.warm.state import DEFAULT_NAME

if TYPE_CHECKING:
    from gpu_transcribe.settings import Settings
    from gpu_transcribe.ssh import LocalForward, SSHSession


@dataclass(frozen=True)
class TunnelInfo:
    """An open tunnel to a server.

    Attributes:
        name: the server.
        url: ``http://127.0.0.1:PORT`` here.
        base_url: the OpenAI-compatible base URL (``url`` + ``/v1``).
        api_key: the bearer key.
        instance_id: the server's instance.
    """

    name: str
    url: str
    base_url: str
    api_key: str
    instance_id: str


@contextlib.contextmanager
def open_tunnel(
    settings: Settings,
    name: str = DEFAULT_NAME,
    *,
    local_port: int = 8000,
    on_error: Callable[[str], None] | None = None,
    on_progress: ProgressCallback = no_progress,
) -> Iterator[tuple[TunnelInfo, SSHSession]]:
    """Forward ``127.0.0.1:local_port`` here to the server's port on the instance's 127.0.0.1, for the
    ``with`` block. The SSH rule follows a changed address first (:func:`follow_caller`).

    Yields:
        ``(tunnel info, the SSH session)``; the session's ``closed`` turns true if the connection drops.

    Raises:
        ServerNotFoundError: no such server here.
        InstanceLostError: its instance is gone.
        HostKeyError, SSHError: no session, or the local port is taken.
    """
    from gpu_transcribe.ssh import LocalForward

    state = require_state(name)
    info = running_info(state, settings)
    state = follow_caller(state, settings, on_progress)
    with connect_server(state, info) as ssh:
        forward: LocalForward
        with LocalForward(ssh, state.port, local_port=local_port, on_error=on_error) as forward:
            yield (
                TunnelInfo(
                    name=state.name,
                    url=forward.url,
                    base_url=forward.url + "/v1",
                    api_key=state.api_key,
                    instance_id=state.instance_id,
                ),
                ssh,
            )


def run_tunnel(
    settings: Settings,
    name: str = DEFAULT_NAME,
    *,
    local_port: int = 8000,
    on_ready: Callable[[TunnelInfo], None],
    on_error: Callable[[str], None] | None = None,
    on_progress: ProgressCallback = no_progress,
    stop: threading.Event | None = None,
    poll_s: float = 0.5,
) -> None:
    """``server tunnel``: open the tunnel, call ``on_ready``, and keep it until ``stop`` is set or
    KeyboardInterrupt (Ctrl-C, which ends it quietly).

    Raises:
        ServerNotFoundError, InstanceLostError, HostKeyError, SSHError: as :func:`open_tunnel`.
        SSHError: the connection dropped while the tunnel was open (the message says to check ``server
            status``).
    """
    from gpu_transcribe.errors import SSHError

    stop = stop or threading.Event()
    try:
        with open_tunnel(
            settings, name, local_port=local_port, on_error=on_error, on_progress=on_progress
        ) as (info, ssh):
            on_ready(info)
            while not stop.wait(poll_s):
                if ssh.closed:
                    raise SSHError(
                        f"the tunnel to server {name} closed (the connection dropped); "
                        "see `gpu-transcribe server status`"
                    )
    except KeyboardInterrupt:
        return
