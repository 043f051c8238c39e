"""Tests of ``gpu_transcribe.ssh.session`` (quoting, ``SSHSession.run``, close) against a real OpenSSH sshd
on 127.0.0.1 (``tests/fixtures/sshd.py``).

The "remote" host is this machine, so the tests check remote files directly on disk, independently of the
code under test.
"""

from __future__ import annotations

import shlex
import threading
import time
from pathlib import Path

import pytest

from gpu_transcribe import ssh
from gpu_transcribe.errors import (
    RemoteCommandError,
    SSHError,
)


def test_command_line_quotes_every_argument() -> None:
    argv = ["printf", "%s\n", "two words", "it's", '"dq"', "$(touch /tmp/x)", "a;b", "`id`", "", "*"]
    line = ssh.command_line(argv)
    assert shlex.split(line) == argv
    with pytest.raises(TypeError):
        ssh.command_line("echo hi")
    with pytest.raises(ValueError):
        ssh.command_line([])


def test_run_quotes_arguments_and_streams_stdout_in_order(
    ssh_session: ssh.SSHSession, tmp_path: Path
) -> None:
    canary = tmp_path / "injected"
    args = ["two words", "it's", '"double"', f"$(touch {canary})", f"x; touch {canary}", "`id`", "tab\there"]
    lines: list[str] = []
    result = ssh_session.run(["printf", "%s\\n", *args], on_stdout_line=lines.append)
    assert lines == args
    assert result.returncode == 0
    assert not canary.exists(), "an argument was interpreted by the remote shell"


def test_run_streams_lines_as_they_come(ssh_session: ssh.SSHSession) -> None:
    arrivals: list[tuple[str, float]] = []
    script = "for i in 1 2 3; do echo line$i; sleep 0.4; done"
    ssh_session.run(
        ["sh", "-c", script], on_stdout_line=lambda line: arrivals.append((line, time.monotonic()))
    )
    assert [line for line, _ in arrivals] == ["line1", "line2", "line3"]
    # Buffered output would arrive all at once at the end.
    assert arrivals[2][1] - arrivals[0][1] > 0.6


def test_run_collects_stdout_without_callback(ssh_session: ssh.SSHSession) -> None:
    result = ssh_session.run(["sh", "-c", "echo a; printf 'b\\r\\nc'"])
    assert result.stdout == "a\nb\nc"


def test_run_keeps_stderr_tail_and_exit_status(ssh_session: ssh.SSHSession) -> None:
    script = "for i in $(seq 1 100); do echo err$i >&2; done; echo out; exit 3"
    result = ssh_session.run(["sh", "-c", script], check=False, stderr_tail_lines=5)
    assert result.returncode == 3
    assert result.stderr_tail.splitlines() == ["err96", "err97", "err98", "err99", "err100"]
    with pytest.raises(RemoteCommandError) as caught:
        ssh_session.run(["sh", "-c", script], stderr_tail_lines=5)
    assert caught.value.returncode == 3
    assert caught.value.command == ssh.command_line(["sh", "-c", script])
    assert caught.value.stderr_tail.endswith("err100")


def test_run_large_stderr_does_not_stall(ssh_session: ssh.SSHSession) -> None:
    # 8 MB on stderr, beyond the channel window: it must be drained while stdout is read.
    script = "head -c 8000000 /dev/zero | tr '\\0' 'e' | fold -w 100 >&2; echo done"
    lines: list[str] = []
    ssh_session.run(["sh", "-c", script], on_stdout_line=lines.append)
    assert lines == ["done"]


def test_close_from_another_thread_interrupts_a_running_command(ssh_session: ssh.SSHSession) -> None:
    outcome: dict[str, object] = {}

    def run() -> None:
        started = time.monotonic()
        try:
            ssh_session.run(["sleep", "30"])
        except Exception as exc:
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(0.5)
    ssh_session.close()
    worker.join(timeout=5)
    assert not worker.is_alive(), "run() did not return after close()"
    assert isinstance(outcome["error"], RemoteCommandError)
    assert outcome["error"].returncode == -1
    assert isinstance(outcome["seconds"], float) and outcome["seconds"] < 3
    ssh_session.close()  # idempotent
    assert ssh_session.closed
    with pytest.raises(SSHError):
        ssh_session.run(["true"])
