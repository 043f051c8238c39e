"""The SSH layer: connect to an instance, run quoted commands, push and pull files, keep a heartbeat.

This is the only module that imports paramiko. It returns our own data classes and raises only
:mod:`gpu_transcribe.errors` exceptions (:class:`SSHError` and its subclasses, :class:`InputError` for an
unusable identity file, :class:`OutputError` for an unwritable local destination).

Security rules (issue 4, HELPERS.md):

* The host key is never trusted on first use. The caller names the expected key: the exact OpenSSH public
  key line injected into the instance at launch, or a known_hosts file (``--host``). Any other key, or no
  expected key at all, raises :class:`HostKeyError` and the connection is closed; it is never retried.
* Only the given client key is offered (no agent, no ``~/.ssh`` keys).
* Remote commands are built from argv with :func:`shlex.quote` (:func:`command_line`); :meth:`SSHSession.run`
  accepts nothing else.

Throughput (``bench/transfer.py``, loopback OpenSSH 9.2 sshd, 2 shared cores): paramiko's cost is per SSH
packet in Python, and OpenSSH caps session-channel packets at 32 KiB, so pushes send SFTP writes that fill
whole packets (:func:`sftp_write_size`, about 224 KiB instead of paramiko's 32 KiB, which splits each write
into a full and a tiny packet), pipelined, on AES-GCM (one AEAD call per packet instead of AES-CTR plus a
separate HMAC-SHA256: 2.3 GB/s vs 1.2 GB/s for the HMAC alone on this CPU). Several SFTP channels writing
ranges of one file cost more CPU than they gained on 2 cores, so one file goes over one channel and a batch
over up to :data:`PUSH_CONCURRENCY` channels. The remote SHA-256 check runs in one remote shell per batch
that hashes each file as soon as it is written, while the next ones go up; it uses ``openssl dgst`` where
present: coreutils ``sha256sum`` 9.1 (no SHA-NI) hashes about 170 MB/s here against about 1 GB/s for
OpenSSL. Result: about 0.75-0.85x scp for one 200 MB file and 0.8-0.95x for 8 x 25 MB, set-up and
verification included, where plain ``SFTPClient.put`` reaches about 0.55x without verifying. Pulls stream
``cat`` over an exec channel (see :meth:`SSHSession.pull` for why not SFTP).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import hashlib
import io
import logging
import os
import re
import shlex
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gpu_transcribe.errors import (
    HostKeyError,
    InputError,
    OutputError,
    RemoteCommandError,
    SSHError,
    SSHTimeoutError,
    TransferError,
)

logger = logging.getLogger(__name__)

# --- tuning (see the module docstring and bench/transfer.py) ------------------------------------------

#: Cipher preference. AES-GCM first: one AEAD call per packet in paramiko's Python packetizer instead of
#: AES-CTR plus HMAC; OpenSSH servers offer both. The rest keeps paramiko's own order as fallback.
PREFERRED_CIPHERS: tuple[str, ...] = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
#: Receive window per channel, bytes: paramiko's default (64 x 32 KiB). Measured on loopback: a 200 MB
#: pull streams at 110-135 MB/s with 2 or 8 MiB alike (and SFTP prefetch reads got slower with 8 MiB,
#: 43 vs 65 MB/s, as paramiko's receive buffer memmoves its unread bytes on every small read). Pushes are
#: bounded by the server's window (OpenSSH: 2 MiB per channel), not this one.
WINDOW_SIZE_BYTES = 2 * 1024 * 1024
#: Largest SSH packet payload we accept from the server, bytes (RFC 4254 channels; paramiko default 32 KiB).
MAX_PACKET_SIZE_BYTES = 32 * 1024
#: OpenSSH sftp-server's largest WRITE payload: SFTP_MAX_MSG_LENGTH (256 KiB) minus 1024, as it advertises in
#: its ``limits@openssh.com`` extension (sftp-server.c). Other servers get the SFTP minimum, 32 KiB.
OPENSSH_MAX_WRITE_BYTES = 256 * 1024 - 1024
SFTP_MIN_WRITE_BYTES = 32 * 1024
#: Files pushed at once, each on its own SFTP channel (measured: more channels only add CPU on 2 cores).
PUSH_CONCURRENCY = 4
#: Files pulled at once, each on its own exec channel.
PULL_CONCURRENCY = 4
#: Largest read from a pull's channel, bytes.
PULL_CHUNK_BYTES = 1024 * 1024
#: Prints the file's size, then its bytes (``wc -c`` prints just the number for stdin). Two opens: a
#: file changing in between shows as a size mismatch.
_PULL_SCRIPT = 'wc -c < "$1" && exec cat < "$1"'
#: Prints each argument's size in bytes (``stat``), one line each, then its SHA-256, one line each, both in
#: argument order. ``openssl dgst`` where installed: coreutils ``sha256sum`` 9.1 (no SHA-NI) hashes about
#: 170 MB/s on the loopback test machine against about 1 GB/s for OpenSSL. Both tools escape a newline in
#: a name, so every file is one line. Fails (non-zero) if a file cannot be read.
_CHECK_SCRIPT = (
    'stat -c %s -- "$@" || exit\n'
    'if command -v openssl >/dev/null 2>&1; then exec openssl dgst -sha256 -r -- "$@"; fi\n'
    'exec sha256sum -- "$@"'
)
#: A hash line of either tool: ``[\\]HEX *NAME`` (openssl -r) or ``[\\]HEX  NAME`` (sha256sum).
_HASH_LINE_RE = re.compile(r"\\?([0-9a-f]{64}) ")
#: Quoted paths per check command, bytes. sshd hands the command line to the login shell as one argument,
#: and Linux caps one argument at 128 KiB (MAX_ARG_STRLEN).
CHECK_PATHS_MAX_BYTES = 64 * 1024

ProgressCallback = Callable[[Path, int], None]
"""``(local_path, bytes_delta)``: bytes just sent for one file. Called under a lock, from worker threads."""


# --- data classes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SSHTarget:
    """Where and how to log in, and which host key to expect.

    One of ``private_key`` / ``identity_file`` gives the client key, and one of ``host_public_key`` /
    ``known_hosts_file`` the expected host key (the first of each pair wins if both are given).

    Attributes:
        host: DNS name or IP address.
        username: remote login, e.g. ``ubuntu``.
        port: TCP port of sshd.
        private_key: the client private key itself (OpenSSH or PEM text; ed25519, ECDSA or RSA), e.g. the
            per-run key. Not shown in ``repr``.
        identity_file: a private key file instead (``--identity FILE``).
        host_public_key: the exact host key line expected, ``ssh-ed25519 AAAA... [comment]`` (the key
            injected at launch through cloud-init).
        known_hosts_file: an OpenSSH known_hosts file with an entry for ``host`` (``[host]:port`` when the
            port is not 22; hashed entries work).
    """

    host: str
    username: str
    port: int = 22
    private_key: str | bytes | None = field(default=None, repr=False)
    identity_file: Path | None = None
    host_public_key: str | None = None
    known_hosts_file: Path | None = None

    @property
    def host_key_name(self) -> str:
        """The host's name as OpenSSH writes it in known_hosts: ``host`` or ``[host]:port``."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def __str__(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"


@dataclass(frozen=True)
class ConnectAttempt:
    """One failed connection attempt, for progress output.

    Attributes:
        number: 1 for the first attempt.
        elapsed_s: seconds since :func:`connect` started.
        error: one line saying why the attempt failed.
        retry_in_s: seconds until the next attempt.
    """

    number: int
    elapsed_s: float
    error: str
    retry_in_s: float


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


@dataclass(frozen=True)
class PushedFile:
    """One file pushed and verified on the remote host.

    Attributes:
        local_path: the file sent.
        remote_path: where it is on the remote host.
        size_bytes: its size, equal on both sides.
        sha256: its SHA-256, hex, equal on both sides.
    """

    local_path: Path
    remote_path: str
    size_bytes: int
    sha256: str


# --- helpers --------------------------------------------------------------------------------------------


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


def sftp_write_size(max_packet_bytes: int, handle_bytes: int, max_write_bytes: int) -> int:
    """Largest SFTP WRITE payload whose request exactly fills whole SSH packets.

    Paramiko sends at most ``max_packet_bytes - 64`` bytes of channel data per SSH packet. A WRITE request
    is ``uint32 length, byte type, uint32 id, string handle, uint64 offset, string data``: 25 bytes plus
    the handle plus the data. Filling whole packets sends 7 packets per 224 KiB instead of paramiko's 2
    per 32 KiB write (one full, one of ~90 bytes).

    Args:
        max_packet_bytes: the channel's outgoing max packet size (the server's, 32 KiB for OpenSSH).
        handle_bytes: length of the open file's SFTP handle (4 for OpenSSH).
        max_write_bytes: the server's largest accepted write payload.

    Returns:
        Payload size in bytes, at least :data:`SFTP_MIN_WRITE_BYTES` - overhead when nothing else fits.
    """
    per_packet = max_packet_bytes - 64
    overhead = 25 + handle_bytes
    packets = max(1, (max_write_bytes + overhead) // per_packet)
    size = packets * per_packet - overhead
    if size > max_write_bytes or size <= 0:
        size = min(max_write_bytes, SFTP_MIN_WRITE_BYTES)
    return size


def _load_private_key(data: str | bytes, source: str) -> paramiko.PKey:
    """A paramiko key from OpenSSH or PEM private key text. ``source`` names it in errors."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        try:
            loaded: Any = serialization.load_ssh_private_key(raw, password=None)
        except ValueError:
            loaded = serialization.load_pem_private_key(raw, password=None)
    except TypeError as exc:  # cryptography: "Password was not given but private key is encrypted"
        raise InputError(
            source, f"{source}: the key is passphrase-protected; use an unencrypted key"
        ) from exc
    except (ValueError, paramiko.SSHException) as exc:
        raise InputError(source, f"{source}: not an OpenSSH or PEM private key ({exc})") from exc
    key_class: type[paramiko.PKey]
    if isinstance(loaded, ed25519.Ed25519PrivateKey):
        key_class = paramiko.Ed25519Key
    elif isinstance(loaded, ec.EllipticCurvePrivateKey):
        key_class = paramiko.ECDSAKey
    elif isinstance(loaded, rsa.RSAPrivateKey):
        key_class = paramiko.RSAKey
    else:
        raise InputError(source, f"{source}: unsupported key type {type(loaded).__name__}; use ed25519")
    try:
        return key_class.from_private_key(io.StringIO(raw.decode()))
    except (paramiko.SSHException, ValueError, UnicodeDecodeError) as exc:
        raise InputError(source, f"{source}: cannot load the private key ({exc})") from exc


def _client_key(target: SSHTarget) -> paramiko.PKey:
    if target.private_key is not None:
        return _load_private_key(target.private_key, "the run's private key")
    if target.identity_file is not None:
        path = Path(target.identity_file).expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(path, f"{path}: cannot read the identity file ({exc.strerror})") from exc
        return _load_private_key(data, str(path))
    raise SSHError(f"no client key for {target}: give a private key or an identity file")


def _host_key_entry(line: str) -> paramiko.hostkeys.HostKeyEntry | None:
    """A parsed known_hosts line, or None if it is not one paramiko understands."""
    try:
        entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
    except Exception:  # InvalidHostKey (bad base64), SSHException, ValueError...
        return None
    if entry is None or entry.key is None:
        return None
    return entry


def _expected_host_keys(target: SSHTarget) -> paramiko.HostKeys:
    """The host keys to accept for ``target``, under its known_hosts name.

    Raises:
        HostKeyError: no expected key (none given, unreadable file, or no entry for this host).
    """
    keys = paramiko.HostKeys()
    name = target.host_key_name
    if target.host_public_key is not None:
        entry = _host_key_entry(f"{name} {target.host_public_key.strip()}")
        if entry is None:
            raise HostKeyError(f"the expected host key for {name} is not an OpenSSH public key line")
        keys.add(name, entry.key.get_name(), entry.key)
    elif target.known_hosts_file is not None:
        path = Path(target.known_hosts_file).expanduser()
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError as exc:
            raise HostKeyError(f"{path}: cannot read the known_hosts file ({exc.strerror})") from exc
        for line in lines:
            line = line.strip()
            # Comments, and marker lines (@cert-authority, @revoked) which paramiko does not model.
            if not line or line.startswith(("#", "@")):
                continue
            entry = _host_key_entry(line)
            if entry is None:
                continue
            for hostname in entry.hostnames:  # hashed names (|1|...) are matched by lookup()
                keys.add(hostname, entry.key.get_name(), entry.key)
        found = keys.lookup(name)
        if not found:
            raise HostKeyError(
                f"{path} has no host key for {name}; add it (ssh-keyscan -p {target.port} {target.host}, "
                "checked against the host's console) and retry"
            )
        # SSHClient looks keys up by the plain name: keep only this host's keys, under it.
        keys = paramiko.HostKeys()
        for key_type, key in found.items():
            keys.add(name, key_type, key)
    else:
        raise HostKeyError(f"no expected host key for {name}: refusing to trust a key on first use")
    return keys


def _make_transport(sock: Any, /, **kwargs: Any) -> paramiko.Transport:
    """A paramiko Transport with our window, packet size and cipher order (``transport_factory``)."""
    transport = paramiko.Transport(
        sock,
        default_window_size=WINDOW_SIZE_BYTES,
        default_max_packet_size=MAX_PACKET_SIZE_BYTES,
        disabled_algorithms=kwargs.get("disabled_algorithms"),
    )
    options = transport.get_security_options()
    available = list(options.ciphers)
    first = [c for c in PREFERRED_CIPHERS if c in available]
    options.ciphers = tuple(first + [c for c in available if c not in first])
    return transport


def _one_line(exc: BaseException) -> str:
    """One line about an exception, for messages and progress ("connection refused", "timed out")."""
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        reasons = sorted({(getattr(e, "strerror", None) or str(e)) for e in exc.errors.values()})
        return f"connection failed: {', '.join(reasons)}".lower()
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# --- connecting ------------------------------------------------------------------------------------------


def connect(
    target: SSHTarget,
    *,
    deadline_s: float = 300.0,
    connect_timeout_s: float = 10.0,
    banner_timeout_s: float = 15.0,
    auth_timeout_s: float = 15.0,
    retry_interval_s: float = 2.0,
    auth_failures_allowed: int = 2,
    on_attempt: Callable[[ConnectAttempt], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> SSHSession:
    """Connect and log in, retrying while the host's sshd comes up.

    Each attempt is bounded by ``connect_timeout_s`` (TCP connect and key exchange), ``banner_timeout_s``
    (waiting for the server's ``SSH-2.0`` line: a port that accepts but never speaks) and
    ``auth_timeout_s``, each clipped to the time left before the deadline. Refused, unreachable, reset and
    timed-out attempts are retried every ``retry_interval_s``. A fresh EC2 instance takes 30-90 s to
    answer; the 300 s default deadline leaves room for slow boots.

    Args:
        target: where to connect, the client key and the expected host key.
        deadline_s: give up after this many seconds in all.
        connect_timeout_s / banner_timeout_s / auth_timeout_s: per-attempt limits in seconds.
        retry_interval_s: pause between attempts in seconds.
        auth_failures_allowed: authentication failures retried before giving up (cloud-init may install
            the authorized key a moment after sshd starts).
        on_attempt: called after each failed attempt that will be retried.
        clock / sleep: monotonic seconds and a sleep, injectable for tests.

    Returns:
        An open :class:`SSHSession`.

    Raises:
        HostKeyError: the host showed another key, or no expected key is known. Never retried.
        SSHTimeoutError: no session before the deadline (the last error is in the message).
        SSHError: authentication kept failing.
        InputError: the identity file cannot be used.
    """
    pkey = _client_key(target)
    expected = _expected_host_keys(target)
    start = clock()
    attempt = 0
    auth_failures = 0
    while True:
        attempt += 1
        left = deadline_s - (clock() - start)
        if left <= 0:
            raise SSHTimeoutError(
                f"{target}: no SSH session within {deadline_s:.0f} s ({attempt - 1} attempts)"
            )
        client = paramiko.SSHClient()
        client.get_host_keys().update(expected)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                target.host,
                port=target.port,
                username=target.username,
                pkey=pkey,
                timeout=max(0.1, min(connect_timeout_s, left)),
                banner_timeout=max(0.1, min(banner_timeout_s, left)),
                auth_timeout=max(0.1, min(auth_timeout_s, left)),
                allow_agent=False,
                look_for_keys=False,
                transport_factory=_make_transport,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(
                f"{target.host_key_name} presented a {exc.key.get_name()} host key "
                f"(SHA256:{exc.key.fingerprint.split(':', 1)[-1]}) that is not the expected one; refused"
            ) from exc
        except paramiko.AuthenticationException as exc:
            client.close()
            auth_failures += 1
            if auth_failures > auth_failures_allowed:
                raise SSHError(
                    f"{target}: the server refused our key ({_one_line(exc)}); check the user name and key"
                ) from exc
            error = _one_line(exc)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            # Refused, unreachable, reset, socket timeout, no banner, kex timeout: sshd not (yet) up.
            client.close()
            if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
                raise HostKeyError(f"{target.host_key_name}: host key not known; refused") from exc
            error = _one_line(exc)
        else:
            return SSHSession(client, target)
        elapsed = clock() - start
        wait_s = max(0.0, min(retry_interval_s, deadline_s - elapsed))
        logger.debug("SSH attempt %d to %s failed after %.1f s: %s", attempt, target, elapsed, error)
        if elapsed + wait_s >= deadline_s:
            raise SSHTimeoutError(
                f"{target}: no SSH session within {deadline_s:.0f} s ({attempt} attempts; last: {error})"
            )
        if on_attempt is not None:
            on_attempt(ConnectAttempt(number=attempt, elapsed_s=elapsed, error=error, retry_in_s=wait_s))
        sleep(wait_s)


# --- the session -------------------------------------------------------------------------------------------


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
            raise SSHError(f"{self.target}: cannot open a channel ({_one_line(exc)})") from exc

    def _open_sftp(self) -> paramiko.SFTPClient:
        self._check_open("open SFTP")
        try:
            sftp = paramiko.SFTPClient.from_transport(self._transport)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SSHError(f"{self.target}: cannot start SFTP ({_one_line(exc)})") from exc
        if sftp is None:
            raise SSHError(f"{self.target}: cannot start SFTP")
        return sftp

    # --- commands -----------------------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        on_stdout_line: Callable[[str], None] | None = None,
        check: bool = True,
        stderr_tail_lines: int = 40,
        channel_timeout_s: float = 30.0,
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

        Returns:
            The exit status, stdout (without callback) and stderr tail.

        Raises:
            RemoteCommandError: non-zero exit with ``check``; or always, with ``returncode=-1``, when the
                command ended without a status (killed by a signal, connection closed or lost).
            SSHError: the connection is closed or no channel could be opened.
        """
        command = command_line(argv)
        self._check_open(f"run {command}")
        channel = self._open_channel(channel_timeout_s)
        stderr_tail: collections.deque[str] = collections.deque(maxlen=max(1, stderr_tail_lines))
        stdout_parts: list[str] = []
        try:
            channel.exec_command(command)
            channel.shutdown_write()
            stderr_thread = threading.Thread(
                target=_drain_stderr, args=(channel, stderr_tail), name="ssh-stderr", daemon=True
            )
            stderr_thread.start()
            emit = on_stdout_line if on_stdout_line is not None else stdout_parts.append
            for line in LineReader(channel.recv):
                emit(line)
            returncode = channel.recv_exit_status()
            stderr_thread.join(timeout=5)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise RemoteCommandError(
                f"{self.target}: lost the connection while running {command} ({_one_line(exc)})",
                -1,
                command,
                "\n".join(stderr_tail),
            ) from exc
        finally:
            channel.close()
        tail = "\n".join(stderr_tail)
        if returncode == -1:
            why = "the connection was closed" if self.closed else "it ended without an exit status (signal)"
            raise RemoteCommandError(f"{self.target}: {command} did not finish: {why}", -1, command, tail)
        if check and returncode != 0:
            raise RemoteCommandError(
                f"{self.target}: {command} exited with status {returncode}", returncode, command, tail
            )
        stdout = "\n".join(stdout_parts) if on_stdout_line is None else ""
        return CommandResult(returncode=returncode, stdout=stdout, stderr_tail=tail)

    # --- push -------------------------------------------------------------------------------------------

    def push(
        self,
        files: Sequence[tuple[Path | str, str]],
        *,
        on_progress: ProgressCallback | None = None,
        concurrency: int = PUSH_CONCURRENCY,
    ) -> list[PushedFile]:
        """Upload files over SFTP, several at once, then check size and SHA-256 on the host.

        Each file goes over one SFTP channel in pipelined writes sized by :func:`sftp_write_size`; up to
        ``concurrency`` files go at once on separate channels of this connection. The local SHA-256 is
        computed from the bytes as they are sent. SSH's MAC already protects the bytes in transit; once all
        are written, one remote command (per :data:`CHECK_PATHS_MAX_BYTES` of paths) prints every file's
        size and SHA-256 on the host, which must match: this catches a file that is short or was changed
        there (full disk, another writer).

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
        self._check_open("push files")
        jobs: list[tuple[Path, str, int]] = []
        for local, remote in files:
            path = Path(local)
            try:
                size = path.stat().st_size
                with path.open("rb"):
                    pass
            except OSError as exc:
                raise InputError(path, f"{path}: cannot read it ({exc.strerror})") from exc
            if not path.is_file():
                raise InputError(path, f"{path}: not a regular file")
            jobs.append((path, remote, size))
        if not jobs:
            return []
        remotes = [remote for _, remote, _ in jobs]
        if len(set(remotes)) != len(remotes):
            raise ValueError("two files would be pushed to the same remote path")
        progress_lock = threading.Lock()

        def report(path: Path, delta: int) -> None:
            if on_progress is not None and delta:
                with progress_lock:
                    on_progress(path, delta)

        thread_state = threading.local()
        clients: list[paramiko.SFTPClient] = []
        clients_lock = threading.Lock()

        def sftp_for_thread() -> paramiko.SFTPClient:
            sftp: paramiko.SFTPClient | None = getattr(thread_state, "sftp", None)
            if sftp is None:
                sftp = self._open_sftp()
                thread_state.sftp = sftp
                with clients_lock:
                    clients.append(sftp)
            return sftp

        def upload_one(index: int) -> str | SSHError | InputError:
            path, remote, size = jobs[index]
            try:
                return self._upload(sftp_for_thread(), path, remote, size, report)
            except (SSHError, InputError) as exc:
                return exc

        workers = max(1, min(concurrency, len(jobs)))
        try:
            if workers == 1:
                uploads = [upload_one(i) for i in range(len(jobs))]
            else:
                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sftp-push") as pool:
                    uploads = list(pool.map(upload_one, range(len(jobs))))
        finally:
            for sftp in clients:
                with contextlib.suppress(Exception):
                    sftp.close()
        outcomes: list[PushedFile | SSHError | InputError] = []
        sent = [i for i, upload in enumerate(uploads) if isinstance(upload, str)]
        on_host = self._check_on_host([jobs[i][1] for i in sent])
        found = dict(zip(sent, on_host, strict=True))
        for index, upload in enumerate(uploads):
            path, remote, size = jobs[index]
            if isinstance(upload, SSHError | InputError):
                outcomes.append(upload)
                continue
            check = found[index]
            if isinstance(check, SSHError):
                outcomes.append(check)
            elif check[0] != size:
                outcomes.append(TransferError(f"{remote}: {check[0]} bytes on the host, {size} sent"))
            elif check[1] != upload:
                outcomes.append(TransferError(f"{remote}: SHA-256 {check[1]} on the host, {upload} sent"))
            else:
                outcomes.append(
                    PushedFile(local_path=path, remote_path=remote, size_bytes=size, sha256=upload)
                )
        failures = [o for o in outcomes if not isinstance(o, PushedFile)]
        if failures:
            first = failures[0]
            if isinstance(first, InputError):
                raise first
            if self.closed:
                raise SSHError(f"{self.target}: the connection closed during the push") from first
            message = "; ".join(dict.fromkeys(str(f) for f in failures))  # a command's error once
            raise TransferError(f"{len(failures)} of {len(jobs)} file(s) not pushed: {message}") from first
        return [o for o in outcomes if isinstance(o, PushedFile)]

    def _check_on_host(self, remotes: Sequence[str]) -> list[tuple[int, str] | SSHError]:
        """``(size in bytes, SHA-256 hex)`` of each remote file as the host sees it, in order, or the error
        of the command that should have told (:data:`_CHECK_SCRIPT`, one run per group of paths)."""
        found: list[tuple[int, str] | SSHError] = []
        for group in _path_groups(remotes):
            lines: list[str] = []
            try:
                result = self.run(
                    ["sh", "-c", _CHECK_SCRIPT, "sh", *group], on_stdout_line=lines.append, check=False
                )
            except SSHError as exc:
                found += [exc] * len(group)
                continue
            sizes, hashes = lines[: len(group)], [_HASH_LINE_RE.match(line) for line in lines[len(group) :]]
            if result.returncode != 0 or len(lines) != 2 * len(group) or not all(s.isdigit() for s in sizes):
                why = result.stderr_tail.replace("\n", "; ") or f"exit status {result.returncode}"
                found += [TransferError(f"{self.target}: cannot check the pushed files there ({why})")] * len(
                    group
                )
                continue
            for path, size, match in zip(group, sizes, hashes, strict=True):
                if match is None:
                    found.append(TransferError(f"{path}: no SHA-256 in the host's answer"))
                else:
                    found.append((int(size), match.group(1)))
        return found

    def _upload(
        self, sftp: paramiko.SFTPClient, path: Path, remote: str, size: int, report: ProgressCallback
    ) -> str:
        """Write ``path`` to ``remote`` with pipelined packet-filling writes; return the SHA-256 sent."""
        digest = hashlib.sha256()
        sent = 0
        try:
            with path.open("rb") as source, sftp.open(remote, "wb") as sink:
                sink.set_pipelined(True)
                max_write = (
                    OPENSSH_MAX_WRITE_BYTES if "OpenSSH" in self.server_version else SFTP_MIN_WRITE_BYTES
                )
                chunk_size = sftp_write_size(
                    self._out_packet_bytes(sftp), len(getattr(sink, "handle", b"")), max_write
                )
                sink.MAX_REQUEST_SIZE = chunk_size  # paramiko writes at most this much per request
                while True:
                    chunk = source.read(chunk_size)
                    if not chunk:
                        break
                    digest.update(chunk)  # hashlib releases the GIL for large buffers
                    sink.write(chunk)
                    sent += len(chunk)
                    report(path, len(chunk))
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) and exc.filename == str(path):
                raise InputError(path, f"{path}: vanished during the push") from exc
            raise TransferError(f"{path} -> {remote}: {_one_line(exc)}") from exc
        except (paramiko.SSHException, EOFError) as exc:
            raise TransferError(f"{path} -> {remote}: {_one_line(exc)}") from exc
        if sent != size:
            raise TransferError(f"{path} changed size during the push ({size} bytes, then {sent}); retry")
        return digest.hexdigest()

    @staticmethod
    def _out_packet_bytes(sftp: paramiko.SFTPClient) -> int:
        channel = sftp.get_channel()
        return int(getattr(channel, "out_max_packet_size", 0) or SFTP_MIN_WRITE_BYTES)

    # --- pull ---------------------------------------------------------------------------------------------

    def pull(self, files: Sequence[tuple[str, Path | str]], *, channel_timeout_s: float = 30.0) -> list[Path]:
        """Download files, each written atomically, checking the size the host reports.

        Each file streams over its own exec channel (``wc -c`` then ``cat``, quoted) into a temporary file
        in its destination directory, which is moved into place with :func:`os.replace` only when complete
        and of the size the host reported; an existing file is either kept as it was or replaced by a
        complete one. Not SFTP: paramiko reads SFTP files either one request at a time (about 7 MB/s on
        loopback: OpenSSH leaves Nagle on for non-interactive sessions, so each reply waits for a delayed
        ACK) or with a prefetch thread that dies with a stray traceback if the connection is closed mid-pull
        (Ctrl-C). A channel streams at window speed and stops when closed. Destination directories are
        created.

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
        self._check_open("pull files")
        if len(files) <= 1:
            return [self._pull_one(remote, Path(local), channel_timeout_s) for remote, local in files]
        # Each channel costs the host a fork and exec of sh (tens of ms; measured 0.2-0.3 s per transcript on
        # a 2-core machine while the engine decoded the next file), so pull concurrently.
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(PULL_CONCURRENCY, len(files)))
        try:
            futures = [pool.submit(self._pull_one, r, Path(local), channel_timeout_s) for r, local in files]
            return [future.result() for future in futures]
        finally:
            # On an error or a signal, do not wait for the other pulls: closing the session ends them.
            pool.shutdown(wait=False, cancel_futures=True)

    def _pull_one(self, remote: str, dest: Path, channel_timeout_s: float) -> Path:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            handle, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        except OSError as exc:
            raise OutputError(dest, f"{dest.parent}: cannot write there ({exc.strerror})") from exc
        tmp = Path(tmp_name)
        try:
            with os.fdopen(handle, "wb") as out:
                self._stream_file(remote, dest, out, channel_timeout_s)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise OutputError(dest, f"{dest}: cannot write it ({exc.strerror or exc})") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return dest

    def _stream_file(self, remote: str, dest: Path, out: io.BufferedWriter, channel_timeout_s: float) -> None:
        """Copy a remote file's bytes into ``out``; raise TransferError unless all of them came."""
        self._check_open(f"pull {remote}")
        command = command_line(["sh", "-c", _PULL_SCRIPT, "sh", remote])
        channel = self._open_channel(channel_timeout_s)
        stderr_tail: collections.deque[str] = collections.deque(maxlen=10)
        size: int | None = None
        received = 0
        try:
            channel.exec_command(command)
            channel.shutdown_write()
            stderr_thread = threading.Thread(target=_drain_stderr, args=(channel, stderr_tail), daemon=True)
            stderr_thread.start()
            reader = LineReader(channel.recv, chunk_bytes=PULL_CHUNK_BYTES)
            header = reader.readline()
            if header is not None:
                text = header.strip()
                size = int(text) if text.isascii() and text.isdigit() else -1
                out.write(rest := reader.take_rest())
                received = len(rest)
                while data := channel.recv(PULL_CHUNK_BYTES):
                    out.write(data)
                    received += len(data)
            returncode = channel.recv_exit_status()
            stderr_thread.join(timeout=5)
        except (paramiko.SSHException, EOFError) as exc:
            raise TransferError(f"{remote} -> {dest}: {_one_line(exc)}") from exc
        finally:
            channel.close()
        if self.closed and (returncode != 0 or received != size):
            raise TransferError(f"{remote} -> {dest}: the connection was closed during the pull")
        if returncode != 0 or size is None or size < 0:
            why = "; ".join(stderr_tail) or f"exit status {returncode}"
            raise TransferError(f"{remote}: cannot read it on the host ({why})")
        if received != size:
            raise TransferError(f"{remote}: got {received} of {size} bytes")

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


def _path_groups(paths: Sequence[str], max_bytes: int = CHECK_PATHS_MAX_BYTES) -> list[list[str]]:
    """``paths`` in order, cut into groups whose quoted paths take at most ``max_bytes`` bytes (a path
    longer than that alone makes a group)."""
    groups: list[list[str]] = []
    length = 0
    for path in paths:
        cost = len(shlex.quote(path).encode()) + 1
        if not groups or length + cost > max_bytes:
            groups.append([])
            length = 0
        groups[-1].append(path)
        length += cost
    return groups


class LineReader:
    """Complete lines from one stream of a paramiko channel, as they arrive.

    ``recv`` is the stream's receive call (``channel.recv`` for stdout, ``channel.recv_stderr`` for
    stderr): it returns at most ``n`` bytes, blocks until some come, and returns ``b""`` at the end of the
    stream; its exceptions propagate. Lines are split at ``\\n``, lose a trailing ``\\r`` and are
    decoded as UTF-8 (bad bytes replaced); an unterminated last line is returned at the end of the stream.

    Args:
        recv: the receive call.
        chunk_bytes: most bytes asked of ``recv`` at once.
        max_line_chars: if given, lines are cut to this many characters, and an unterminated line longer
            than ``chunk_bytes`` keeps only its last ``max_line_chars`` bytes (bounded memory for a stream
            without newlines).
    """

    def __init__(
        self, recv: Callable[[int], bytes], *, chunk_bytes: int = 65536, max_line_chars: int | None = None
    ) -> None:
        self._recv = recv
        self._chunk_bytes = chunk_bytes
        self._max_line_chars = max_line_chars
        self._buffer = b""
        self._start = 0  # where the next line begins in _buffer
        self._scanned = 0  # _buffer[_start:_scanned] holds no newline
        self._eof = False

    def readline(self) -> str | None:
        """The next line, without its newline; None at the end of the stream."""
        while True:
            end = self._buffer.find(b"\n", self._scanned)
            if end >= 0:
                line = self._buffer[self._start : end]
                self._start = self._scanned = end + 1
                return self._decode(line)
            if self._eof:
                line = self.take_rest()
                return self._decode(line) if line else None
            data = self._recv(self._chunk_bytes)
            if not data:
                self._eof = True
                continue
            rest = self._buffer[self._start :]
            if self._max_line_chars is not None and len(rest) > self._chunk_bytes:
                rest = rest[-self._max_line_chars :]
            self._buffer, self._start, self._scanned = rest + data, 0, len(rest)

    def __iter__(self) -> Iterator[str]:
        while (line := self.readline()) is not None:
            yield line

    def take_rest(self) -> bytes:
        """The bytes received but not yet returned as lines, which the reader then forgets."""
        rest = self._buffer[self._start :]
        self._buffer, self._start, self._scanned = b"", 0, 0
        return rest

    def _decode(self, line: bytes) -> str:
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        return text if self._max_line_chars is None else text[: self._max_line_chars]


def _drain_stderr(channel: paramiko.Channel, tail: collections.deque[str]) -> None:
    """Read a channel's stderr to its end, keeping the last lines in ``tail`` (its maxlen bounds it), each
    cut to 2000 characters. A failed read ends it quietly: the caller reports the command's outcome."""
    with contextlib.suppress(Exception):
        for line in LineReader(channel.recv_stderr, max_line_chars=2000):
            tail.append(line)


class Heartbeat:
    """A background thread touching a remote file; made by :meth:`SSHSession.start_heartbeat`.

    Attributes:
        remote_path: the file touched.
        interval_s: seconds between beats.
        beats: beats that succeeded so far.
        failures: beats that failed so far.
        last_error: one line about the last failure, or ``""``.
    """

    def __init__(
        self,
        session: SSHSession,
        remote_path: str,
        interval_s: float,
        on_error: Callable[[str], None] | None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.remote_path = remote_path
        self.interval_s = interval_s
        self.beats = 0
        self.failures = 0
        self.last_error = ""
        self._session = session
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ssh-heartbeat", daemon=True)
        self._sftp: paramiko.SFTPClient | None = None

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop beating. Waits up to ``timeout_s`` seconds for the thread (0: do not wait). Idempotent."""
        self._stop.set()
        if timeout_s > 0 and self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    def _beat(self) -> None:
        if self._sftp is None:
            self._sftp = self._session._open_sftp()
        with self._sftp.open(self.remote_path, "w") as handle:
            handle.write(f"{time.time():.3f}\n".encode())

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._beat()
                self.beats += 1
            except Exception as exc:  # transient: reopen the channel next time
                if self._stop.is_set():
                    break
                self.failures += 1
                self.last_error = _one_line(exc)
                logger.debug("heartbeat to %s failed: %s", self.remote_path, self.last_error)
                if self._sftp is not None:
                    with contextlib.suppress(Exception):
                        self._sftp.close()
                    self._sftp = None
                if self._on_error is not None:
                    with contextlib.suppress(Exception):
                        self._on_error(self.last_error)
            self._stop.wait(self.interval_s)
        if self._sftp is not None:
            with contextlib.suppress(Exception):
                self._sftp.close()
            self._sftp = None
