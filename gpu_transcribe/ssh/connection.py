"""Connecting: where to log in (:class:`SSHTarget`), the client key, the expected host key, and
:func:`connect`, which retries while the host's sshd comes up.

Security rules:

* The host key is never trusted on first use. The caller names the expected key: the exact OpenSSH public
  key line injected into the instance at launch, or a known_hosts file (``--host``). Any other key, or no
  expected key at all, raises :class:`HostKeyError` and the connection is closed; it is never retried.
* Only the given client key is offered (no agent, no ``~/.ssh`` keys).

The transport prefers AES-GCM (:data:`PREFERRED_CIPHERS`): paramiko's cost is per SSH packet in Python, and
AES-GCM is one AEAD call per packet instead of AES-CTR plus a separate HMAC-SHA256 (2.3 GB/s vs 1.2 GB/s
for the HMAC alone on the 2-core loopback test machine, ``bench/transfer.py``).
"""

from __future__ import annotations

import io
import logging
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gpu_transcribe.errors import HostKeyError, InputError, SSHError, SSHTimeoutError
from gpu_transcribe.ssh.channel import one_line
from gpu_transcribe.ssh.session import SSHSession

logger = logging.getLogger(__name__)

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


def _refuse_open_permissions(path: Path, mode: int) -> None:
    """Refuse a private key file that its group or others may read or write, as OpenSSH does.

    Raises:
        InputError: ``mode`` gives the group or others any permission; the message names ``path`` and the fix.
    """
    if mode & 0o077:
        raise InputError(
            path,
            f"{path}: the identity file is accessible by others (mode {stat.S_IMODE(mode):04o}); "
            f"run `chmod 600 {path}`",
        )


def _client_key(target: SSHTarget) -> paramiko.PKey:
    """``target``'s client key: ``private_key``, else ``identity_file`` (InputError if unusable)."""
    if target.private_key is not None:
        return _load_private_key(target.private_key, "the run's private key")
    if target.identity_file is not None:
        path = Path(target.identity_file).expanduser()
        try:
            mode = path.stat().st_mode
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(path, f"{path}: cannot read the identity file ({exc.strerror})") from exc
        _refuse_open_permissions(path, mode)
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
                    f"{target}: the server refused our key ({one_line(exc)}); check the user name and key"
                ) from exc
            error = one_line(exc)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            # Refused, unreachable, reset, socket timeout, no banner, kex timeout: sshd not (yet) up.
            client.close()
            if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
                raise HostKeyError(f"{target.host_key_name}: host key not known; refused") from exc
            error = one_line(exc)
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
