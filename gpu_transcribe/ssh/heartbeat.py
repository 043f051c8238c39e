"""Heartbeat: a background thread that rewrites a file on the host every few seconds, so that the host's
dead-man switch sees the client is alive (the AWS layer defines the path and the allowed age).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import paramiko

from gpu_transcribe.ssh.channel import one_line

if TYPE_CHECKING:
    from gpu_transcribe.ssh.session import SSHSession

logger = logging.getLogger(__name__)


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
        """Start the thread: the first beat is now, then one every :attr:`interval_s` seconds."""
        self._thread.start()

    @property
    def running(self) -> bool:
        """True while the thread runs."""
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
                self.last_error = one_line(exc)
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
