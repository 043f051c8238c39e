"""Tests of ``gpu_transcribe.ssh.transfer`` (push with its check on the host, pull) against a real OpenSSH
sshd on 127.0.0.1 (``tests/fixtures/sshd.py``).

The "remote" host is this machine, so the tests check remote files directly on disk, independently of the
code under test.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from gpu_transcribe import ssh
from gpu_transcribe.errors import (
    InputError,
    RemoteCommandError,
    SSHError,
    TransferError,
)
from gpu_transcribe.ssh import transfer


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sftp_write_size_fills_whole_packets() -> None:
    size = ssh.sftp_write_size(32768, 4, ssh.OPENSSH_MAX_WRITE_BYTES)
    assert size <= ssh.OPENSSH_MAX_WRITE_BYTES
    assert (size + 25 + 4) % (32768 - 64) == 0  # request = whole packets
    assert size + 25 + 4 + (32768 - 64) > ssh.OPENSSH_MAX_WRITE_BYTES  # and as many as allowed
    assert ssh.sftp_write_size(32768, 4, ssh.SFTP_MIN_WRITE_BYTES) <= ssh.SFTP_MIN_WRITE_BYTES


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


def test_push_several_files_verified(ssh_session: ssh.SSHSession, tmp_path: Path) -> None:
    sources = make_files(tmp_path / "src")
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    progress: dict[Path, int] = {}

    def on_progress(path: Path, delta: int) -> None:
        progress[path] = progress.get(path, 0) + delta

    pushed = ssh_session.push(
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
    ssh_session: ssh.SSHSession, tmp_path: Path, damage: str
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
        ssh_session.push([(source, str(remote))], on_progress=corrupt_when_done)
    expected = {"flip": "SHA-256", "append": "bytes on the host", "delete": "No such file"}[damage]
    assert expected in str(caught.value)
    assert str(remote) in str(caught.value)


def test_pushed_file_size_and_hash_match_the_host(ssh_session: ssh.SSHSession, tmp_path: Path) -> None:
    source = tmp_path / "r.bin"
    source.write_bytes(b"hello\n")
    remote = tmp_path / "remote.bin"
    [pushed] = ssh_session.push([(source, str(remote))])
    digest = hashlib.sha256(b"hello\n").hexdigest()
    on_host = ssh_session.run(["sha256sum", str(remote)]).stdout.split()[0]
    assert pushed.sha256 == on_host == digest
    assert pushed.size_bytes == int(ssh_session.run(["stat", "-c", "%s", str(remote)]).stdout) == 6
    with pytest.raises(RemoteCommandError):
        ssh_session.run(["sha256sum", str(tmp_path / "missing")])


def test_push_into_missing_directory_fails(ssh_session: ssh.SSHSession, tmp_path: Path) -> None:
    source = tmp_path / "a.wav"
    source.write_bytes(b"abc")
    with pytest.raises(TransferError, match=r"a\.wav"):
        ssh_session.push([(source, str(tmp_path / "no" / "such" / "a.wav"))])


def test_push_names_only_the_files_that_failed(ssh_session: ssh.SSHSession, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.wav", tmp_path / "bad.wav"
    good.write_bytes(b"good")
    bad.write_bytes(b"bad")
    with pytest.raises(TransferError, match=r"^1 of 2 file\(s\) not pushed: .*bad\.wav") as caught:
        ssh_session.push([(good, str(tmp_path / "good-out.wav")), (bad, str(tmp_path / "no" / "bad.wav"))])
    assert "good.wav" not in str(caught.value) and "good-out.wav" not in str(caught.value)
    assert ssh_session.run(["true"]).returncode == 0  # the session is still usable


def test_push_missing_local_file_is_an_input_error(ssh_session: ssh.SSHSession, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing\.wav"):
        ssh_session.push([(tmp_path / "missing.wav", str(tmp_path / "x.wav"))])


def test_push_rejects_two_files_to_one_remote_path(ssh_session: ssh.SSHSession, tmp_path: Path) -> None:
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    with pytest.raises(ValueError, match="same remote path"):
        ssh_session.push([(a, str(tmp_path / "x.wav")), (b, str(tmp_path / "x.wav"))])


def test_close_interrupts_a_push(ssh_session: ssh.SSHSession, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(150 * 1024 * 1024))
    started = threading.Event()
    outcome: dict[str, object] = {}

    def push() -> None:
        try:
            ssh_session.push([(source, str(tmp_path / "dest.bin"))], on_progress=lambda p, n: started.set())
        except Exception as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=push)
    worker.start()
    assert started.wait(10)
    ssh_session.close()
    worker.join(timeout=5)
    assert not worker.is_alive(), "push() did not return after close()"
    assert isinstance(outcome.get("error"), SSHError)


@pytest.mark.parametrize("tool", ["openssl", "sha256sum"])
def test_check_script_with_either_tool(tmp_path: Path, tool: str) -> None:
    """The push's check waits for a line on stdin, then prints every size, then every SHA-256, in argument
    order, with OpenSSL or, without it, coreutils; one line per file whatever its name; non-zero when a file
    cannot be read or stdin ends without the line."""
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

    def check(paths: list[str], go: str = "\n") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/sh", "-c", transfer._CHECK_SCRIPT, "sh", *paths],
            input=go,
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
    hashes = [transfer._HASH_LINE_RE.match(line) for line in lines[len(files) : -1]]
    assert [m.group(1) if m else None for m in hashes] == [sha256_of(f) for f in files]
    assert not (tmp_path / "canary").exists()
    missing = check([str(files[0]), str(tmp_path / "missing.wav")])
    assert missing.returncode != 0 and "missing.wav" in missing.stderr
    abandoned = check([str(files[0])], go="")  # stdin ends without the go-ahead: nothing runs
    assert abandoned.returncode != 0 and abandoned.stdout == ""


def test_path_groups_bound_command_lines() -> None:
    short = [f"/w/{i}.wav" for i in range(600)]
    assert transfer._path_groups(short) == [short]
    long_paths = ["/w/" + "x" * 10_000 + str(i) for i in range(20)] + ["/w/" + "y" * 70_000]
    groups = transfer._path_groups(long_paths)
    assert [p for g in groups for p in g] == long_paths
    assert len(groups) > 1 and groups[-1] == [long_paths[-1]]  # a path over the limit goes alone
    assert all(sum(len(p) + 1 for p in g) <= transfer.CHECK_PATHS_MAX_BYTES for g in groups[:-1])


def test_push_many_files_across_check_commands(ssh_session: ssh.SSHSession, tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    dest.mkdir()
    sources = []
    for i in range(260):  # 260 names of 240 bytes: more paths than one check command takes
        path = src / f"{i:03}{'f' * 233}.wav"
        path.write_bytes(os.urandom(i))
        sources.append(path)
    remotes = [str(dest / s.name) for s in sources]
    assert len(transfer._path_groups(remotes)) > 1
    pushed = ssh_session.push(list(zip(sources, remotes, strict=True)))
    assert [p.sha256 for p in pushed] == [sha256_of(s) for s in sources]
    assert all((dest / s.name).read_bytes() == s.read_bytes() for s in sources)


def test_pull_writes_files(ssh_session: ssh.SSHSession, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "a.txt").write_text("hej världen\n")
    (remote / "b.json").write_bytes(os.urandom(300_000))
    out = tmp_path / "out" / "nested"
    written = ssh_session.pull(
        [(str(remote / "a.txt"), out / "a.txt"), (str(remote / "b.json"), out / "b.json")]
    )
    assert written == [out / "a.txt", out / "b.json"]
    assert (out / "a.txt").read_text() == "hej världen\n"
    assert (out / "b.json").read_bytes() == (remote / "b.json").read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.json"]  # no temp files left


def test_pull_of_missing_file_keeps_existing_local_file(ssh_session: ssh.SSHSession, tmp_path: Path) -> None:
    good = tmp_path / "out" / "t.txt"
    good.parent.mkdir()
    good.write_text("good transcript\n")
    with pytest.raises(TransferError, match=r"missing\.txt"):
        ssh_session.pull([(str(tmp_path / "missing.txt"), good)])
    assert good.read_text() == "good transcript\n"
    assert list(good.parent.iterdir()) == [good]


def test_pull_failing_midway_keeps_existing_local_file(ssh_session: ssh.SSHSession, tmp_path: Path) -> None:
    remote = tmp_path / "remote.bin"
    remote.write_bytes(os.urandom(150 * 1024 * 1024))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    good = out_dir / "result.bin"
    good.write_bytes(b"the good one")
    outcome: dict[str, object] = {}

    def pull() -> None:
        try:
            ssh_session.pull([(str(remote), good)])
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
    ssh_session.close()
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert isinstance(outcome.get("error"), SSHError)
    assert good.read_bytes() == b"the good one"
    assert list(out_dir.iterdir()) == [good]
