"""Local port forwarding over an open :class:`~gpu_transcribe.ssh.SSHSession` (what ``ssh -L`` does).

:class:`LocalForward` listens on a local TCP port (``127.0.0.1`` by default: nothing else on the network can
use the tunnel) and, for each connection it accepts, opens a ``direct-tcpip`` channel to a destination as
the host sees it (``127.0.0.1:8000`` on the instance: the server binds only there) and copies bytes both ways
until either side closes. The host key was checked when the session was opened, so the tunnel inherits the
pinned key.

One thread accepts; each connection gets one thread that moves bytes in both directions with
``select`` (a paramiko channel has a file descriptor that ``select`` understands).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from gpu_transcribe.errors import SSHError

if TYPE_CHECKING:
    import paramiko

    from gpu_transcribe.ssh.session import SSHSession

logger = logging.getLogger(__name__)

#: Bytes read from either side per ``recv``.
CHUNK_BYTES = 64 * 1024
#: Seconds a connection's pump waits in ``select`` before checking whether the forward was stopped.
POLL_S = 0.5


class LocalForward:
    """Forward ``local_host:local_port`` here to ``remote_host:remote_port`` as seen from the SSH host.

    Use as a context manager, or :meth:`start` / :meth:`stop`.

    Args:
        session: an open SSH session (its host key already checked).
        remote_port: the port on the host, e.g. 8000.
        remote_host: the address on the host, default ``127.0.0.1``.
        local_port: the port to listen on here; 0 picks a free one (see :attr:`local_port` after start).
        local_host: the address to listen on here, default ``127.0.0.1`` (loopback only).
        on_error: called with one line when a forwarded connection fails (e.g. nothing listens on the host).

    Attributes:
        connections: connections accepted so far.
    """

    def __init__(
        self,
        session: SSHSession,
        remote_port: int,
        *,
        remote_host: str = "127.0.0.1",
        local_port: int = 0,
        local_host: str = "127.0.0.1",
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self._session = session
        self._remote = (remote_host, remote_port)
        self._local = (local_host, local_port)
        self._on_error = on_error
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.connections = 0

    @property
    def local_port(self) -> int:
        """The port listened on (the one picked when 0 was asked). Raises ``RuntimeError`` before start."""
        if self._listener is None:
            raise RuntimeError("the forward is not started")
        return int(self._listener.getsockname()[1])

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the local end."""
        return f"http://{self._local[0]}:{self.local_port}"

    def start(self) -> LocalForward:
        """Listen, and accept in a background thread.

        Raises:
            SSHError: the local port cannot be listened on (in use, not allowed); the message names it.
        """
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(self._local)
            listener.listen(16)
        except OSError as exc:
            listener.close()
            raise SSHError(
                f"cannot listen on {self._local[0]}:{self._local[1]} ({exc.strerror}); "
                "choose another port with --local-port"
            ) from exc
        listener.settimeout(POLL_S)
        self._listener = listener
        thread = threading.Thread(target=self._accept_loop, name="ssh-forward-accept", daemon=True)
        self._threads.append(thread)
        thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop listening and close every forwarded connection. Idempotent."""
        self._stop.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.close()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout_s)

    def __enter__(self) -> LocalForward:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _report(self, message: str) -> None:
        logger.debug("forward: %s", message)
        if self._on_error is not None:
            with contextlib.suppress(Exception):
                self._on_error(message)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            listener = self._listener
            if listener is None:
                return
            try:
                client, origin = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by stop()
            self.connections += 1
            thread = threading.Thread(
                target=self._serve, args=(client, origin), name="ssh-forward-conn", daemon=True
            )
            with self._lock:
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket, origin: tuple[str, int]) -> None:
        try:
            channel = self._session.open_direct_tcpip(self._remote, origin)
        except SSHError as exc:
            self._report(str(exc))
            client.close()
            return
        try:
            _pump(client, channel, self._stop)
        except (OSError, EOFError) as exc:
            self._report(f"a forwarded connection to {self._remote[0]}:{self._remote[1]} failed: {exc}")
        finally:
            channel.close()
            client.close()


def _pump(client: socket.socket, channel: paramiko.Channel, stop: threading.Event) -> None:
    """Copy bytes both ways until the host's side closes or ``stop`` is set; the local client's half-close
    is passed on (the host may still answer)."""
    client_open, channel_open = True, True
    while channel_open and not stop.is_set():
        watched: list[Any] = []
        if client_open:
            watched.append(client)
        if channel_open:
            watched.append(channel)
        readable, _, _ = select.select(watched, [], [], POLL_S)
        if client in readable:
            data = client.recv(CHUNK_BYTES)
            if data:
                channel.sendall(data)
            else:
                client_open = False
                channel.shutdown_write()
        if channel in readable:
            data = channel.recv(CHUNK_BYTES)
            if data:
                client.sendall(data)
            else:
                channel_open = False
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_WR)
        if not channel_open:
            # The host's side closed: whatever the local client still sends has nowhere to go.
            return
