"""The dead-man switch shell script, run for real with ``/bin/sh``, a fake clock, short limits and a fake
poweroff command: it powers off on the maximum lifetime and on a stale heartbeat, and not while the
heartbeat is fresh."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from gpu_transcribe.aws.ec2.userdata import HEARTBEAT_PATH, deadman_script

START = 1_800_000_000  # fake epoch seconds at which the instance "booted"


class Instance:
    """A fake instance for the script: a clock file, a heartbeat file and a poweroff command that records."""

    def __init__(self, root: Path, *, poweroff_exit: int = 0) -> None:
        self.root = root
        self.script = root / "deadman.sh"
        self.script.write_text(deadman_script(), encoding="utf-8")
        self.clock = root / "now"
        self.heartbeat = root / "heartbeat"
        self.poweroffs = root / "poweroffs"
        poweroff = root / "poweroff"
        poweroff.write_text(f'#!/bin/sh\necho "$DEADMAN_REASON" >> {self.poweroffs}\nexit {poweroff_exit}\n')
        poweroff.chmod(0o755)
        self.poweroff = poweroff
        self.set_time(START)

    def set_time(self, epoch_s: int) -> None:
        tmp = self.clock.with_suffix(".tmp")
        tmp.write_text(f"{epoch_s}\n")
        os.replace(tmp, self.clock)

    def beat(self, epoch_s: int) -> None:
        """The client touches the heartbeat (at fake time ``epoch_s``)."""
        self.heartbeat.touch()
        os.utime(self.heartbeat, (epoch_s, epoch_s))

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "MAX_LIFETIME_S": "3600",
            "HEARTBEAT_FILE": str(self.heartbeat),
            "HEARTBEAT_TIMEOUT_S": "300",
            "CHECK_INTERVAL_S": "0.02",
            "POWEROFF_CMD": str(self.poweroff),
            "CLOCK_CMD": f"cat {self.clock}",
            "START_EPOCH_S": str(START),
            "SWITCH_START_S": str(START),
        }
        env.update(extra)
        return env

    def check_once(self, **extra: str) -> list[str]:
        """Run one check; the reasons the fake poweroff was called with so far."""
        result = subprocess.run(
            ["/bin/sh", str(self.script)],
            env=self.env(DEADMAN_ONESHOT="1", **extra),
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert result.returncode == 0, result.stderr
        return self.reasons()

    def reasons(self) -> list[str]:
        return self.poweroffs.read_text().splitlines() if self.poweroffs.exists() else []


@pytest.fixture
def instance(tmp_path: Path) -> Instance:
    return Instance(tmp_path)


def test_fresh_heartbeat_keeps_the_instance(instance: Instance) -> None:
    instance.set_time(START + 1000)
    instance.beat(START + 900)  # 100 s ago, timeout 300 s
    assert instance.check_once() == []


def test_stale_heartbeat_powers_off(instance: Instance) -> None:
    instance.set_time(START + 1000)
    instance.beat(START + 650)  # 350 s ago
    reasons = instance.check_once()
    assert len(reasons) == 1
    assert reasons[0].startswith("stale-heartbeat: none for 350 s, limit 300 s")


def test_max_lifetime_powers_off_even_with_a_fresh_heartbeat(instance: Instance) -> None:
    instance.set_time(START + 3600)
    instance.beat(START + 3590)
    reasons = instance.check_once()
    assert len(reasons) == 1
    assert reasons[0].startswith("max-lifetime: up 3600 s, limit 3600 s")


def test_just_under_both_limits_keeps_the_instance(instance: Instance) -> None:
    instance.set_time(START + 3599)
    instance.beat(START + 3599 - 299)
    assert instance.check_once() == []


def test_without_a_heartbeat_the_switch_start_counts_as_one(instance: Instance) -> None:
    """Before the client's first touch the switch's own start is the last heartbeat: a client that never
    connects still ends in a power-off, one heartbeat timeout after the switch started."""
    assert not instance.heartbeat.exists()
    instance.set_time(START + 60)
    env = instance.env()
    del env["SWITCH_START_S"]  # the switch starts now, at START + 60
    proc = subprocess.Popen(["/bin/sh", str(instance.script)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.2)
        assert proc.poll() is None
        assert instance.reasons() == []
        instance.set_time(START + 60 + 300)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert instance.reasons()[0].startswith("stale-heartbeat: none for 300 s")


def test_running_loop_stays_while_the_client_beats_and_powers_off_once_it_stops(instance: Instance) -> None:
    now = START + 100
    instance.set_time(now)
    instance.beat(now)
    proc = subprocess.Popen(
        ["/bin/sh", str(instance.script)], env=instance.env(), stderr=subprocess.PIPE, text=True
    )
    try:
        for _ in range(10):  # ten client heartbeats 30 s apart: 300 s of fake time, always fresh
            now += 30
            instance.set_time(now)
            instance.beat(now)
            time.sleep(0.05)
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert instance.reasons() == []
        now += 301  # the client is gone (SIGKILL, sleeping laptop): no more beats
        instance.set_time(now)
        assert proc.wait(timeout=10) == 0
        log = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert instance.reasons() == ["stale-heartbeat: none for 301 s, limit 300 s"]
    assert "armed: lifetime 3600 s" in log
    assert "powering off: stale-heartbeat" in log


def test_a_failed_poweroff_is_tried_again(tmp_path: Path) -> None:
    instance = Instance(tmp_path, poweroff_exit=1)
    instance.set_time(START + 4000)
    proc = subprocess.Popen(["/bin/sh", str(instance.script)], env=instance.env(), stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while len(instance.reasons()) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None  # still running: it does not give up
    finally:
        proc.kill()
        proc.wait()
    assert len(instance.reasons()) >= 3
    assert all(r.startswith("max-lifetime") for r in instance.reasons())


def test_lifetime_counts_from_boot_by_default(instance: Instance) -> None:
    """Without START_EPOCH_S the lifetime counts from boot (now minus /proc/uptime), not from the switch
    start."""
    uptime_s = float(Path("/proc/uptime").read_text().split()[0])
    now = START + 10_000
    instance.set_time(now)
    instance.beat(now)
    env = instance.env(MAX_LIFETIME_S=str(int(uptime_s) + 100))
    del env["START_EPOCH_S"]
    result = subprocess.run(
        ["/bin/sh", str(instance.script)], env={**env, "DEADMAN_ONESHOT": "1"}, capture_output=True, text=True
    )
    assert result.returncode == 0
    assert instance.reasons() == []
    env["MAX_LIFETIME_S"] = str(max(1, int(uptime_s) - 100))
    subprocess.run(["/bin/sh", str(instance.script)], env={**env, "DEADMAN_ONESHOT": "1"}, check=True)
    assert instance.reasons()[0].startswith("max-lifetime")


def test_script_defaults_match_the_heartbeat_path_the_client_uses() -> None:
    assert f'HEARTBEAT_FILE="${{HEARTBEAT_FILE:-{HEARTBEAT_PATH}}}"' in deadman_script()


def test_default_poweroff_command_is_shutdown_power_off_now(instance: Instance, tmp_path: Path) -> None:
    """Real instances run the switch without POWEROFF_CMD: the default must call ``shutdown -P now``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "shutdown-calls"
    shutdown = bin_dir / "shutdown"
    shutdown.write_text(f'#!/bin/sh\necho "$*" >> {calls}\necho "$DEADMAN_REASON" >> {calls}\nexit 0\n')
    shutdown.chmod(0o755)
    env = instance.env(DEADMAN_ONESHOT="1", MAX_LIFETIME_S="10")
    del env["POWEROFF_CMD"]
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    instance.set_time(START + 20)
    result = subprocess.run(
        ["/bin/sh", str(instance.script)], env=env, capture_output=True, text=True, timeout=10
    )
    assert result.returncode == 0, result.stderr
    lines = calls.read_text().splitlines()
    assert lines[0] == "-P now"
    assert lines[1].startswith("max-lifetime")


def _alive_cmd(tmp_path: Path) -> tuple[str, Path]:
    """A command that succeeds while the returned flag file exists (the watched process is "alive")."""
    flag = tmp_path / "alive"
    check = tmp_path / "is-alive"
    check.write_text(f'#!/bin/sh\ntest -e "{flag}"\n')
    check.chmod(0o755)
    return str(check), flag


def test_with_alive_cmd_a_live_process_counts_as_a_heartbeat(instance: Instance, tmp_path: Path) -> None:
    """The fleet's use: no client touches the heartbeat file, the worker's unit being active keeps the
    instance; once the command fails the last success ages like a heartbeat, then the switch powers off."""
    alive_cmd, flag = _alive_cmd(tmp_path)
    flag.touch()
    now = START + 100
    instance.set_time(now)
    proc = subprocess.Popen(
        ["/bin/sh", str(instance.script)],
        env=instance.env(ALIVE_CMD=alive_cmd),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(20):  # 20 x 60 s of fake time with no heartbeat file: alive is enough
            now += 60
            instance.set_time(now)
            time.sleep(0.05)
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert instance.reasons() == []
        flag.unlink()  # the process is gone
        time.sleep(0.1)  # several checks see it gone at the same fake time: not yet the timeout
        assert proc.poll() is None and instance.reasons() == []
        instance.set_time(now + 300)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert instance.reasons() == ["stale-heartbeat: none for 300 s, limit 300 s"]


def test_with_alive_cmd_failing_from_the_start_the_switch_start_is_the_last_sign(
    instance: Instance, tmp_path: Path
) -> None:
    alive_cmd, _flag = _alive_cmd(tmp_path)  # the flag never exists
    instance.set_time(START + 299)
    assert instance.check_once(ALIVE_CMD=alive_cmd) == []
    instance.set_time(START + 300)
    assert instance.check_once(ALIVE_CMD=alive_cmd)[0].startswith("stale-heartbeat: none for 300 s")


def test_with_alive_cmd_the_maximum_lifetime_still_powers_off(instance: Instance, tmp_path: Path) -> None:
    """A live but hung process (an engine that never returns) ends at the maximum lifetime."""
    alive_cmd, flag = _alive_cmd(tmp_path)
    flag.touch()
    instance.set_time(START + 3600)
    assert instance.check_once(ALIVE_CMD=alive_cmd)[0].startswith("max-lifetime: up 3600 s")
