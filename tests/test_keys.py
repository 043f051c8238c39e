"""Per-run ed25519 keys: OpenSSH formats that paramiko and ssh-keygen accept, fingerprints as ssh-keygen
prints them, and a private key that never shows in a repr."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import paramiko
import pytest

from gpu_transcribe.ssh.keys import generate_ed25519


def test_pair_loads_in_paramiko_and_halves_match() -> None:
    pair = generate_ed25519("gpu-transcribe-client-r1")
    key = paramiko.Ed25519Key.from_private_key(io.StringIO(pair.private_key_openssh))
    assert pair.public_key_openssh == f"ssh-ed25519 {key.get_base64()} gpu-transcribe-client-r1"
    assert pair.key_type == "ssh-ed25519"
    signature = key.sign_ssh_data(b"run")
    public = paramiko.Ed25519Key(data=key.asbytes())
    assert public.verify_ssh_sig(b"run", paramiko.Message(signature.asbytes()))


def test_each_call_makes_a_new_key() -> None:
    assert generate_ed25519("a").public_key_base64 != generate_ed25519("a").public_key_base64


def test_private_key_is_not_in_repr() -> None:
    pair = generate_ed25519("c")
    assert "PRIVATE" not in repr(pair)
    assert pair.private_key_openssh.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen (openssh-client)")
def test_fingerprint_and_public_key_agree_with_ssh_keygen(tmp_path: Path) -> None:
    pair = generate_ed25519("host")
    private = tmp_path / "id_ed25519"
    private.write_text(pair.private_key_openssh)
    private.chmod(0o600)
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(private)], capture_output=True, text=True, check=True
    )
    assert derived.stdout.split()[:2] == pair.public_key_openssh.split()[:2]
    public = tmp_path / "id_ed25519.pub"
    public.write_text(pair.public_key_openssh + "\n")
    listed = subprocess.run(["ssh-keygen", "-lf", str(public)], capture_output=True, text=True, check=True)
    assert listed.stdout.split()[1] == pair.fingerprint_sha256
