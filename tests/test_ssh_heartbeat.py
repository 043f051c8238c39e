"""Tests of ``gpu_transcribe.ssh.heartbeat`` against a real OpenSSH sshd on 127.0.0.1
(``tests/fixtures/sshd.py``).

The "remote" host is this machine, so the tests check remote files directly on disk, independently of the
code under test.
"""

from __future__ import annotations

import time
from pathlib import Path

from gpu_transcribe import ssh


def test_heartbeat_touches_file_until_stopped(ssh_session: ssh.SSHSession, tmp_path: Path) -> None:
    beat_file = tmp_path / "heartbeat"
    heartbeat = ssh_session.start_heartbeat(str(beat_file), interval_s=0.2)
    mtimes: list[int] = []
    deadline = time.monotonic() + 10
    while len(set(mtimes)) < 3 and time.monotonic() < deadline:
        if beat_file.exists():
            mtimes.append(beat_file.stat().st_mtime_ns)
        time.sleep(0.05)
    assert len(set(mtimes)) >= 3 and mtimes == sorted(mtimes), "mtime did not advance"
    heartbeat.stop()
    assert not heartbeat.running
    assert heartbeat.beats >= 3 and heartbeat.failures == 0
    last = beat_file.stat().st_mtime_ns
    time.sleep(0.6)
    assert beat_file.stat().st_mtime_ns == last, "the heartbeat went on after stop()"


def test_heartbeat_survives_transient_errors(ssh_session: ssh.SSHSession, tmp_path: Path) -> None:
    beat_file = tmp_path / "not-yet" / "heartbeat"  # its directory appears later
    errors: list[str] = []
    heartbeat = ssh_session.start_heartbeat(str(beat_file), interval_s=0.1, on_error=errors.append)
    deadline = time.monotonic() + 10
    while heartbeat.failures < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert heartbeat.failures >= 2 and errors and heartbeat.running
    beat_file.parent.mkdir()
    # The file appears when a beat opens it; the beat counts once it is written and closed.
    while not (beat_file.exists() and heartbeat.beats >= 1) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert beat_file.exists() and heartbeat.beats >= 1
    ssh_session.close()  # stops its heartbeats too
    heartbeat.stop()
    assert not heartbeat.running
