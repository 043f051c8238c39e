"""Transferring files: :func:`push` (SFTP, several files at once, a progress callback, a size and SHA-256
check on the host) and :func:`pull` (a stream per file, written atomically), which
:meth:`~gpu_transcribe.ssh.SSHSession.push` and :meth:`~gpu_transcribe.ssh.SSHSession.pull` call and document.

Throughput (``bench/transfer.py``, loopback OpenSSH 9.2 sshd, 2 shared cores): paramiko's cost is per SSH
packet in Python, and OpenSSH caps session-channel packets at 32 KiB, so pushes send SFTP writes that fill
whole packets (:func:`sftp_write_size`, about 224 KiB instead of paramiko's 32 KiB, which splits each write
into a full and a tiny packet), pipelined, on AES-GCM (see :mod:`gpu_transcribe.ssh.connection`). Several
SFTP channels writing ranges of one file cost more CPU than they gained on 2 cores, so one file goes over
one channel and a batch over up to :data:`PUSH_CONCURRENCY` channels. SSH's MAC protects the bytes in
transit; one remote command (:data:`_CHECK_SCRIPT`), started with the uploads so that the host's shell
start-up overlaps them and released once they are done, prints every file's size and SHA-256 on the host,
which catches a file that is short or was changed there. Pulls stream ``cat`` over an exec channel (see
:func:`pull` for why not SFTP).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import hashlib
import re
import shlex
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import paramiko

from gpu_transcribe.errors import InputError, OutputError, SSHError, TransferError
from gpu_transcribe.ssh.channel import LineReader, drain_stderr, one_line
from gpu_transcribe_engine.files import replace_atomically

if TYPE_CHECKING:
    from gpu_transcribe.ssh.session import SSHSession, StartedCommand

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
#: Quoted paths per check command, bytes. sshd hands the command line to the login shell as one argument,
#: and Linux caps one argument at 128 KiB (MAX_ARG_STRLEN).
CHECK_PATHS_MAX_BYTES = 64 * 1024
#: Prints the file's size, then its bytes (``wc -c`` prints just the number for stdin). Two opens: a
#: file changing in between shows as a size mismatch.
_PULL_SCRIPT = 'wc -c < "$1" && exec cat < "$1"'
#: Waits for a line on stdin (the go-ahead once the uploads are done), then prints each argument's size in
#: bytes (``stat``), one line each, then its SHA-256, one line each, both in argument order. ``openssl
#: dgst`` where installed: coreutils ``sha256sum`` 9.1 (no SHA-NI) hashes about 170 MB/s on the loopback
#: test machine against about 1 GB/s for OpenSSL. Both tools escape a newline in a name, so every file is
#: one line. Fails (non-zero) if a file cannot be read, or if stdin ends without a line.
_CHECK_SCRIPT = (
    "read -r _ || exit\n"
    'stat -c %s -- "$@" || exit\n'
    'if command -v openssl >/dev/null 2>&1; then exec openssl dgst -sha256 -r -- "$@"; fi\n'
    'exec sha256sum -- "$@"'
)
#: A hash line of either tool: ``[\\]HEX *NAME`` (openssl -r) or ``[\\]HEX  NAME`` (sha256sum).
_HASH_LINE_RE = re.compile(r"\\?([0-9a-f]{64}) ")

ProgressCallback = Callable[[Path, int], None]
"""``(local_path, bytes_delta)``: bytes just sent for one file. Called under a lock, from worker threads."""


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


# --- push ------------------------------------------------------------------------------------------------


def push(
    session: SSHSession,
    files: Sequence[tuple[Path | str, str]],
    *,
    on_progress: ProgressCallback | None,
    concurrency: int,
) -> list[PushedFile]:
    """Upload ``files`` over ``session``, then check them on the host (:meth:`SSHSession.push`)."""
    session._check_open("push files")
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
            sftp = session._open_sftp()
            thread_state.sftp = sftp
            with clients_lock:
                clients.append(sftp)
        return sftp

    def upload_one(index: int) -> str | SSHError | InputError:
        path, remote, size = jobs[index]
        try:
            return _upload(session, sftp_for_thread(), path, remote, size, report)
        except (SSHError, InputError) as exc:
            return exc

    # Each check command starts while the first files go up and waits for a line on its stdin: the host's
    # shell start-up (0.1-0.3 s on the loopback test machine, where the login shell's rc runs pyenv)
    # overlaps the uploads.
    checks: list[tuple[list[str], StartedCommand | SSHError]] = []
    found: dict[int, tuple[int, str] | SSHError] = {}
    index_of = {remote: index for index, remote in enumerate(remotes)}
    workers = max(1, min(concurrency, len(jobs)))
    try:
        with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="sftp-push") as pool:
            futures = [pool.submit(upload_one, index) for index in range(len(jobs))]
            for group in _path_groups(remotes):
                try:
                    checks.append((group, session._start(["sh", "-c", _CHECK_SCRIPT, "sh", *group])))
                except SSHError as exc:
                    checks.append((group, exc))
            uploads = [future.result() for future in futures]
        for group, started in checks:
            indices = [index_of[remote] for remote in group]
            if not all(isinstance(uploads[i], str) for i in indices):
                continue  # the push fails anyway
            if isinstance(started, SSHError):
                found.update(dict.fromkeys(indices, started))
            else:
                found.update(zip(indices, _finish_check(session, group, started), strict=True))
    finally:
        for _, started in checks:
            if not isinstance(started, SSHError):
                started.abandon()
        for sftp in clients:
            with contextlib.suppress(Exception):
                sftp.close()
    outcomes: list[PushedFile | SSHError | InputError] = []
    for index, upload in enumerate(uploads):
        path, remote, size = jobs[index]
        if isinstance(upload, SSHError | InputError):
            outcomes.append(upload)
            continue
        check = found.get(index)
        if check is None:
            continue  # not checked: another file of its check command failed to upload
        if isinstance(check, SSHError):
            outcomes.append(check)
        elif check[0] != size:
            outcomes.append(TransferError(f"{remote}: {check[0]} bytes on the host, {size} sent"))
        elif check[1] != upload:
            outcomes.append(TransferError(f"{remote}: SHA-256 {check[1]} on the host, {upload} sent"))
        else:
            outcomes.append(PushedFile(local_path=path, remote_path=remote, size_bytes=size, sha256=upload))
    failures = [o for o in outcomes if not isinstance(o, PushedFile)]
    if failures:
        first = failures[0]
        if isinstance(first, InputError):
            raise first
        if session.closed:
            raise SSHError(f"{session.target}: the connection closed during the push") from first
        message = "; ".join(dict.fromkeys(str(f) for f in failures))  # a command's error once
        raise TransferError(f"{len(failures)} of {len(jobs)} file(s) not pushed: {message}") from first
    return [o for o in outcomes if isinstance(o, PushedFile)]


def _upload(
    session: SSHSession,
    sftp: paramiko.SFTPClient,
    path: Path,
    remote: str,
    size: int,
    report: ProgressCallback,
) -> str:
    """Write ``path`` to ``remote`` with pipelined packet-filling writes; return the SHA-256 sent."""
    digest = hashlib.sha256()
    sent = 0
    try:
        with path.open("rb") as source, sftp.open(remote, "wb") as sink:
            sink.set_pipelined(True)
            max_write = (
                OPENSSH_MAX_WRITE_BYTES if "OpenSSH" in session.server_version else SFTP_MIN_WRITE_BYTES
            )
            out_packet = getattr(sftp.get_channel(), "out_max_packet_size", 0) or SFTP_MIN_WRITE_BYTES
            chunk_size = sftp_write_size(int(out_packet), len(getattr(sink, "handle", b"")), max_write)
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
        raise TransferError(f"{path} -> {remote}: {one_line(exc)}") from exc
    except (paramiko.SSHException, EOFError) as exc:
        raise TransferError(f"{path} -> {remote}: {one_line(exc)}") from exc
    if sent != size:
        raise TransferError(f"{path} changed size during the push ({size} bytes, then {sent}); retry")
    return digest.hexdigest()


def _finish_check(
    session: SSHSession, group: Sequence[str], started: StartedCommand
) -> list[tuple[int, str] | SSHError]:
    """Release a started :data:`_CHECK_SCRIPT` and read its answer: ``(size in bytes, SHA-256 hex)`` of
    each file of ``group`` as the host sees it, in order, or the error of the command."""
    lines: list[str] = []
    try:
        result = started.finish(stdin=b"\n", on_stdout_line=lines.append, check=False)
    except SSHError as exc:
        return [exc] * len(group)
    sizes, hashes = lines[: len(group)], [_HASH_LINE_RE.match(line) for line in lines[len(group) :]]
    if result.returncode != 0 or len(lines) != 2 * len(group) or not all(s.isdigit() for s in sizes):
        why = result.stderr_tail.replace("\n", "; ") or f"exit status {result.returncode}"
        return [TransferError(f"{session.target}: cannot check the pushed files there ({why})")] * len(group)
    found: list[tuple[int, str] | SSHError] = []
    for path, size, match in zip(group, sizes, hashes, strict=True):
        if match is None:
            found.append(TransferError(f"{path}: no SHA-256 in the host's answer"))
        else:
            found.append((int(size), match.group(1)))
    return found


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


# --- pull ------------------------------------------------------------------------------------------------


def pull(
    session: SSHSession, files: Sequence[tuple[str, Path | str]], *, channel_timeout_s: float
) -> list[Path]:
    """Download ``files`` over ``session``, each written atomically (:meth:`SSHSession.pull`).

    Not SFTP: paramiko reads SFTP files either one request at a time (about 7 MB/s on loopback: OpenSSH
    leaves Nagle on for non-interactive sessions, so each reply waits for a delayed ACK) or with a prefetch
    thread that dies with a stray traceback if the connection is closed mid-pull (Ctrl-C). An exec channel
    running ``cat`` streams at window speed and stops when closed.
    """
    session._check_open("pull files")
    if len(files) <= 1:
        return [_pull_one(session, remote, Path(local), channel_timeout_s) for remote, local in files]
    # Each channel costs the host a fork and exec of sh (tens of ms; measured 0.2-0.3 s per transcript on
    # a 2-core machine while the engine decoded the next file), so pull concurrently.
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(PULL_CONCURRENCY, len(files)))
    try:
        futures = [
            pool.submit(_pull_one, session, remote, Path(local), channel_timeout_s) for remote, local in files
        ]
        return [future.result() for future in futures]
    finally:
        # On an error or a signal, do not wait for the other pulls: closing the session ends them.
        pool.shutdown(wait=False, cancel_futures=True)


def _pull_one(session: SSHSession, remote: str, dest: Path, channel_timeout_s: float) -> Path:
    """Pull one file into a temporary file beside ``dest``, then move it into place
    (:func:`gpu_transcribe_engine.files.replace_atomically`: ``dest`` is whole or untouched)."""
    started = False
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with replace_atomically(dest, 0o600, suffix=".part") as (out, _tmp):
            started = True
            _stream_file(session, remote, dest, out, channel_timeout_s)
    except OSError as exc:
        if not started:
            raise OutputError(dest, f"{dest.parent}: cannot write there ({exc.strerror})") from exc
        raise OutputError(dest, f"{dest}: cannot write it ({exc.strerror or exc})") from exc
    return dest


def _stream_file(
    session: SSHSession, remote: str, dest: Path, out: BinaryIO, channel_timeout_s: float
) -> None:
    """Copy a remote file's bytes into ``out``; raise TransferError unless all of them came."""
    session._check_open(f"pull {remote}")
    stderr_tail: collections.deque[str] = collections.deque(maxlen=10)
    size: int | None = None
    received = 0
    channel: paramiko.Channel | None = None
    try:
        channel = session._exec(["sh", "-c", _PULL_SCRIPT, "sh", remote], channel_timeout_s)
        channel.shutdown_write()
        stderr_thread = threading.Thread(target=drain_stderr, args=(channel, stderr_tail), daemon=True)
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
        raise TransferError(f"{remote} -> {dest}: {one_line(exc)}") from exc
    finally:
        if channel is not None:
            channel.close()
    if session.closed and (returncode != 0 or received != size):
        raise TransferError(f"{remote} -> {dest}: the connection was closed during the pull")
    if returncode != 0 or size is None or size < 0:
        why = "; ".join(stderr_tail) or f"exit status {returncode}"
        raise TransferError(f"{remote}: cannot read it on the host ({why})")
    if received != size:
        raise TransferError(f"{remote}: got {received} of {size} bytes")
