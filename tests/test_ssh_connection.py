"""Tests of ``gpu_transcribe.ssh.connection`` (targets, keys, host keys, connect and its retries) against a
real OpenSSH sshd on 127.0.0.1 (``tests/fixtures/sshd.py``).
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpu_transcribe import ssh
from gpu_transcribe.errors import (
    HostKeyError,
    InputError,
    SSHError,
    SSHTimeoutError,
)
from tests.fixtures.sshd import SshdServer, free_port, generate_ed25519_keypair


def test_target_repr_hides_private_key(sshd_target: ssh.SSHTarget) -> None:
    assert "PRIVATE" not in repr(sshd_target)
    assert sshd_target.host_key_name == f"[127.0.0.1]:{sshd_target.port}"


def test_connect_reports_cipher_and_server(ssh_session: ssh.SSHSession) -> None:
    assert ssh_session.cipher == "aes128-gcm@openssh.com"
    assert "OpenSSH" in ssh_session.server_version


def test_wrong_host_key_is_refused_without_retry(sshd_target: ssh.SSHTarget) -> None:
    _, other_public = generate_ed25519_keypair("not-the-host")
    target = dataclasses.replace(sshd_target, host_public_key=other_public)
    attempts: list[ssh.ConnectAttempt] = []
    sleeps: list[float] = []
    started = time.monotonic()
    with pytest.raises(HostKeyError) as caught:
        ssh.connect(target, deadline_s=30, on_attempt=attempts.append, sleep=sleeps.append)
    assert attempts == [] and sleeps == []
    assert time.monotonic() - started < 5
    assert "not the expected" in str(caught.value)


def test_no_expected_host_key_is_refused(sshd_target: ssh.SSHTarget, tmp_path: Path) -> None:
    bare = dataclasses.replace(sshd_target, host_public_key=None, known_hosts_file=None)
    with pytest.raises(HostKeyError, match="first use"):
        ssh.connect(bare, deadline_s=5)
    other_host = tmp_path / "known_hosts"
    other_host.write_text(f"[10.0.0.1]:{sshd_target.port} {sshd_target.host_public_key}\n")
    with pytest.raises(HostKeyError, match="no host key"):
        ssh.connect(dataclasses.replace(bare, known_hosts_file=other_host), deadline_s=5)
    with pytest.raises(HostKeyError, match="not an OpenSSH public key"):
        ssh.connect(dataclasses.replace(bare, host_public_key="ssh-ed25519 not-base64!"), deadline_s=5)


def test_known_hosts_file_and_identity_file(sshd_server: SshdServer) -> None:
    """The ``--host user@address:port --identity FILE`` path: known_hosts entry, key file."""
    target = ssh.SSHTarget(
        host=sshd_server.host,
        port=sshd_server.port,
        username=sshd_server.username,
        identity_file=sshd_server.client_key_path,
        known_hosts_file=sshd_server.known_hosts_path,
    )
    with ssh.connect(target, deadline_s=20) as opened:
        assert opened.run(["echo", "ok"]).stdout == "ok"
    wrong = sshd_server.workdir / "wrong_known_hosts"
    wrong.write_text(f"[{sshd_server.host}]:{sshd_server.port} {generate_ed25519_keypair()[1]}\n")
    with pytest.raises(HostKeyError):
        ssh.connect(dataclasses.replace(target, known_hosts_file=wrong), deadline_s=20)


def test_known_hosts_with_hashed_names(sshd_server: SshdServer, tmp_path: Path) -> None:
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        pytest.skip("ssh-keygen not installed")
    known = tmp_path / "known_hosts"
    known.write_text(f"[{sshd_server.host}]:{sshd_server.port} {sshd_server.host_public_key}\n")
    subprocess.run([keygen, "-H", "-f", str(known)], check=True, capture_output=True)
    hashed = known.read_text()
    assert hashed.startswith("|1|") and f"[{sshd_server.host}]" not in hashed
    known.write_text(
        "# a comment, a marker line and broken lines are skipped\n"
        f"@cert-authority *.example ssh-ed25519 {'A' * 68}\n"
        "garbage line\n"
        "host.example ssh-ed25519 not-base64!\n" + hashed
    )
    target = ssh.SSHTarget(
        host=sshd_server.host,
        port=sshd_server.port,
        username=sshd_server.username,
        private_key=sshd_server.client_private_key,
        known_hosts_file=known,
    )
    with ssh.connect(target, deadline_s=20) as opened:
        assert opened.run(["echo", "hashed"]).stdout == "hashed"


def test_unusable_identity_file_is_an_input_error(sshd_target: ssh.SSHTarget, tmp_path: Path) -> None:
    missing = dataclasses.replace(sshd_target, private_key=None, identity_file=tmp_path / "nope")
    with pytest.raises(InputError, match="nope"):
        ssh.connect(missing, deadline_s=5)
    garbage = tmp_path / "garbage"
    garbage.write_text("not a key\n")
    garbage.chmod(0o600)
    with pytest.raises(InputError, match="garbage"):
        ssh.connect(dataclasses.replace(missing, identity_file=garbage), deadline_s=5)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_identity_file_readable_by_others_is_refused_as_openssh_does(
    sshd_target: ssh.SSHTarget, sshd_server: SshdServer, tmp_path: Path, mode: int
) -> None:
    key = tmp_path / "id_ed25519"
    key.write_bytes(sshd_server.client_key_path.read_bytes())
    key.chmod(mode)
    target = dataclasses.replace(sshd_target, private_key=None, identity_file=key)
    with pytest.raises(InputError) as caught:
        ssh.connect(target, deadline_s=5)
    message = str(caught.value)
    assert str(key) in message and f"chmod 600 {key}" in message and "\n" not in message
    assert caught.value.path == key
    key.chmod(0o600)
    with ssh.connect(target, deadline_s=20) as opened:
        assert opened.run(["echo", "ok"]).stdout == "ok"


def test_refused_client_key_gives_up_after_allowed_failures(sshd_target: ssh.SSHTarget) -> None:
    stranger, _ = generate_ed25519_keypair("stranger")
    attempts: list[ssh.ConnectAttempt] = []
    with pytest.raises(SSHError, match="refused our key") as caught:
        ssh.connect(
            dataclasses.replace(sshd_target, private_key=stranger),
            deadline_s=30,
            retry_interval_s=0.05,
            auth_failures_allowed=1,
            on_attempt=attempts.append,
        )
    assert not isinstance(caught.value, HostKeyError | SSHTimeoutError)
    assert len(attempts) == 1


def test_nothing_listening_retries_until_deadline(sshd_target: ssh.SSHTarget) -> None:
    target = dataclasses.replace(sshd_target, port=free_port())
    attempts: list[ssh.ConnectAttempt] = []
    started = time.monotonic()
    with pytest.raises(SSHTimeoutError, match="no SSH session"):
        ssh.connect(target, deadline_s=1.5, retry_interval_s=0.2, on_attempt=attempts.append)
    elapsed = time.monotonic() - started
    assert len(attempts) >= 3
    assert [a.number for a in attempts] == list(range(1, len(attempts) + 1))
    assert "refused" in attempts[0].error.lower()
    assert 1.0 <= elapsed < 3.0


def test_retry_schedule_with_injected_clock(sshd_target: ssh.SSHTarget) -> None:
    target = dataclasses.replace(sshd_target, port=free_port())
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    with pytest.raises(SSHTimeoutError):
        ssh.connect(target, deadline_s=10, retry_interval_s=2, clock=lambda: now[0], sleep=sleep)
    assert sleeps == [2, 2, 2, 2]  # attempts at 0, 2, 4, 6, 8; the next would start at the deadline


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A TCP server that accepts connections and never sends an SSH banner."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_listener_without_banner_times_out(sshd_target: ssh.SSHTarget, silent_listener: int) -> None:
    target = dataclasses.replace(sshd_target, port=silent_listener)
    attempts: list[ssh.ConnectAttempt] = []
    started = time.monotonic()
    with pytest.raises(SSHTimeoutError):
        ssh.connect(
            target, deadline_s=2.0, banner_timeout_s=0.5, retry_interval_s=0.1, on_attempt=attempts.append
        )
    assert time.monotonic() - started < 4.0
    assert attempts and "banner" in attempts[0].error.lower()


def test_sshd_fixture_can_switch_host_key(tmp_path: Path) -> None:
    """``SshdServer.set_host_key`` (for run-flow tests that inject a host key at "launch")."""
    with SshdServer(tmp_path / "sshd") as server:
        target = ssh.SSHTarget(
            host=server.host,
            port=server.port,
            username=server.username,
            private_key=server.client_private_key,
            host_public_key=server.host_public_key,
        )
        injected_private, injected_public = generate_ed25519_keypair("injected")
        server.set_host_key(injected_private)
        with pytest.raises(HostKeyError):
            ssh.connect(target, deadline_s=10)
        with ssh.connect(dataclasses.replace(target, host_public_key=injected_public), deadline_s=10) as s:
            assert s.run(["true"]).returncode == 0
