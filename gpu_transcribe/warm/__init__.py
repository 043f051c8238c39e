"""``gpu-transcribe server up|status|tunnel|logs|down``: a warm GPU box of one's own, running ``gpu-transcribe
serve`` (the HTTP API, ``gpu_transcribe_api/``) on an instance that outlives the command. Orchestration
only: no printing; progress goes to callbacks, results are frozen dataclasses.

Modules:

* :mod:`~gpu_transcribe.warm.up`: :func:`server_up` (launch through ``InstanceSession``, start ``serve``,
  wait for ``/health``, detach).
* :mod:`~gpu_transcribe.warm.manage`: :func:`server_status`, :func:`server_logs`, :func:`server_down`.
* :mod:`~gpu_transcribe.warm.tunnel`: :func:`run_tunnel` / :func:`open_tunnel`.
* :mod:`~gpu_transcribe.warm.on_instance`: the commands run on the instance over SSH.
* :mod:`~gpu_transcribe.warm.state`: the state file per server name (mode 0600, atomic writes).
"""

from gpu_transcribe.warm.manage import (
    DownReport,
    ServerNotFoundError,
    ServerStatus,
    server_down,
    server_logs,
    server_status,
)
from gpu_transcribe.warm.state import DEFAULT_NAME, ServerState, ServerStateError, list_states, load_state
from gpu_transcribe.warm.tunnel import TunnelInfo, open_tunnel, run_tunnel
from gpu_transcribe.warm.up import ServerExistsError, ServerStartError, ServerUpRequest, server_up

__all__ = [
    "DEFAULT_NAME",
    "DownReport",
    "ServerExistsError",
    "ServerNotFoundError",
    "ServerStartError",
    "ServerState",
    "ServerStateError",
    "ServerStatus",
    "ServerUpRequest",
    "TunnelInfo",
    "list_states",
    "load_state",
    "open_tunnel",
    "run_tunnel",
    "server_down",
    "server_logs",
    "server_status",
    "server_up",
]
