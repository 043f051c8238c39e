"""Running commands: :class:`SSHSession`, the open connection that :func:`~gpu_transcribe.ssh.connect`
returns, with :meth:`~SSHSession.run` and :class:`CommandResult`.

Remote commands are built from argv with :func:`shlex.quote` (:func:`command_line`); :meth:`SSHSession.run`
accepts nothing else. The session also carries the file transfers (:mod:`gpu_transcribe.ssh.transfer`) and
the heartbeat (:mod:`gpu_transcribe.ssh.heartbeat`), so that closing it ends them all.
"""

from __future__ import annotations

import collections
import shlex
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import paramiko

from gpu_transcribe.errors import RemoteCommandError, SSHError
from gpu_transcribe.ssh import transfer
from gpu_transcribe.ssh.channel import LineReader, drain_stderr, one_line
from gpu_transcribe.ssh.heartbeat import Heartbeat
from gpu_transcribe.ssh.transfer import PUSH_CONCURRENCY, ProgressCallback, PushedFile

if TYPE_CHECKING:
    from gpu_transcribe.ssh.connection import SSHTarget


@dataclass(frozen=True)
class CommandResult:
    """How a remote command ended.

    Attributes:
        returncode: its exit status.
        stdout: its standard output, only when no line callback was given (else ``""``).
        stderr_tail: its last stderr lines (at most ``stderr_tail_lines``), newline-joined.
    """

    returncode: int
    stdout: str
    stderr_tail: str


def command_line(argv: Sequence[str]) -> str:
    """A shell command line running ``argv`` exactly, each argument quoted with :func:`shlex.quote`.

    Raises:
        TypeError: ``argv`` is a single string or contains a non-string.
        ValueError: ``argv`` is empty.
    """
    if isinstance(argv, str | bytes):
        raise TypeError("argv must be a sequence of arguments, not one string")
    if not argv:
        raise ValueError("argv is empty")
    for arg in argv:
        if not isinstance(arg, str):
            raise TypeError(f"argument {arg!r} is not a string")
    return " ".join(shlex.quote(arg) for arg in argv)


class SSHSession:
    """An authenticated SSH connection: commands, SFTP pushes and pulls, a heartbeat.

    Made by :func:`connect`. Thread-safe: :meth:`close` may be called from any thread (e.g. a signal
    handler's teardown) and makes running :meth:`run`, :meth:`push` and :meth:`pull` calls end promptly
    with an :class:`SSHError`. Usable as a context manager; closing twice is harmless.
    """

    def __init__(self, client: paramiko.SSHClient, target: SSHTarget) -> None:
        self._client = client
        self.target = target
        transport = client.get_transport()
        if transport is None:
            raise SSHError(f"{target}: the connection is not open")
        self._transport: paramiko.Transport = transport
        self._transport.set_keepalive(30)
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._heartbeats: list[Heartbeat] = []

    # --- state --------------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called or the connection dropped."""
        return self._closed.is_set() or not self._transport.is_active()

    @property
    def cipher(self) -> str:
        """The negotiated client-to-server cipher, e.g. ``aes128-gcm@openssh.com``."""
        return str(self._transport.local_cipher)

    @property
    def server_version(self) -> str:
        """The server's banner, e.g. ``SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3``."""
        return str(self._transport.remote_version)

    def close(self) -> None:
        """Stop heartbeats and close the connection. Idempotent; safe from any thread."""
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
            heartbeats = list(self._heartbeats)
        for heartbeat in heartbeats:
            heartbeat.stop(timeout_s=0)
        self._client.close()

    def __enter__(self) -> SSHSession:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _check_open(self, what: str) -> None:
        if self.closed:
            raise SSHError(f"{self.target}: the connection is closed; cannot {what}")

    def _open_channel(self, timeout_s: float) -> paramiko.Channel:
        try:
            return self._transport.open_session(timeout=timeout_s)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SSHError(f"{self.target}: cannot open a channel ({one_line(exc)})") from exc

    def _open_sftp(self) -> paramiko.SFTPClient:
        self._check_open("open SFTP")
        try:
            sftp = paramiko.SFTPClient.from_transport(self._transport)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SSHError(f"{self.target}: cannot start SFTP ({one_line(exc)})") from exc
        if sftp is None:
            raise SSHError(f"{self.target}: cannot start SFTP")
        return sftp

    def _exec(self, argv: Sequence[str], channel_timeout_s: float) -> paramiko.Channel:
        """A new channel running :func:`command_line` of ``argv``; the caller closes its stdin
        (``shutdown_write``) and the channel.

        Raises:
            SSHError: the connection is closed or no channel could be opened.
            paramiko.SSHException, OSError, EOFError: the command could not be started (the channel is
                closed); callers turn these into their own errors.
        """
        command = command_line(argv)
        self._check_open(f"run {command}")
        channel = self._open_channel(channel_timeout_s)
        try:
            channel.exec_command(command)
        except BaseException:
            channel.close()
            raise
        return channel

    def _start(
        self, argv: Sequence[str], *, stderr_tail_lines: int = 40, channel_timeout_s: float = 30.0
    ) -> StartedCommand:
        """Start a command and return before it ends (:class:`StartedCommand`; :meth:`run` waits for it).

        Raises:
            RemoteCommandError: the command could not be started (``returncode=-1``).
            SSHError: the connection is closed or no channel could be opened.
        """
        return StartedCommand(self, argv, stderr_tail_lines, channel_timeout_s)

    # --- commands -----------------------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        on_stdout_line: Callable[[str], None] | None = None,
        check: bool = True,
        stderr_tail_lines: int = 40,
        channel_timeout_s: float = 30.0,
        stdin: bytes = b"",
    ) -> CommandResult:
        """Run a command on the host, streaming its stdout line by line.

        The command line is :func:`command_line` of ``argv`` (every argument quoted); stdin is closed.
        stdout is decoded as UTF-8 (bad bytes replaced) and each line, without its newline, goes to
        ``on_stdout_line`` in order as it arrives (the engine prints JSON lines). stderr is read at the same
        time; its last ``stderr_tail_lines`` lines are kept (each cut to 2000 characters).

        Args:
            argv: program and arguments.
            on_stdout_line: called from this thread for each stdout line; without it stdout is collected
                into :attr:`CommandResult.stdout`.
            check: raise :class:`RemoteCommandError` on a non-zero exit status.
            stderr_tail_lines: stderr lines kept.
            channel_timeout_s: seconds to wait for the server to open the channel.
            stdin: bytes sent to the command's stdin before it is closed (e.g. a secret that must not appear
                in the command line, which other users of the host can see in ``ps``).

        Returns:
            The exit status, stdout (without callback) and stderr tail.

        Raises:
            RemoteCommandError: non-zero exit with ``check``; or always, with ``returncode=-1``, when the
                command ended without a status (killed by a signal, connection closed or lost).
            SSHError: the connection is closed or no channel could be opened.
        """
        started = self._start(argv, stderr_tail_lines=stderr_tail_lines, channel_timeout_s=channel_timeout_s)
        return started.finish(stdin=stdin, on_stdout_line=on_stdout_line, check=check)

    # --- port forwarding ---------------------------------------------------------------------------------

    def open_direct_tcpip(
        self, dest: tuple[str, int], origin: tuple[str, int], *, timeout_s: float = 10.0
    ) -> paramiko.Channel:
        """A ``direct-tcpip`` channel: the host connects to ``dest`` (as seen from the host) and the channel
        carries the bytes (RFC 4254 section 7.2; what ``ssh -L`` uses). :mod:`gpu_transcribe.ssh.tunnel`
        pumps a local socket through it.

        Raises:
            SSHError: the connection is closed, or the host refused or could not reach ``dest``.
        """
        self._check_open(f"forward to {dest[0]}:{dest[1]}")
        try:
            return self._transport.open_channel("direct-tcpip", dest, origin, timeout=timeout_s)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SSHError(
                f"{self.target}: cannot forward to {dest[0]}:{dest[1]} on the host ({one_line(exc)})"
            ) from exc

    # --- push -------------------------------------------------------------------------------------------

    def push(
        self,
        files: Sequence[tuple[Path | str, str]],
        *,
        on_progress: ProgressCallback | None = None,
        concurrency: int = PUSH_CONCURRENCY,
    ) -> list[PushedFile]:
        """Upload files over SFTP, several at once, then check size and SHA-256 on the host.

        Each file goes over one SFTP channel in pipelined writes that fill whole SSH packets
        (:func:`~gpu_transcribe.ssh.transfer.sftp_write_size`); up to ``concurrency`` files go at once on
        separate channels of this connection. The local SHA-256 is computed from the bytes as they are sent.
        SSH's MAC already protects the bytes in transit; once all are written, one remote command (per
        :data:`~gpu_transcribe.ssh.transfer.CHECK_PATHS_MAX_BYTES` of quoted paths, started with the
        uploads) prints every file's size and SHA-256 on the host, which must match: this catches a file
        that is short or was changed there (full disk, another writer).

        Args:
            files: ``(local path, remote path)`` pairs; the remote directory must exist.
            on_progress: ``(local_path, bytes_delta)`` as bytes are handed to SSH; the deltas of a file sum
                to its size. Calls are serialized under a lock (Rich progress is thread-safe anyway).
            concurrency: files in flight at once (at least 1).

        Returns:
            One :class:`PushedFile` per input, in input order.

        Raises:
            ValueError: two files have the same remote path.
            InputError: a local file cannot be read (checked before anything is sent).
            TransferError: a transfer failed or a file did not verify (every failed file is named).
            SSHError: the connection is closed.
        """
        return transfer.push(self, files, on_progress=on_progress, concurrency=concurrency)

    # --- pull ---------------------------------------------------------------------------------------------

    def pull(self, files: Sequence[tuple[str, Path | str]], *, channel_timeout_s: float = 30.0) -> list[Path]:
        """Download files, each written atomically, checking the size the host reports.

        Each file streams over its own exec channel (``wc -c`` then ``cat``, quoted) into a temporary file
        in its destination directory, which is moved into place with :func:`os.replace` only when complete
        and of the size the host reported; an existing file is either kept as it was or replaced by a
        complete one. Destination directories are created. Up to
        :data:`~gpu_transcribe.ssh.transfer.PULL_CONCURRENCY` files stream at once; not over SFTP
        (:func:`gpu_transcribe.ssh.transfer.pull` says why).

        Args:
            files: ``(remote path, local path)`` pairs.
            channel_timeout_s: seconds to wait for the server to open each channel.

        Returns:
            The local paths written, in input order.

        Raises:
            TransferError: a remote file is missing or unreadable, or the transfer failed or came short.
            OutputError: a local destination cannot be written.
            SSHError: the connection is closed.
        """
        return transfer.pull(self, files, channel_timeout_s=channel_timeout_s)

    # --- heartbeat ------------------------------------------------------------------------------------

    def start_heartbeat(
        self,
        remote_path: str,
        *,
        interval_s: float = 30.0,
        on_error: Callable[[str], None] | None = None,
    ) -> Heartbeat:
        """Touch ``remote_path`` on the host now and every ``interval_s`` seconds, in a background thread.

        The instance's dead-man switch terminates it when this file grows stale (the AWS layer defines the
        path and the allowed age; keep ``interval_s`` well below that age). Each beat rewrites the file over
        SFTP, so its mtime comes from the host's clock, not ours. A failed beat is reported to ``on_error``
        and retried at the next interval; the thread ends with :meth:`Heartbeat.stop` or :meth:`close`.

        Raises:
            SSHError: the connection is closed.
        """
        self._check_open("start a heartbeat")
        heartbeat = Heartbeat(self, remote_path, interval_s, on_error)
        with self._lock:
            self._heartbeats.append(heartbeat)
        heartbeat.start()
        return heartbeat


class StartedCommand:
    """A command running on its own channel, its stdin still open; made by :meth:`SSHSession._start`.

    Its stderr is read from the start in a thread (last lines kept, each cut to 2000 characters); its
    stdout waits for :meth:`finish`. :meth:`SSHSession.run` is ``_start`` then ``finish``.

    Attributes:
        command: the command line as sent (quoted).
    """

    def __init__(
        self, session: SSHSession, argv: Sequence[str], stderr_tail_lines: int, channel_timeout_s: float
    ) -> None:
        self.command = command_line(argv)
        self._session = session
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=max(1, stderr_tail_lines))
        try:
            channel = session._exec(argv, channel_timeout_s)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise self._lost(exc) from exc
        self._channel = channel
        self._stderr_thread = threading.Thread(
            target=drain_stderr, args=(channel, self._stderr_tail), name="ssh-stderr", daemon=True
        )
        self._stderr_thread.start()

    def finish(
        self,
        *,
        stdin: bytes = b"",
        on_stdout_line: Callable[[str], None] | None = None,
        check: bool = True,
    ) -> CommandResult:
        """Send ``stdin`` and close it, then read stdout to its end and wait for the exit status.

        Arguments, result and errors as in :meth:`SSHSession.run`.
        """
        session, command, channel = self._session, self.command, self._channel
        stdout_parts: list[str] = []
        try:
            if stdin:
                channel.sendall(stdin)
            channel.shutdown_write()
            emit = on_stdout_line if on_stdout_line is not None else stdout_parts.append
            for line in LineReader(channel.recv):
                emit(line)
            returncode = channel.recv_exit_status()
            self._stderr_thread.join(timeout=5)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise self._lost(exc) from exc
        finally:
            channel.close()
        tail = "\n".join(self._stderr_tail)
        if returncode == -1:
            why = (
                "the connection was closed" if session.closed else "it ended without an exit status (signal)"
            )
            raise RemoteCommandError(f"{session.target}: {command} did not finish: {why}", -1, command, tail)
        if check and returncode != 0:
            raise RemoteCommandError(
                f"{session.target}: {command} exited with status {returncode}", returncode, command, tail
            )
        stdout = "\n".join(stdout_parts) if on_stdout_line is None else ""
        return CommandResult(returncode=returncode, stdout=stdout, stderr_tail=tail)

    def _lost(self, exc: BaseException) -> RemoteCommandError:
        message = (
            f"{self._session.target}: lost the connection while running {self.command} ({one_line(exc)})"
        )
        return RemoteCommandError(message, -1, self.command, "\n".join(self._stderr_tail))

    def abandon(self) -> None:
        """Close the channel without waiting: the host ends the command (stdin and stdout are gone)."""
        self._channel.close()
