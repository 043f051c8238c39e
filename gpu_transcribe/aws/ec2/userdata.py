"""cloud-init user data for our instances: the per-run SSH host key and the dead-man switch.

The document is ``#cloud-config`` followed by JSON, which is valid YAML (cloud-init parses it with PyYAML), so
no YAML writer is needed and every string is escaped correctly. It:

- deletes the image's host keys and installs the run's ed25519 host key (``ssh_keys``; cloud-init then
  generates no other), so the one key the client expects is the one sshd presents;
- writes the dead-man switch (``gpu_transcribe/data/deadman.sh``) and an empty heartbeat file under ``/run``
  (a tmpfs: nothing of it survives into an image made from a builder instance); the heartbeat file belongs
  to the login user, mode 0644, and is written in cloud-init's final stage (``defer``), after the login user
  exists on a first boot, and before ``runcmd`` starts the switch;
- starts the switch as a transient systemd unit, and schedules ``shutdown -P`` a little after the maximum
  lifetime as a second, independent timer.

This module does not import boto3: the SSH side imports :data:`HEARTBEAT_PATH` from here.
"""

from __future__ import annotations

import json
from importlib import resources

#: The file the client touches over SSH (``touch /run/gpu-transcribe/heartbeat``, every
#: :data:`HEARTBEAT_INTERVAL_S` seconds) to keep the instance alive. cloud-init creates it owned by the login
#: user (``ubuntu``, ``ec2-user``...) with mode 0644, so that user can update its time without sudo and no
#: other user or service on the instance can keep it alive or write into it.
HEARTBEAT_PATH = "/run/gpu-transcribe/heartbeat"
#: How often the client should touch :data:`HEARTBEAT_PATH`, in seconds (well inside the 2-minute minimum
#: timeout).
HEARTBEAT_INTERVAL_S = 30.0
#: Where cloud-init writes the dead-man switch on the instance.
DEADMAN_PATH = "/run/gpu-transcribe/deadman.sh"
#: The transient systemd unit that runs the switch (``systemctl status gpu-transcribe-deadman`` on the
#: instance).
DEADMAN_UNIT = "gpu-transcribe-deadman"
#: EC2's limit on user data, before base64 (docs.aws.amazon.com/AWSEC2/latest/UserGuide/user-data.html).
MAX_USER_DATA_BYTES = 16 * 1024
#: Seconds between the switch's checks on the instance.
DEADMAN_CHECK_INTERVAL_S = 10
#: Minutes after the maximum lifetime at which the scheduled ``shutdown`` fires if the switch did not.
HARD_STOP_MARGIN_MINUTES = 2


def deadman_script() -> str:
    """The dead-man switch shell script shipped in the package (``gpu_transcribe/data/deadman.sh``)."""
    return resources.files("gpu_transcribe").joinpath("data/deadman.sh").read_text(encoding="utf-8")


def render_user_data(
    *,
    host_private_key_openssh: str,
    host_public_key_openssh: str,
    max_lifetime_minutes: int,
    heartbeat_timeout_minutes: int,
    login_user: str,
) -> str:
    """Render the cloud-config document.

    Args:
        host_private_key_openssh: the run's ed25519 host private key (OpenSSH PEM).
        host_public_key_openssh: its public line ``ssh-ed25519 AAAA... comment``.
        max_lifetime_minutes: the switch powers off this many minutes after boot.
        heartbeat_timeout_minutes: the switch powers off when :data:`HEARTBEAT_PATH` is this many minutes old.
        login_user: the AMI's SSH user, the only user (besides root) who may write :data:`HEARTBEAT_PATH`.

    Returns:
        The user data text (EC2 base64-encodes it for us).

    Raises:
        ValueError: the document is larger than EC2's 16 KiB limit.
    """
    env = {
        "MAX_LIFETIME_S": str(max_lifetime_minutes * 60),
        "HEARTBEAT_FILE": HEARTBEAT_PATH,
        "HEARTBEAT_TIMEOUT_S": str(heartbeat_timeout_minutes * 60),
        "CHECK_INTERVAL_S": str(DEADMAN_CHECK_INTERVAL_S),
    }
    start_switch = [
        "systemd-run",
        f"--unit={DEADMAN_UNIT}",
        "--description=gpu-transcribe dead-man switch",
        *(f"--setenv={k}={v}" for k, v in env.items()),
        "/bin/sh",
        DEADMAN_PATH,
    ]
    config = {
        # Delete the image's host keys; with ``ssh_keys`` given cloud-init generates no others (cc_ssh), so
        # sshd presents exactly the one key the client expects.
        "ssh_deletekeys": True,
        "ssh_keys": {
            "ed25519_private": host_private_key_openssh,
            "ed25519_public": host_public_key_openssh,
        },
        "write_files": [
            {"path": DEADMAN_PATH, "owner": "root:root", "permissions": "0755", "content": deadman_script()},
            {
                "path": HEARTBEAT_PATH,
                "owner": f"{login_user}:root",
                "permissions": "0644",
                "content": "",
                "defer": True,
            },
        ],
        "runcmd": [
            start_switch,
            ["shutdown", "-P", f"+{max_lifetime_minutes + HARD_STOP_MARGIN_MINUTES}"],
        ],
    }
    text = "#cloud-config\n" + json.dumps(config, indent=1) + "\n"
    size = len(text.encode("utf-8"))
    if size > MAX_USER_DATA_BYTES:
        raise ValueError(f"user data is {size} bytes, more than EC2's limit of {MAX_USER_DATA_BYTES}")
    return text
