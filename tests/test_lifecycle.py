"""Teardown runs exactly once, whatever ends the work; signals during teardown cannot skip it.

Each case runs in a subprocess that really receives the signal, as a user's Ctrl-C or a `kill` would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gpu_transcribe.errors import InterruptedRunError
from gpu_transcribe.instance.lifecycle import TeardownGuard

REPO = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent(
    """
    import sys, time
    from gpu_transcribe.instance.lifecycle import TeardownGuard
    from gpu_transcribe.errors import InterruptedRunError

    log = open(sys.argv[1], "a", buffering=1)
    mode = sys.argv[2]

    def teardown():
        log.write("teardown-start\\n")
        if mode == "slow-teardown":
            print("in-teardown", flush=True)
            time.sleep(1.5)
        log.write("teardown-end\\n")

    def on_signal(name, during):
        log.write(f"signal {name} during={during}\\n")

    try:
        with TeardownGuard(teardown, on_signal):
            print("working", flush=True)
            if mode == "raise":
                raise RuntimeError("boom")
            if mode in ("wait", "slow-teardown"):
                time.sleep(30)
    except InterruptedRunError as exc:
        log.write(f"interrupted {exc.signal_name}\\n")
        sys.exit(exc.exit_code)
    except RuntimeError:
        sys.exit(7)
    """
)


def _start(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[str], Path]:
    log = tmp_path / "log.txt"
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(log), mode],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "working"
    return proc, log


@pytest.mark.parametrize(
    ("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)]
)
def test_signal_runs_teardown_once_and_sets_exit_status(tmp_path: Path, signum: int, status: int) -> None:
    proc, log = _start(tmp_path, "wait")
    proc.send_signal(signum)
    assert proc.wait(timeout=20) == status
    lines = log.read_text().splitlines()
    assert lines.count("teardown-start") == 1 and lines.count("teardown-end") == 1
    assert lines[-1] == f"interrupted {signal.Signals(signum).name}"


def test_second_ctrl_c_during_teardown_does_not_skip_it(tmp_path: Path) -> None:
    proc, log = _start(tmp_path, "slow-teardown")
    proc.send_signal(signal.SIGINT)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "in-teardown"
    for _ in range(3):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.1)
    assert proc.wait(timeout=20) == 130
    lines = log.read_text().splitlines()
    assert "teardown-end" in lines, lines
    assert "signal SIGINT during=True" in lines
    assert lines.count("teardown-start") == 1


@pytest.mark.parametrize(("mode", "status"), [("normal", 0), ("raise", 7)])
def test_normal_end_and_exception_run_teardown_once(tmp_path: Path, mode: str, status: int) -> None:
    proc, log = _start(tmp_path, mode)
    assert proc.wait(timeout=20) == status
    assert log.read_text().splitlines().count("teardown-end") == 1


def test_a_signal_that_surfaces_as_another_error_still_ends_the_run_as_interrupted() -> None:
    """The handler's exception is raised wherever the main thread is; inside library code it can turn into
    another error (threading.Thread.start raises KeyError when interrupted). The guard still reports the
    signal, with its exit status, after the teardown."""
    torn: list[str] = []
    with pytest.raises(InterruptedRunError) as info, TeardownGuard(lambda: torn.append("teardown")):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except InterruptedRunError:
            raise KeyError("<Thread(ThreadPoolExecutor-0_0, stopped)>") from None
    assert torn == ["teardown"]
    assert info.value.exit_code == 130 and info.value.signal_name == "SIGINT"
    assert isinstance(info.value.__cause__, KeyError)
