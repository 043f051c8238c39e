"""What ``server`` does on the instance, over an open SSH session: start ``serve`` under systemd (or, on a
host without systemd, as a detached process), ask its ``/health``, read its log, stop it, and stop the
dead-man switch once the server's own idle stop and lifetime have taken over.

Every command is a fixed shell script run as ``sh -c SCRIPT sh ARG...`` (arguments quoted by the SSH layer),
so no value is ever pasted into shell code; the API key travels on stdin, never in a command line (which
other users of the host could read in ``ps``). Commands that need root use ``sudo -n`` unless the login
user is root.

On the instance (``DIR`` is ``/tmp/gpu-transcribe-server-<run id>``, mode 0700, the login user's):

- ``DIR/api-key``: the bearer key, mode 0600;
- with systemd: the unit ``/etc/systemd/system/gpu-transcribe-server.service`` (runs as root, since the idle
  stop and the lifetime power the instance off with ``shutdown -P now``; ``serve`` binds 127.0.0.1 only);
  its log is the journal (``journalctl -u gpu-transcribe-server``);
- without systemd (the loopback sshd that plays the instance in tests, a container): ``setsid nohup`` with
  ``DIR/server.pid`` (the process group leader's pid) and ``DIR/server.log``.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpu_transcribe.errors import GpuTranscribeError, SSHError

if TYPE_CHECKING:
    from gpu_transcribe.ssh import SSHSession
    from gpu_transcribe.warm.state import Supervisor

#: The systemd unit ``serve`` runs as (one server per instance).
UNIT = "gpu-transcribe-server"
#: The unit may fail this many times within :data:`START_LIMIT_INTERVAL_S`; then the instance powers off.
START_LIMIT_BURST = 3
#: Seconds of the window in which :data:`START_LIMIT_BURST` failures power the instance off.
START_LIMIT_INTERVAL_S = 600
#: The dead-man switch's transient unit (:data:`gpu_transcribe.aws.ec2.userdata.DEADMAN_UNIT`).
DEADMAN_UNIT = "gpu-transcribe-deadman"

# Characters allowed in the arguments of the unit's ExecStart: systemd splits on spaces and expands % and $,
# so anything else is refused instead of quoted.
_SAFE_ARG = re.compile(r"^[A-Za-z0-9_./:=@+,-]+$")

_SUDO = 'if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo -n"; fi\n'
_HAS_SYSTEMD = "[ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1"

# $1 DIR, $2 unit, $3 the unit file's text, $4... the command as arguments.
_START_SCRIPT = (
    "set -eu\n"
    + _SUDO
    + """dir=$1 unit=$2 unit_text=$3
shift 3
umask 077
mkdir -m 0700 "$dir"
cat > "$dir/api-key"
chmod 0600 "$dir/api-key"
if """
    + _HAS_SYSTEMD
    + """; then
    printf '%s' "$unit_text" > "$dir/unit"
    $SUDO install -m 0644 "$dir/unit" "/etc/systemd/system/$unit.service"
    $SUDO systemctl daemon-reload
    $SUDO systemctl start "$unit"
    echo systemd
else
    cd "$dir"
    setsid nohup "$@" > "$dir/server.log" 2>&1 < /dev/null &
    echo $! > "$dir/server.pid"
    echo process
fi
"""
)

# $1 DIR, $2 unit, $3 supervisor.
_STOP_SCRIPT = (
    _SUDO
    + """dir=$1 unit=$2 supervisor=$3
if [ "$supervisor" = systemd ]; then
    $SUDO systemctl stop "$unit" 2>/dev/null
    $SUDO rm -f "/etc/systemd/system/$unit.service"
    $SUDO systemctl daemon-reload 2>/dev/null
else
    pid=$(cat "$dir/server.pid" 2>/dev/null || true)
    if [ -n "$pid" ]; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
        n=0
        while kill -0 "$pid" 2>/dev/null && [ $n -lt 50 ]; do sleep 0.2; n=$((n + 1)); done
        kill -KILL -- "-$pid" 2>/dev/null
    fi
fi
exit 0
"""
)

# $1 lines, $2 DIR, $3 unit, $4 supervisor.
_LOGS_SCRIPT = (
    _SUDO
    + """n=$1 dir=$2 unit=$3 supervisor=$4
if [ "$supervisor" = systemd ]; then
    exec $SUDO journalctl -u "$unit" -n "$n" --no-pager -o short-iso
fi
exec tail -n "$n" "$dir/server.log"
"""
)

_DEADMAN_SCRIPT = (
    _SUDO
    + "if "
    + _HAS_SYSTEMD
    + """ && systemctl is-active --quiet "$1"; then
    $SUDO systemctl stop "$1" && echo stopped
else
    echo none
fi
"""
)

# Run by the engine's python on the instance: is the server's process alive, and what does /health say?
# argv: url, supervisor, DIR, unit. Prints one JSON object.
_PROBE = r"""
import json, os, subprocess, sys, urllib.error, urllib.request
url, supervisor, directory, unit = sys.argv[1:5]
out = {"running": False, "restarts": 0, "status": 0, "body": None, "error": ""}
if supervisor == "systemd":
    state = subprocess.run(["systemctl", "is-active", unit], capture_output=True, text=True).stdout.strip()
    out["running"] = state in ("active", "activating", "reloading")
    shown = subprocess.run(
        ["systemctl", "show", "-p", "NRestarts", "--value", unit], capture_output=True, text=True
    ).stdout.strip()
    out["restarts"] = int(shown) if shown.isdigit() else 0
else:
    try:
        with open(os.path.join(directory, "server.pid")) as handle:
            os.kill(int(handle.read().strip()), 0)
        out["running"] = True
    except (OSError, ValueError):
        pass
body = b""
try:
    with urllib.request.urlopen(url, timeout=5) as reply:
        out["status"], body = reply.status, reply.read()
except urllib.error.HTTPError as exc:
    out["status"], body = exc.code, exc.read()
except Exception as exc:
    out["error"] = str(exc)
try:
    out["body"] = json.loads(body) if body else None
except ValueError:
    out["body"] = body.decode("utf-8", "replace")[:500]
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Health:
    """One look at the server on the instance.

    Attributes:
        running: its process (or unit) is alive.
        restarts: times systemd restarted it after a failure (0 without systemd).
        status: HTTP status of ``GET /health`` (0: no answer; 503 while the model loads).
        body: the JSON it answered (``requests_served``, ``idle_s``...), or ``None``.
        error: why there was no answer (connection refused...), else ``""``.
    """

    running: bool
    status: int
    body: dict[str, Any] | None
    error: str = ""
    restarts: int = 0

    @property
    def ready(self) -> bool:
        """``/health`` answered 200: the model is loaded."""
        return self.status == 200

    def number(self, key: str) -> float | None:
        """A number from the body (``requests_served``, ``idle_s``, ``uptime_s``), or ``None``."""
        value = (self.body or {}).get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def remote_dir(run_id: str) -> str:
    """The server's directory on the instance."""
    return f"/tmp/gpu-transcribe-server-{run_id}"


def engine_python(prefix: str) -> str:
    """The image's engine interpreter: ``PREFIX/venv/bin/python``."""
    return posixpath.join(prefix, "venv", "bin", "python")


def serve_argv(
    *,
    python: str,
    directory: str,
    port: int,
    idle_stop_min: int,
    max_lifetime_h: float,
    model: str,
    offline: bool,
) -> list[str]:
    """The command that runs the server on the instance: ``env [HF offline] PYTHON -m gpu_transcribe serve
    --bind 127.0.0.1 --port P --api-key-file DIR/api-key --idle-stop-min N --max-lifetime-h H --model M
    --jobs-dir DIR/jobs --webhook-secret-file DIR/webhook-secret`` (async jobs and the secret that signs their
    callbacks live beside the key, in the server's private directory).

    Raises:
        GpuTranscribeError: an argument has a character systemd would interpret (space, quote, ``%``,
            ``$``...); the message names it.
    """
    env = ["HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1"] if offline else []
    argv = [
        "/usr/bin/env",
        *env,
        python,
        "-m",
        "gpu_transcribe",
        "serve",
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--api-key-file",
        posixpath.join(directory, "api-key"),
        "--idle-stop-min",
        str(idle_stop_min),
        "--max-lifetime-h",
        f"{max_lifetime_h:g}",
        "--model",
        model,
        "--jobs-dir",
        posixpath.join(directory, "jobs"),
        "--webhook-secret-file",
        posixpath.join(directory, "webhook-secret"),
    ]
    for arg in argv:
        if not _SAFE_ARG.match(arg):
            raise GpuTranscribeError(
                f"cannot start the server with the argument {arg!r}: use paths and model names without "
                "spaces, quotes, % or $"
            )
    return argv


def unit_text(name: str, argv: Sequence[str]) -> str:
    """The systemd unit that runs ``argv`` (from :func:`serve_argv`, whose arguments need no quoting):
    started but not enabled (the instance never reboots: its shutdown terminates it), restarted if it fails;
    failing :data:`START_LIMIT_BURST` times within :data:`START_LIMIT_INTERVAL_S` powers the instance off
    (``FailureAction=poweroff``, which terminates it): a server that cannot run must not keep a GPU instance
    up until its lifetime cap. ``server down``'s ``systemctl stop`` is no failure. It runs as root, since
    ``serve`` powers the instance off with ``shutdown -P now``; ``serve`` listens on 127.0.0.1 only."""
    return (
        "[Unit]\n"
        f"Description=gpu-transcribe serve (server {name})\n"
        "After=network-online.target\n"
        f"StartLimitIntervalSec={START_LIMIT_INTERVAL_S}\n"
        f"StartLimitBurst={START_LIMIT_BURST}\n"
        "FailureAction=poweroff\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={' '.join(argv)}\n"
        "Restart=on-failure\n"
        "RestartSec=5\n"
    )


def start_server(
    ssh: SSHSession, *, directory: str, name: str, argv: Sequence[str], api_key: str
) -> Supervisor:
    """Make ``directory`` (0700), write the API key into it (0600, sent on stdin) and start ``argv``: as the
    systemd unit :data:`UNIT` where systemd runs, else detached with ``setsid nohup``.

    Returns:
        ``systemd`` or ``process``.

    Raises:
        RemoteCommandError: a step failed (``directory`` exists, ``sudo`` refused, the unit did not start).
        SSHError: the connection failed.
    """
    result = ssh.run(
        ["sh", "-c", _START_SCRIPT, "sh", directory, UNIT, unit_text(name, argv), *argv],
        stdin=api_key.encode("ascii"),
    )
    supervisor = result.stdout.strip().splitlines()[-1:] or [""]
    if supervisor[0] not in ("systemd", "process"):
        raise SSHError(f"{ssh.target}: starting the server said {result.stdout.strip()!r}")
    return "systemd" if supervisor[0] == "systemd" else "process"


def probe(ssh: SSHSession, *, python: str, port: int, supervisor: str, directory: str) -> Health:
    """Ask the server's ``/health`` on the instance, and whether its process is alive.

    Raises:
        RemoteCommandError: the probe could not run (no engine interpreter at ``python``).
        SSHError: the connection failed.
    """
    url = f"http://127.0.0.1:{port}/health"
    result = ssh.run([python, "-c", _PROBE, url, supervisor, directory, UNIT])
    try:
        data = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise SSHError(f"{ssh.target}: the health probe said {result.stdout.strip()!r}") from exc
    body = data.get("body")
    return Health(
        running=bool(data.get("running")),
        status=int(data.get("status") or 0),
        body=body if isinstance(body, dict) else None,
        error=str(data.get("error") or (body if isinstance(body, str) else "")),
        restarts=int(data.get("restarts") or 0),
    )


def server_log(ssh: SSHSession, *, lines: int, directory: str, supervisor: str) -> str:
    """The server's last ``lines`` log lines: the unit's journal, or the log file without systemd.

    Raises:
        RemoteCommandError: the log could not be read.
        SSHError: the connection failed.
    """
    result = ssh.run(["sh", "-c", _LOGS_SCRIPT, "sh", str(lines), directory, UNIT, supervisor])
    return result.stdout


def stop_server(ssh: SSHSession, *, directory: str, supervisor: str) -> None:
    """Stop the server (the unit, removed too; or the process group: SIGTERM, then SIGKILL after 10 s).

    Raises:
        SSHError: the connection failed.
    """
    ssh.run(["sh", "-c", _STOP_SCRIPT, "sh", directory, UNIT, supervisor], check=False)


def stop_deadman(ssh: SSHSession) -> bool:
    """Stop the dead-man switch (the heartbeat ends when the client leaves; the server's idle stop and
    lifetime, and the scheduled ``shutdown`` of the user data, take over). ``False`` where none runs.

    Raises:
        RemoteCommandError: stopping it failed.
        SSHError: the connection failed.
    """
    result = ssh.run(["sh", "-c", _DEADMAN_SCRIPT, "sh", DEADMAN_UNIT])
    return result.stdout.strip() == "stopped"


def read_manifest(ssh: SSHSession, prefix: str) -> dict[str, Any]:
    """The image's ``PREFIX/manifest.json`` (the cached model), or ``{}`` if it is missing or unreadable.

    Raises:
        SSHError: the connection failed.
    """
    result = ssh.run(["cat", posixpath.join(prefix, "manifest.json")], check=False)
    try:
        data = json.loads(result.stdout) if result.returncode == 0 else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
