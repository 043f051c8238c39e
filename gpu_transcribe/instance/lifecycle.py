"""Run a teardown exactly once, whatever ends the work: normal end, an exception, SIGINT, SIGTERM, SIGHUP.

Used by every flow that creates cloud resources (``run``, ``build-ami``). A first signal interrupts the
work (the handler raises :class:`~gpu_transcribe.errors.InterruptedRunError` in the main thread); signals
that arrive while the teardown runs are reported through a callback and otherwise ignored, so a second
Ctrl-C cannot skip the call that terminates the instance. Exit statuses follow the shell convention
128 + signal number: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP.

A client killed with SIGKILL runs no teardown: the instance's dead-man switch and ``gpu-transcribe
cleanup`` cover that case.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from gpu_transcribe.errors import InterruptedRunError

#: The signals that end a run, each mapped to its name.
HANDLED_SIGNALS: dict[int, str] = {
    signal.SIGINT: "SIGINT",
    signal.SIGTERM: "SIGTERM",
    signal.SIGHUP: "SIGHUP",
}

SignalCallback = Callable[[str, bool], None]


class TeardownGuard:
    """Context manager that calls ``teardown`` exactly once on leaving, and turns signals into an error.

    Args:
        teardown: removes what the work created; must be idempotent and must not raise for a resource
            already gone (it may still raise for a real failure, which then propagates).
        on_signal: called with ``(signal name, during_teardown)`` for every handled signal, e.g. to print
            "cleaning up..."; it must not raise.

    If a signal arrived and the work ended with another exception (the handler's exception, raised at an
    arbitrary point, can surface as a library's own error), leaving raises :class:`InterruptedRunError` from
    it, so the exit status still says which signal ended the run.

    Signal handlers can only be installed from the main thread; elsewhere the guard still runs the
    teardown on leaving but handles no signal.
    """

    def __init__(self, teardown: Callable[[], None], on_signal: SignalCallback | None = None) -> None:
        self._teardown = teardown
        self._on_signal = on_signal
        self._tearing_down = False
        self._done = False
        self._lock = threading.Lock()
        self._previous: dict[int, Any] = {}
        self.signal_name: str | None = None
        self._signal_exit_code = 0

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = HANDLED_SIGNALS.get(signum, str(signum))
        if self._on_signal is not None:
            self._on_signal(name, self._tearing_down)
        if self._tearing_down or self.signal_name is not None:
            return  # already cleaning up (or about to): never interrupt the teardown
        self.signal_name = name
        self._signal_exit_code = 128 + signum
        raise InterruptedRunError(name, 128 + signum)

    def __enter__(self) -> TeardownGuard:
        if threading.current_thread() is threading.main_thread():
            for signum in HANDLED_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def run_teardown(self) -> None:
        """Call the teardown now if it has not run yet (thread-safe; later calls do nothing)."""
        with self._lock:
            if self._done:
                return
            self._done = True
            self._tearing_down = True
        self._teardown()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.run_teardown()
        finally:
            for signum, previous in self._previous.items():
                signal.signal(signum, previous)
            self._previous.clear()
        if self.signal_name is not None and exc is not None and not isinstance(exc, InterruptedRunError):
            # The handler's exception can surface as another one when it lands inside library code (e.g. a
            # KeyError from threading.Thread.start): the run still ended because of the signal.
            raise InterruptedRunError(self.signal_name, self._signal_exit_code) from exc
