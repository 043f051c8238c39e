"""What ``server status|tunnel|logs|down`` need to find a server again: one JSON file per server name.

The file lives in the user's state directory (``platformdirs.user_state_dir``: ``~/.local/state/
gpu-transcribe/servers/<name>.json`` on Linux), or under ``$GPU_TRANSCRIBE_STATE_DIR/servers/`` when that is
set. It holds secrets (the SSH client private key and the server's API key), so the directory is made
mode 0700 and the file mode 0600, and it is written atomically (a temporary file in the same directory, then
``os.replace``): a reader sees the old file or the new one, never half of one.

This module imports neither boto3 nor paramiko.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from gpu_transcribe.common import parse_iso_utc
from gpu_transcribe.errors import GpuTranscribeError, SettingsError
from gpu_transcribe_engine.files import write_atomic

#: Test seam and override: the state directory (servers are under ``servers/`` in it).
STATE_DIR_ENV = "GPU_TRANSCRIBE_STATE_DIR"
#: The state file's format; a file of another format is refused with a message, never misread.
STATE_FORMAT = 1
#: The default ``--name``.
DEFAULT_NAME = "default"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")

Supervisor = Literal["systemd", "process"]


class ServerStateError(GpuTranscribeError):
    """A server's state file cannot be read or written (the message names the file and what to do)."""


def check_name(name: str) -> str:
    """``name`` if it is a valid server name (lower-case letters, digits and ``-``, at most 32).

    Raises:
        SettingsError: it is not (exit status 2).
    """
    if not _NAME_RE.match(name):
        raise SettingsError(
            "name",
            "--name",
            f"--name: {name!r} is not a server name; use lower-case letters, digits and '-' (at most 32)",
            "lower-case letters, digits and '-'",
        )
    return name


def state_dir() -> Path:
    """The directory holding the server state files: ``$GPU_TRANSCRIBE_STATE_DIR/servers``, else
    ``<user state dir>/gpu-transcribe/servers``."""
    override = os.environ.get(STATE_DIR_ENV, "").strip()
    if override:
        return Path(override).expanduser() / "servers"
    from platformdirs import user_state_dir

    return Path(user_state_dir("gpu-transcribe", appauthor=False)) / "servers"


def state_path(name: str) -> Path:
    """The state file of server ``name``."""
    return state_dir() / f"{check_name(name)}.json"


@dataclass(frozen=True)
class ServerState:
    """One server, as ``server up`` left it.

    Attributes:
        name: the server's name (``--name``).
        run_id: the run id that names and tags its instance, key pair and security group.
        region: the region it runs in.
        aws_profile: the AWS profile it was launched with, or ``None``.
        instance_id: e.g. ``i-0123456789abcdef0``.
        instance_type: e.g. ``g4dn.xlarge``.
        zone: its availability zone.
        market: ``spot`` or ``on-demand``.
        price_usd_per_hour: the price when launched (spot price in that zone, or on-demand), or ``None``.
        launched_at: when the launch began (UTC).
        key_name: the EC2 key pair's name.
        security_group_id: the security group's id.
        security_group_name: the security group's name.
        login_user: the SSH user.
        client_private_key: the SSH client private key (OpenSSH text; never in ``repr``).
        host_public_key: the instance's pinned host key, ``ssh-ed25519 AAAA...``.
        api_key: the server's bearer key (never in ``repr``).
        port: the port ``serve`` listens on, on the instance's 127.0.0.1.
        remote_dir: the server's directory on the instance (API key file, and without systemd its log and
            pid file).
        supervisor: ``systemd`` (a unit) or ``process`` (``setsid nohup`` with a pid file, on hosts without
            systemd).
        unit: the systemd unit's name.
        remote_prefix: the image's engine prefix (``PREFIX/venv/bin/python``).
        idle_stop_min: the server powers the instance off after this many minutes without a request.
        max_lifetime_h: ... or this many hours after it started.
        lifetime_cap_minutes: the instance's own backstop (user data), minutes after boot.
        ssh_cidr: the only source its security group lets reach port 22 (the caller's address at ``up``).
        format: :data:`STATE_FORMAT`.
    """

    name: str
    run_id: str
    region: str
    aws_profile: str | None
    instance_id: str
    instance_type: str
    zone: str
    market: str
    price_usd_per_hour: float | None
    launched_at: datetime
    key_name: str
    security_group_id: str
    security_group_name: str
    login_user: str
    client_private_key: str = field(repr=False)
    host_public_key: str
    api_key: str = field(repr=False)
    port: int
    remote_dir: str
    supervisor: Supervisor
    unit: str
    remote_prefix: str
    idle_stop_min: int
    max_lifetime_h: float
    lifetime_cap_minutes: int
    ssh_cidr: str = ""
    format: int = STATE_FORMAT

    @property
    def path(self) -> Path:
        """Where this state is kept."""
        return state_path(self.name)

    def to_json(self) -> dict[str, Any]:
        """The file's JSON object (secrets included)."""
        data = asdict(self)
        data["launched_at"] = self.launched_at.astimezone(UTC).isoformat()  # exact: it round-trips
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], source: Path) -> ServerState:
        """Parse a state file's JSON object.

        Raises:
            ServerStateError: another format, or fields missing or malformed (the file is named).
        """
        if data.get("format") != STATE_FORMAT:
            raise ServerStateError(
                f"{source}: server state of format {data.get('format')!r}, this version reads "
                f"{STATE_FORMAT}; use the gpu-transcribe version that wrote it, or `gpu-transcribe cleanup`"
            )
        names = {f.name for f in fields(cls)}
        missing = sorted(names - set(data) - {"format", "ssh_cidr"})
        launched = parse_iso_utc(str(data.get("launched_at", "")))
        if missing or launched is None:
            raise ServerStateError(f"{source}: damaged server state (missing {', '.join(missing) or 'time'})")
        values = {k: v for k, v in data.items() if k in names}
        values["launched_at"] = launched
        return cls(**values)


def save_state(state: ServerState) -> Path:
    """Write ``state`` atomically with mode 0600 (its directory 0700); returns the path.

    Raises:
        ServerStateError: the directory or file cannot be written.
    """
    path = state.path
    text = json.dumps(state.to_json(), indent=1) + "\n"
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        write_atomic(path, text.encode("utf-8"), 0o600)
    except OSError as exc:
        raise ServerStateError(f"{path}: cannot write the server state ({exc.strerror})") from exc
    return path


def load_state(name: str) -> ServerState | None:
    """Server ``name``'s state, or ``None`` if there is no file.

    Raises:
        SettingsError: ``name`` is not a valid name.
        ServerStateError: the file cannot be read or is damaged.
    """
    path = state_path(name)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ServerStateError(f"{path}: cannot read the server state ({exc.strerror})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ServerStateError(f"{path}: damaged server state (not JSON: {exc})") from exc
    if not isinstance(data, dict):
        raise ServerStateError(f"{path}: damaged server state (not a JSON object)")
    return ServerState.from_json(data, path)


def delete_state(name: str) -> bool:
    """Remove server ``name``'s state file; ``False`` if there was none.

    Raises:
        ServerStateError: it exists but cannot be removed.
    """
    path = state_path(name)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ServerStateError(f"{path}: cannot remove the server state ({exc.strerror})") from exc
    return True


def list_states() -> tuple[ServerState, ...]:
    """Every readable server state, sorted by name (damaged files are passed over)."""
    folder = state_dir()
    states: list[ServerState] = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        with contextlib.suppress(GpuTranscribeError):
            state = load_state(path.stem)
            if state is not None:
                states.append(state)
    return tuple(states)
