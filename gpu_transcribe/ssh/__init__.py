"""The SSH layer: connect to an instance, run quoted commands, push and pull files, keep a heartbeat.

This package is the only code that imports paramiko. It returns our own data classes and raises only
:mod:`gpu_transcribe.errors` exceptions (:class:`SSHError` and its subclasses, :class:`InputError` for an
unusable identity file or local file to push, :class:`OutputError` for an unwritable local destination).

Modules:

* :mod:`~gpu_transcribe.ssh.connection`: :class:`SSHTarget`, client and host keys (never trusted on first
  use), :func:`connect` with its retries.
* :mod:`~gpu_transcribe.ssh.session`: :class:`SSHSession` and :meth:`SSHSession.run`, commands built from
  argv by :func:`command_line`.
* :mod:`~gpu_transcribe.ssh.transfer`: push over SFTP with a check on the host, pull with atomic writes.
* :mod:`~gpu_transcribe.ssh.heartbeat`: :class:`Heartbeat`, the file the host's dead-man switch watches.
* :mod:`~gpu_transcribe.ssh.tunnel`: :class:`LocalForward`, local port forwarding (``ssh -L``) over a session.
* :mod:`~gpu_transcribe.ssh.keys`: per-run ed25519 key pairs (the client's and the host's), kept in memory;
  made with ``cryptography``, no paramiko (the AWS layer imports it for ``ImportKeyPair`` and user data).
* :mod:`~gpu_transcribe.ssh.channel`: :class:`~gpu_transcribe.ssh.channel.LineReader`, the one reader of
  lines from a channel.
"""

from gpu_transcribe.ssh.connection import (
    MAX_PACKET_SIZE_BYTES,
    PREFERRED_CIPHERS,
    WINDOW_SIZE_BYTES,
    ConnectAttempt,
    SSHTarget,
    connect,
)
from gpu_transcribe.ssh.heartbeat import Heartbeat
from gpu_transcribe.ssh.session import CommandResult, SSHSession, command_line
from gpu_transcribe.ssh.transfer import (
    CHECK_PATHS_MAX_BYTES,
    OPENSSH_MAX_WRITE_BYTES,
    PULL_CHUNK_BYTES,
    PULL_CONCURRENCY,
    PUSH_CONCURRENCY,
    SFTP_MIN_WRITE_BYTES,
    ProgressCallback,
    PushedFile,
    sftp_write_size,
)
from gpu_transcribe.ssh.tunnel import LocalForward

__all__ = [
    "CHECK_PATHS_MAX_BYTES",
    "MAX_PACKET_SIZE_BYTES",
    "OPENSSH_MAX_WRITE_BYTES",
    "PREFERRED_CIPHERS",
    "PULL_CHUNK_BYTES",
    "PULL_CONCURRENCY",
    "PUSH_CONCURRENCY",
    "SFTP_MIN_WRITE_BYTES",
    "WINDOW_SIZE_BYTES",
    "CommandResult",
    "ConnectAttempt",
    "Heartbeat",
    "LocalForward",
    "ProgressCallback",
    "PushedFile",
    "SSHSession",
    "SSHTarget",
    "command_line",
    "connect",
    "sftp_write_size",
]
