"""Tests of ``gpu_transcribe.ssh`` against a real OpenSSH sshd on 127.0.0.1 (``tests/fixtures/sshd.py``).

The "remote" host is this machine, so the tests check remote files directly on disk, independently of the
code under test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shlex
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gpu_transcribe import ssh
from gpu_transcribe.errors import (
    HostKeyError,
    InputError,
    RemoteCommandError,
    SSHError,
    SSHTimeoutError,
    TransferError,
)
from tests.fixtures.sshd import SshdServer, free_port, generate_ed25519_keypair


@pytest.fixture
def session(sshd_target: ssh.SSHTarget) -> Iterator[ssh.SSHSession]:
    with ssh.connect(sshd_target, deadline_s=20) as opened:
        yield opened


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- pure helpers ------------------------------------------------------------------------------------


def test_command_line_quotes_every_argument() -> None:
    argv = ["printf", "%s\n", "two words", "it's", '"dq"', "$(touch /tmp/x)", "a;b", "`id`", "", "*"]
    line = ssh.command_line(argv)
    assert shlex.split(line) == argv
    with pytest.raises(TypeError):
        ssh.command_line("echo hi")
    with pytest.raises(ValueError):
        ssh.command_line([])


def test_sftp_write_size_fills_whole_packets() -> None:
    size = ssh.sftp_write_size(32768, 4, ssh.OPENSSH_MAX_WRITE_BYTES)
    assert size <= ssh.OPENSSH_MAX_WRITE_BYTES
    assert (size + 25 + 4) % (32768 - 64) == 0  # request = whole packets
    assert size + 25 + 4 + (32768 - 64) > ssh.OPENSSH_MAX_WRITE_BYTES  # and as many as allowed
    assert ssh.sftp_write_size(32768, 4, ssh.SFTP_MIN_WRITE_BYTES) <= ssh.SFTP_MIN_WRITE_BYTES


def chunks(*parts: bytes) -> Callable[[int], bytes]:
    """A ``recv`` that returns ``parts`` one by one (cut to the size asked), then ``b""``."""
    queue = list(parts)

    def recv(size: int) -> bytes:
        if not queue:
            return b""
        part = queue.pop(0)
        if len(part) > size:
            queue.insert(0, part[size:])
        return part[:size]

    return recv


def test_line_reader_splits_lines_across_chunks() -> None:
    reader = ssh.LineReader(chunks(b"a", b"b\r\nc", b"\n\nd\xff", b"e"))
    assert list(reader) == ["ab", "c", "", "d\ufffde"]
    assert reader.readline() is None
    assert list(ssh.LineReader(chunks())) == []
    assert list(ssh.LineReader(chunks(b"x\n"))) == ["x"]


def test_line_reader_hands_over_the_bytes_after_a_line() -> None:
    reader = ssh.LineReader(chunks(b"12\nab\ncd", b"more"), chunk_bytes=7)
    assert reader.readline() == "12"
    assert reader.take_rest() == b"ab\nc"  # what the first receive brought beyond the line
    assert reader.readline() == "dmore"


def test_line_reader_bounds_long_lines() -> None:
    endless = [b"y" * 100] * 50 + [b"z" * 7 + b"\nshort\n"]
    reader = ssh.LineReader(chunks(b"x" * 30 + b"\n", *endless), chunk_bytes=100, max_line_chars=10)
    assert list(reader) == ["x" * 10, "y" * 10, "short"]
    assert len(reader._buffer) <= 100 + 10


def test_target_repr_hides_private_key(sshd_target: ssh.SSHTarget) -> None:
    assert "PRIVATE" not in repr(sshd_target)
    assert sshd_target.host_key_name == f"[127.0.0.1]:{sshd_target.port}"


# --- commands ----------------------------------------------------------------------------------------


def test_run_quotes_arguments_and_streams_stdout_in_order(session: ssh.SSHSession, tmp_path: Path) -> None:
    canary = tmp_path / "injected"
    args = ["two words", "it's", '"double"', f"$(touch {canary})", f"x; touch {canary}", "`id`", "tab\there"]
    lines: list[str] = []
    result = session.run(["printf", "%s\\n", *args], on_stdout_line=lines.append)
    assert lines == args
    assert result.returncode == 0
    assert not canary.exists(), "an argument was interpreted by the remote shell"


def test_run_streams_lines_as_they_come(session: ssh.SSHSession) -> None:
    arrivals: list[tuple[str, float]] = []
    script = "for i in 1 2 3; do echo line$i; sleep 0.4; done"
    session.run(["sh", "-c", script], on_stdout_line=lambda line: arrivals.append((line, time.monotonic())))
    assert [line for line, _ in arrivals] == ["line1", "line2", "line3"]
    # Buffered output would arrive all at once at the end.
    assert arrivals[2][1] - arrivals[0][1] > 0.6


def test_run_collects_stdout_without_callback(session: ssh.SSHSession) -> None:
    result = session.run(["sh", "-c", "echo a; printf 'b\\r\\nc'"])
    assert result.stdout == "a\nb\nc"


def test_run_keeps_stderr_tail_and_exit_status(session: ssh.SSHSession) -> None:
    script = "for i in $(seq 1 100); do echo err$i >&2; done; echo out; exit 3"
    result = session.run(["sh", "-c", script], check=False, stderr_tail_lines=5)
    assert result.returncode == 3
    assert result.stderr_tail.splitlines() == ["err96", "err97", "err98", "err99", "err100"]
    with pytest.raises(RemoteCommandError) as caught:
        session.run(["sh", "-c", script], stderr_tail_lines=5)
    assert caught.value.returncode == 3
    assert caught.value.command == ssh.command_line(["sh", "-c", script])
    assert caught.value.stderr_tail.endswith("err100")


def test_run_large_stderr_does_not_stall(session: ssh.SSHSession) -> None:
    # 8 MB on stderr, beyond the channel window: it must be drained while stdout is read.
    script = "head -c 8000000 /dev/zero | tr '\\0' 'e' | fold -w 100 >&2; echo done"
    lines: list[str] = []
    session.run(["sh", "-c", script], on_stdout_line=lines.append)
    assert lines == ["done"]


def test_close_from_another_thread_interrupts_a_running_command(session: ssh.SSHSession) -> None:
    outcome: dict[str, object] = {}

    def run() -> None:
        started = time.monotonic()
        try:
            session.run(["sleep", "30"])
        except Exception as exc:
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(0.5)
    session.close()
    worker.join(timeout=5)
    assert not worker.is_alive(), "run() did not return after close()"
    assert isinstance(outcome["error"], RemoteCommandError)
    assert outcome["error"].returncode == -1
    assert isinstance(outcome["seconds"], float) and outcome["seconds"] < 3
    session.close()  # idempotent
    assert session.closed
    with pytest.raises(SSHError):
        session.run(["true"])


# --- connecting ----------------------------------------------------------------------------------------


def test_connect_reports_cipher_and_server(session: ssh.SSHSession) -> None:
    assert session.cipher == "aes128-gcm@openssh.com"
    assert "OpenSSH" in session.server_version


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


def test_unusable_identity_file_is_an_input_error(sshd_target: ssh.SSHTarget, tmp_path: Path) -> None:
    missing = dataclasses.replace(sshd_target, private_key=None, identity_file=tmp_path / "nope")
    with pytest.raises(InputError, match="nope"):
        ssh.connect(missing, deadline_s=5)
    garbage = tmp_path / "garbage"
    garbage.write_text("not a key\n")
    with pytest.raises(InputError, match="garbage"):
        ssh.connect(dataclasses.replace(missing, identity_file=garbage), deadline_s=5)


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


# --- push ------------------------------------------------------------------------------------------------


def make_files(directory: Path) -> list[Path]:
    directory.mkdir()
    files = {
        "big.bin": os.urandom(3 * 1024 * 1024 + 12345),
        "empty.wav": b"",
        "name with spaces 'and quotes'.mp3": os.urandom(70_000),
        "small.flac": os.urandom(1000),
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return [directory / name for name in files]


def test_push_several_files_verified(session: ssh.SSHSession, tmp_path: Path) -> None:
    sources = make_files(tmp_path / "src")
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    progress: dict[Path, int] = {}

    def on_progress(path: Path, delta: int) -> None:
        progress[path] = progress.get(path, 0) + delta

    pushed = session.push(
        [(s, str(remote_dir / s.name)) for s in sources], on_progress=on_progress, concurrency=3
    )
    assert [p.local_path for p in pushed] == sources
    for source, result in zip(sources, pushed, strict=True):
        landed = remote_dir / source.name
        assert landed.read_bytes() == source.read_bytes()
        assert result.size_bytes == source.stat().st_size
        assert result.sha256 == sha256_of(source) == sha256_of(landed)
        assert result.remote_path == str(landed)
    assert {p: n for p, n in progress.items() if n} == {
        s: s.stat().st_size for s in sources if s.stat().st_size
    }
    assert sum(progress.values()) == sum(s.stat().st_size for s in sources)


def _wait_for_size(path: Path, size: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size == size:
            return
        time.sleep(0.01)
    raise AssertionError(f"{path} never reached {size} bytes")


@pytest.mark.parametrize("damage", ["flip", "append", "delete"])
def test_push_detects_a_file_changed_on_the_host(
    session: ssh.SSHSession, tmp_path: Path, damage: str
) -> None:
    source = tmp_path / "audio.wav"
    source.write_bytes(os.urandom(2 * 1024 * 1024))
    remote = tmp_path / "remote.wav"
    sent = [0]

    def corrupt_when_done(path: Path, delta: int) -> None:
        sent[0] += delta
        if sent[0] == source.stat().st_size:
            # Every write has landed once the remote file is complete; then damage it, as a faulty disk
            # or a concurrent writer on the host would, before the push verifies it.
            _wait_for_size(remote, sent[0])
            if damage == "delete":
                remote.unlink()
                return
            with remote.open("r+b") as handle:
                if damage == "flip":
                    handle.seek(1_000_000)
                    byte = handle.read(1)
                    handle.seek(1_000_000)
                    handle.write(bytes([byte[0] ^ 0xFF]))
                else:
                    handle.seek(0, os.SEEK_END)
                    handle.write(b"x")

    with pytest.raises(TransferError) as caught:
        session.push([(source, str(remote))], on_progress=corrupt_when_done)
    expected = {"flip": "SHA-256", "append": "bytes on the host", "delete": "No such file"}[damage]
    assert expected in str(caught.value)
    assert str(remote) in str(caught.value)


def test_pushed_file_size_and_hash_match_the_host(session: ssh.SSHSession, tmp_path: Path) -> None:
    source = tmp_path / "r.bin"
    source.write_bytes(b"hello\n")
    remote = tmp_path / "remote.bin"
    [pushed] = session.push([(source, str(remote))])
    digest = hashlib.sha256(b"hello\n").hexdigest()
    on_host = session.run(["sha256sum", str(remote)]).stdout.split()[0]
    assert pushed.sha256 == on_host == digest
    assert pushed.size_bytes == int(session.run(["stat", "-c", "%s", str(remote)]).stdout) == 6
    with pytest.raises(RemoteCommandError):
        session.run(["sha256sum", str(tmp_path / "missing")])


def test_push_into_missing_directory_fails(session: ssh.SSHSession, tmp_path: Path) -> None:
    source = tmp_path / "a.wav"
    source.write_bytes(b"abc")
    with pytest.raises(TransferError, match=r"a\.wav"):
        session.push([(source, str(tmp_path / "no" / "such" / "a.wav"))])


def test_push_missing_local_file_is_an_input_error(session: ssh.SSHSession, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing\.wav"):
        session.push([(tmp_path / "missing.wav", str(tmp_path / "x.wav"))])


def test_close_interrupts_a_push(session: ssh.SSHSession, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(150 * 1024 * 1024))
    started = threading.Event()
    outcome: dict[str, object] = {}

    def push() -> None:
        try:
            session.push([(source, str(tmp_path / "dest.bin"))], on_progress=lambda p, n: started.set())
        except Exception as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=push)
    worker.start()
    assert started.wait(10)
    session.close()
    worker.join(timeout=5)
    assert not worker.is_alive(), "push() did not return after close()"
    assert isinstance(outcome.get("error"), SSHError)


# --- pull -------------------------------------------------------------------------------------------------


def test_pull_writes_files(session: ssh.SSHSession, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "a.txt").write_text("hej världen\n")
    (remote / "b.json").write_bytes(os.urandom(300_000))
    out = tmp_path / "out" / "nested"
    written = session.pull([(str(remote / "a.txt"), out / "a.txt"), (str(remote / "b.json"), out / "b.json")])
    assert written == [out / "a.txt", out / "b.json"]
    assert (out / "a.txt").read_text() == "hej världen\n"
    assert (out / "b.json").read_bytes() == (remote / "b.json").read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.json"]  # no temp files left


def test_pull_of_missing_file_keeps_existing_local_file(session: ssh.SSHSession, tmp_path: Path) -> None:
    good = tmp_path / "out" / "t.txt"
    good.parent.mkdir()
    good.write_text("good transcript\n")
    with pytest.raises(TransferError, match=r"missing\.txt"):
        session.pull([(str(tmp_path / "missing.txt"), good)])
    assert good.read_text() == "good transcript\n"
    assert list(good.parent.iterdir()) == [good]


def test_pull_failing_midway_keeps_existing_local_file(session: ssh.SSHSession, tmp_path: Path) -> None:
    remote = tmp_path / "remote.bin"
    remote.write_bytes(os.urandom(150 * 1024 * 1024))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    good = out_dir / "result.bin"
    good.write_bytes(b"the good one")
    outcome: dict[str, object] = {}

    def pull() -> None:
        try:
            session.pull([(str(remote), good)])
        except Exception as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=pull)
    worker.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # wait until the temporary file has data: the pull is midway
        parts = [p for p in out_dir.iterdir() if p.name.endswith(".part")]
        if parts and parts[0].stat().st_size > 0:
            break
        time.sleep(0.005)
    else:
        raise AssertionError("the pull never started writing")
    session.close()
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert isinstance(outcome.get("error"), SSHError)
    assert good.read_bytes() == b"the good one"
    assert list(out_dir.iterdir()) == [good]


# --- heartbeat ---------------------------------------------------------------------------------------------


def test_heartbeat_touches_file_until_stopped(session: ssh.SSHSession, tmp_path: Path) -> None:
    beat_file = tmp_path / "heartbeat"
    heartbeat = session.start_heartbeat(str(beat_file), interval_s=0.2)
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


def test_heartbeat_survives_transient_errors(session: ssh.SSHSession, tmp_path: Path) -> None:
    beat_file = tmp_path / "not-yet" / "heartbeat"  # its directory appears later
    errors: list[str] = []
    heartbeat = session.start_heartbeat(str(beat_file), interval_s=0.1, on_error=errors.append)
    deadline = time.monotonic() + 10
    while heartbeat.failures < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert heartbeat.failures >= 2 and errors and heartbeat.running
    beat_file.parent.mkdir()
    while not beat_file.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert beat_file.exists() and heartbeat.beats >= 1
    session.close()  # stops its heartbeats too
    heartbeat.stop()
    assert not heartbeat.running


# --- remote shell snippets, run locally under a plain sh -----------------------------------------------


@pytest.mark.parametrize("tool", ["openssl", "sha256sum"])
def test_check_script_with_either_tool(tmp_path: Path, tool: str) -> None:
    """The push's check prints every size, then every SHA-256, in argument order, with OpenSSL or, without
    it, coreutils; one line per file whatever its name; non-zero when a file cannot be read."""
    real, stat = shutil.which(tool), shutil.which("stat")
    if real is None or stat is None:
        pytest.skip(f"{tool} or stat not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / tool).symlink_to(real)  # with stat, the only tools on PATH: the other branch cannot run
    (bin_dir / "stat").symlink_to(stat)
    names = ["a b.wav", "-dash.wav", "new\nline.wav", "$(touch canary).wav", "empty.wav"]
    files = [tmp_path / name for name in names]
    for number, path in enumerate(files[:-1]):
        path.write_bytes(os.urandom(1000 * (number + 1)))
    files[-1].write_bytes(b"")

    def check(paths: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/sh", "-c", ssh._CHECK_SCRIPT, "sh", *paths],
            capture_output=True,
            text=True,
            env={"PATH": str(bin_dir)},
            cwd=tmp_path,
            check=False,
        )

    done = check([str(f) for f in files[:2]] + names[2:])  # relative names too, one starting with "-"
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    assert lines[-1] == "" and len(lines) == 2 * len(files) + 1
    assert [int(line) for line in lines[: len(files)]] == [f.stat().st_size for f in files]
    hashes = [ssh._HASH_LINE_RE.match(line) for line in lines[len(files) : -1]]
    assert [m.group(1) if m else None for m in hashes] == [sha256_of(f) for f in files]
    assert not (tmp_path / "canary").exists()
    missing = check([str(files[0]), str(tmp_path / "missing.wav")])
    assert missing.returncode != 0 and "missing.wav" in missing.stderr


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


def test_push_rejects_two_files_to_one_remote_path(session: ssh.SSHSession, tmp_path: Path) -> None:
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    with pytest.raises(ValueError, match="same remote path"):
        session.push([(a, str(tmp_path / "x.wav")), (b, str(tmp_path / "x.wav"))])


def test_path_groups_bound_command_lines() -> None:
    short = [f"/w/{i}.wav" for i in range(600)]
    assert ssh._path_groups(short) == [short]
    long_paths = ["/w/" + "x" * 10_000 + str(i) for i in range(20)] + ["/w/" + "y" * 70_000]
    groups = ssh._path_groups(long_paths)
    assert [p for g in groups for p in g] == long_paths
    assert len(groups) > 1 and groups[-1] == [long_paths[-1]]  # a path over the limit goes alone
    assert all(sum(len(p) + 1 for p in g) <= ssh.CHECK_PATHS_MAX_BYTES for g in groups[:-1])


def test_push_many_files_across_check_commands(session: ssh.SSHSession, tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    dest.mkdir()
    sources = []
    for i in range(260):  # 260 names of 240 bytes: more paths than one check command takes
        path = src / f"{i:03}{'f' * 233}.wav"
        path.write_bytes(os.urandom(i))
        sources.append(path)
    remotes = [str(dest / s.name) for s in sources]
    assert len(ssh._path_groups(remotes)) > 1
    pushed = session.push(list(zip(sources, remotes, strict=True)))
    assert [p.sha256 for p in pushed] == [sha256_of(s) for s in sources]
    assert all((dest / s.name).read_bytes() == s.read_bytes() for s in sources)
