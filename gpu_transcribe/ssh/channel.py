"""Reading what a remote command sends back over a paramiko channel.

:class:`LineReader` is the one place that receives from a channel and splits lines: a command's stdout
(:meth:`~gpu_transcribe.ssh.SSHSession.run`), every stderr tail (:func:`drain_stderr`) and a pull's size
header. :func:`one_line` turns any exception into the one line our error messages and progress show.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterator

import paramiko

#: Characters kept of one stderr line; longer lines are cut.
STDERR_LINE_MAX_CHARS = 2000


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


def drain_stderr(channel: paramiko.Channel, tail: collections.deque[str]) -> None:
    """Read a channel's stderr to its end, keeping the last lines in ``tail`` (its maxlen bounds it), each
    cut to :data:`STDERR_LINE_MAX_CHARS`. A failed read ends it quietly: the caller reports the command's
    own outcome. Runs in a thread of its own, so that a command writing much to stderr never stalls."""
    with contextlib.suppress(Exception):
        for line in LineReader(channel.recv_stderr, max_line_chars=STDERR_LINE_MAX_CHARS):
            tail.append(line)


def one_line(exc: BaseException) -> str:
    """One line about an exception, for messages and progress ("connection refused", "timed out")."""
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        reasons = sorted({(getattr(e, "strerror", None) or str(e)) for e in exc.errors.values()})
        return f"connection failed: {', '.join(reasons)}".lower()
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
