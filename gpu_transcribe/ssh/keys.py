"""Per-run SSH keys: ed25519 key pairs made locally with ``cryptography``, kept in memory.

Two pairs per run: the client's (its public half goes to EC2 with ``ImportKeyPair``; the private half never
leaves this process unless the caller writes it to a 0600 file), and the instance's host key (both halves go
into cloud-init user data, so the client knows the host key before the first connection and verifies it
strictly instead of trusting on first use).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass(frozen=True)
class SshKeyPair:
    """An ed25519 key pair in OpenSSH text formats.

    Attributes:
        private_key_openssh: ``-----BEGIN OPENSSH PRIVATE KEY-----`` PEM text, unencrypted (never printed:
            it is left out of ``repr``). paramiko reads it with
            ``Ed25519Key.from_private_key(io.StringIO(...))``.
        public_key_openssh: one line ``ssh-ed25519 AAAA... comment``, as in ``authorized_keys``.
    """

    private_key_openssh: str = field(repr=False)
    public_key_openssh: str

    @property
    def key_type(self) -> str:
        """The SSH key type name, ``ssh-ed25519``."""
        return self.public_key_openssh.split()[0]

    @property
    def public_key_base64(self) -> str:
        """The public key blob in base64 (the second field of the OpenSSH line)."""
        return self.public_key_openssh.split()[1]

    @property
    def fingerprint_sha256(self) -> str:
        """``SHA256:...`` fingerprint as ``ssh-keygen -lf`` prints it (unpadded base64 of the blob's
        SHA-256)."""
        digest = hashlib.sha256(base64.b64decode(self.public_key_base64)).digest()
        return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def generate_ed25519(comment: str) -> SshKeyPair:
    """Make a fresh ed25519 key pair.

    Args:
        comment: the comment at the end of the public key line, e.g. ``gpu-transcribe-client-<run id>``.

    Returns:
        The pair in OpenSSH formats (private key unencrypted, in memory only).
    """
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode("ascii")
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return SshKeyPair(
        private_key_openssh=private, public_key_openssh=f"{public.decode('ascii')} {comment}".strip()
    )
