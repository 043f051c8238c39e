"""The idle and lifetime power-off of ``gpu-transcribe serve``: :class:`PowerOffWatch`, started and stopped by
the application's lifespan (:func:`gpu_transcribe_api.app.create_app`).
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gpu_transcribe_api.state import ServerState

logger = logging.getLogger("gpu_transcribe_api")

POWEROFF_REASON_ENV = "GPU_TRANSCRIBE_POWEROFF_REASON"
"""Exported to the power-off command: why it runs (as ``deadman.sh`` exports ``DEADMAN_REASON``)."""
MAX_CHECK_INTERVAL_S = 10.0
MIN_CHECK_INTERVAL_S = 0.05
POWEROFF_TIMEOUT_S = 60.0
"""The power-off command is given this long; ``shutdown -P now`` returns at once."""


class PowerOffWatch:
    """A thread that runs the power-off command once the server has been idle for ``idle_stop_s``, or up
    for ``max_lifetime_s``, whichever comes first.

    It checks every tenth of the shorter limit (between :data:`MIN_CHECK_INTERVAL_S` and
    :data:`MAX_CHECK_INTERVAL_S`). The command runs once; if it fails (non-zero exit, not found) that is
    logged and it is tried again at the next check, as ``deadman.sh`` does.

    Args:
        command: argv of the power-off command (``shutdown -P now``).
        idle_stop_s: idle seconds before power-off, or ``None``.
        max_lifetime_s: seconds of uptime before power-off, or ``None``.
        idle_s: returns the seconds the server has been idle (:attr:`ServerState.idle_s`).
        uptime_s: returns the seconds the server has been up.
    """

    def __init__(
        self,
        command: Sequence[str],
        idle_stop_s: float | None,
        max_lifetime_s: float | None,
        idle_s: Callable[[], float],
        uptime_s: Callable[[], float],
    ) -> None:
        self.command = tuple(command)
        self.idle_stop_s = idle_stop_s
        self.max_lifetime_s = max_lifetime_s
        self.idle_s = idle_s
        self.uptime_s = uptime_s
        limits = [s for s in (idle_stop_s, max_lifetime_s) if s is not None]
        self.check_interval_s = min(
            MAX_CHECK_INTERVAL_S, max(MIN_CHECK_INTERVAL_S, min(limits, default=60) / 10)
        )
        self.fired: str | None = None
        """The reason the command ran successfully, or ``None``."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="power-off-watch", daemon=True)

    @classmethod
    def for_state(cls, state: ServerState) -> PowerOffWatch | None:
        """The watch for a server's config, or ``None`` when neither limit is set."""
        config = state.config
        if config.idle_stop_s is None and config.max_lifetime_s is None:
            return None
        return cls(
            config.poweroff_command,
            config.idle_stop_s,
            config.max_lifetime_s,
            idle_s=lambda: state.idle_s,
            uptime_s=lambda: state.uptime_s,
        )

    def start(self) -> PowerOffWatch:
        """Start checking; returns ``self``."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop checking (the server is shutting down)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(MAX_CHECK_INTERVAL_S)

    def due(self) -> str | None:
        """Why the machine should power off now, or ``None``."""
        uptime_s = self.uptime_s()
        if self.max_lifetime_s is not None and uptime_s >= self.max_lifetime_s:
            return f"max-lifetime: up {uptime_s:.0f} s, limit {self.max_lifetime_s:g} s"
        idle_s = self.idle_s()
        if self.idle_stop_s is not None and idle_s >= self.idle_stop_s:
            return f"idle: no request for {idle_s:.0f} s, limit {self.idle_stop_s:g} s"
        return None

    def power_off(self, reason: str) -> bool:
        """Run the command with :data:`POWEROFF_REASON_ENV` set to ``reason``; True if it exited 0."""
        logger.warning("powering off (%s): %s", reason, " ".join(self.command))
        env = {**os.environ, POWEROFF_REASON_ENV: reason}
        try:
            done = subprocess.run(
                self.command, env=env, timeout=POWEROFF_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL
            )
        except (OSError, subprocess.SubprocessError) as exc:
            logger.error("the power-off command failed (%s); trying again at the next check", exc)
            return False
        if done.returncode != 0:
            logger.error("the power-off command exited %d; trying again at the next check", done.returncode)
            return False
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.check_interval_s):
            reason = self.due()
            if reason is not None and self.power_off(reason):
                self.fired = reason
                return
