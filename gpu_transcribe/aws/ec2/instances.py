"""One instance after launch: describe it, wait for ``running`` and its SSH port, detect its loss, stop it.

The address seam: the SSH side dials whatever an :data:`AddressResolver` returns for an instance. The default
is the instance's public IPv4 (else its private one) on port 22. Tests, or a user going through a tunnel, set
``GPU_TRANSCRIBE_DIAL_ADDRESS=HOST:PORT`` (:func:`address_resolver_from_env`), or pass their own resolver, to
dial e.g. a loopback sshd instead of moto's unreachable fake address.

Spot interruption: EC2 moves a reclaimed spot instance to ``shutting-down``/``terminated`` with state reason
``Server.SpotInstanceTermination``; :func:`check_alive` turns any unexpected end into
:class:`~gpu_transcribe.errors.InstanceLostError` whose ``spot_interruption`` says which it was.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from datetime import UTC
from typing import Any

from gpu_transcribe.aws.clients import AwsContext, aws_errors, ec2_client, error_code
from gpu_transcribe.aws.ec2.models import InstanceInfo, LaunchResult
from gpu_transcribe.common import ProgressCallback, ProgressEvent, no_progress
from gpu_transcribe.errors import CloudError, InstanceLostError, SSHTimeoutError

SSH_PORT = 22
#: Seconds to wait for ``running``: pending -> running is most of the 25-30 s measured from RunInstances to an
#: open SSH port (docs/aws.md, "Figures the code relies on"); 5 minutes covers a slow GPU host without waiting
#: forever.
RUNNING_TIMEOUT_S = 300.0
#: Seconds to wait for sshd's banner once running: cloud-init installs the host key first (tens of seconds).
SSH_TIMEOUT_S = 300.0
POLL_S = 2.0
#: While waiting for SSH, how often to ask EC2 whether the instance is still there (spot interruption).
ALIVE_CHECK_EVERY_S = 10.0
DIAL_ADDRESS_ENV = "GPU_TRANSCRIBE_DIAL_ADDRESS"
#: Seconds to wait for an instance to stop: EC2 takes 30-90 s for a GPU instance (a clean OS shutdown).
STOP_TIMEOUT_S = 600.0

AddressResolver = Callable[[InstanceInfo], tuple[str, int]]


def instance_info(raw: Mapping[str, Any]) -> InstanceInfo:
    """Our :class:`InstanceInfo` from one ``DescribeInstances``/``RunInstances`` instance dict."""
    reason = raw.get("StateReason") or {}
    launch_time = raw.get("LaunchTime")
    if launch_time is not None and launch_time.tzinfo is not None:
        launch_time = launch_time.astimezone(UTC)
    elif launch_time is not None:
        launch_time = launch_time.replace(tzinfo=UTC)
    return InstanceInfo(
        instance_id=raw["InstanceId"],
        instance_type=raw.get("InstanceType", ""),
        zone=(raw.get("Placement") or {}).get("AvailabilityZone", ""),
        state=(raw.get("State") or {}).get("Name", ""),
        state_reason_code=reason.get("Code", "") or "",
        state_reason_message=reason.get("Message", "") or "",
        market="spot" if raw.get("InstanceLifecycle") == "spot" else "on-demand",
        public_ip=raw.get("PublicIpAddress") or None,
        private_ip=raw.get("PrivateIpAddress") or None,
        image_id=raw.get("ImageId", ""),
        launch_time=launch_time,
        tags=tuple(sorted((t["Key"], t["Value"]) for t in raw.get("Tags", []) or [])),
    )


def describe_instance(ctx: AwsContext, instance_id: str) -> InstanceInfo | None:
    """What EC2 says about ``instance_id`` now, or ``None`` if EC2 does not (yet, or any longer) know it.

    Raises:
        CredentialsError, CloudError: the call failed.
    """
    with aws_errors(ctx, f"describing instance {instance_id}"):
        try:
            reply = ec2_client(ctx).describe_instances(InstanceIds=[instance_id])
        except Exception as exc:
            if error_code(exc) == "InvalidInstanceID.NotFound":
                return None
            raise
    for reservation in reply.get("Reservations", []):
        for raw in reservation.get("Instances", []):
            if raw.get("InstanceId") == instance_id:
                return instance_info(raw)
    return None


def lost_error(info: InstanceInfo) -> InstanceLostError:
    """The :class:`InstanceLostError` for an instance that is no longer running."""
    if info.spot_interrupted:
        why = "EC2 reclaimed the spot instance (spot interruption)"
    else:
        why = f"reason {info.state_reason_code or 'not given'}"
        if info.state_reason_message:
            why += f": {info.state_reason_message}"
    return InstanceLostError(
        f"instance {info.instance_id} ({info.instance_type} in {info.zone}) is {info.state}: {why}",
        instance_id=info.instance_id,
        state=info.state,
        reason_code=info.state_reason_code,
    )


def check_alive(ctx: AwsContext, instance_id: str) -> InstanceInfo:
    """The instance's info if it is ``pending`` or ``running``; call it to detect a spot interruption.

    An instance EC2 does not know (yet) counts as alive-and-pending only through :func:`wait_until_running`;
    here it is lost.

    Raises:
        InstanceLostError: it is shutting down, terminated, stopping or stopped (``spot_interruption`` tells
            whether EC2 reclaimed it), or EC2 does not know it.
        CredentialsError, CloudError: the call failed.
    """
    info = describe_instance(ctx, instance_id)
    if info is None:
        raise InstanceLostError(
            f"instance {instance_id} is not known to EC2",
            instance_id=instance_id,
            state="unknown",
            reason_code="",
        )
    if not info.alive:
        raise lost_error(info)
    return info


def stop_instance(
    ctx: AwsContext,
    instance_id: str,
    *,
    timeout_s: float = STOP_TIMEOUT_S,
    poll_s: float = 5.0,
    on_progress: ProgressCallback = no_progress,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Stop an EBS-backed instance (a clean OS shutdown, so an image made from it has consistent file
    systems) and wait until EC2 reports it ``stopped``. ``build-ami`` uses it on its builder, hence the
    messages' wording.

    Args:
        timeout_s: seconds to wait for ``stopped``; poll_s: seconds between describe calls.
        on_progress: receives a ``stop`` event for each state seen.
        clock, sleep: monotonic seconds and how to wait (injectable).

    Raises:
        InstanceLostError: it terminated instead (a spot interruption, the dead-man switch).
        CredentialsError, CloudError: a call failed, or it is not stopped after ``timeout_s``.
    """
    with aws_errors(ctx, f"stopping builder {instance_id}"):
        ec2_client(ctx).stop_instances(InstanceIds=[instance_id])
    start = clock()
    last = ""
    while True:
        info = describe_instance(ctx, instance_id)
        state = info.state if info else "unknown"
        if state != last:
            on_progress(ProgressEvent("stop", f"{instance_id}: {state} after {clock() - start:.0f} s"))
            last = state
        if info is not None and state == "stopped":
            return
        if info is not None and info.gone:
            raise lost_error(info)
        if clock() - start >= timeout_s:
            raise CloudError(f"builder {instance_id} is still {state} after {timeout_s:.0f} s of stopping")
        sleep(poll_s)


def wait_until_running(
    ctx: AwsContext,
    instance_id: str,
    *,
    timeout_s: float = RUNNING_TIMEOUT_S,
    poll_s: float = POLL_S,
    require_address: bool = True,
    on_progress: ProgressCallback = no_progress,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> InstanceInfo:
    """Poll until the instance is ``running`` (and has an address, public or private, if ``require_address``).

    A new instance may be missing from describe calls for a moment; that counts as ``pending``.

    Returns:
        The instance's info once running.

    Raises:
        InstanceLostError: it ended instead (a spot interruption, capacity reclaimed at start, the dead-man
            switch, someone else).
        CloudError: still not running after ``timeout_s`` seconds.
    """
    start = clock()
    last_state = ""
    while True:
        info = describe_instance(ctx, instance_id)
        state = info.state if info else "pending"
        if state != last_state:
            on_progress(
                ProgressEvent("wait-running", f"{instance_id}: {state} after {clock() - start:.0f} s")
            )
            last_state = state
        if info is not None:
            if info.state == "running" and (info.public_ip or info.private_ip or not require_address):
                return info
            if info.state not in ("pending", "running"):
                raise lost_error(info)
        if clock() - start >= timeout_s:
            raise CloudError(
                f"instance {instance_id} is still {state} after {timeout_s:.0f} s; it will be terminated"
            )
        sleep(poll_s)


def default_address(info: InstanceInfo) -> tuple[str, int]:
    """The address to dial for ``info``: its public IPv4, else its private IPv4, on port 22.

    Raises:
        CloudError: the instance has no address yet.
    """
    host = info.public_ip or info.private_ip
    if not host:
        raise CloudError(f"instance {info.instance_id} has no IP address yet")
    return host, SSH_PORT


def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[v6]:PORT``, or ``HOST`` for port 22) as ``(host, port)``.

    Raises:
        ValueError: not of that form.
    """
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    port = int(port_text) if port_text else SSH_PORT
    if not host or not 0 < port < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host, port


def address_resolver_from_env(env: Mapping[str, str] | None = None) -> AddressResolver:
    """The resolver to use: every instance maps to ``$GPU_TRANSCRIBE_DIAL_ADDRESS`` (``HOST:PORT``) when set,
    else :func:`default_address`.

    Raises:
        SettingsError: the variable is set but not ``HOST:PORT``.
    """
    value = (os.environ if env is None else env).get(DIAL_ADDRESS_ENV, "").strip()
    if not value:
        return default_address
    try:
        fixed = parse_host_port(value)
    except ValueError as exc:
        from gpu_transcribe.errors import SettingsError

        raise SettingsError(
            DIAL_ADDRESS_ENV, DIAL_ADDRESS_ENV, f"{DIAL_ADDRESS_ENV}: {exc}", "HOST:PORT"
        ) from None

    def fixed_address(info: InstanceInfo) -> tuple[str, int]:
        return fixed

    return fixed_address


def _ssh_banner(address: tuple[str, int], timeout_s: float) -> bytes:
    """Connect and read the server's first line (``SSH-2.0-OpenSSH_...``); ``b""`` if none came."""
    with socket.create_connection(address, timeout=timeout_s) as sock:
        sock.settimeout(timeout_s)
        data = b""
        while b"\n" not in data and len(data) < 256:
            chunk = sock.recv(256)
            if not chunk:
                break
            data += chunk
        return data


def wait_for_ssh_port(
    address: tuple[str, int],
    *,
    timeout_s: float = SSH_TIMEOUT_S,
    poll_s: float = POLL_S,
    connect_timeout_s: float = 5.0,
    alive_check: Callable[[], object] | None = None,
    alive_check_every_s: float = ALIVE_CHECK_EVERY_S,
    on_progress: ProgressCallback = no_progress,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Poll until something at ``address`` answers with an SSH banner (``SSH-``).

    The banner, not only an open port, is required: a port can accept connections before sshd is ready.

    Args:
        address: ``(host, port)`` from an :data:`AddressResolver`.
        alive_check: called every ``alive_check_every_s`` seconds (e.g. ``lambda: check_alive(ctx, id)``); its
            exception (``InstanceLostError``) ends the wait.

    Returns:
        Seconds waited.

    Raises:
        SSHTimeoutError: no banner within ``timeout_s`` seconds.
        InstanceLostError: from ``alive_check``.
    """
    start = clock()
    last_alive_check = start
    last_error = "no answer"
    tries = 0
    while True:
        tries += 1
        try:
            banner = _ssh_banner(address, connect_timeout_s)
            if banner.startswith(b"SSH-"):
                waited = clock() - start
                on_progress(
                    ProgressEvent(
                        "wait-ssh",
                        f"{address[0]}:{address[1]} answers ({banner.strip().decode('ascii', 'replace')}) "
                        f"after {waited:.0f} s",
                    )
                )
                return waited
            last_error = f"unexpected banner {banner[:40]!r}"
        except OSError as exc:
            last_error = exc.strerror or type(exc).__name__
        if tries == 1:
            on_progress(
                ProgressEvent("wait-ssh", f"waiting for SSH on {address[0]}:{address[1]} ({last_error})")
            )
        now = clock()
        if now - start >= timeout_s:
            raise SSHTimeoutError(
                f"no SSH server answered at {address[0]}:{address[1]} within {timeout_s:.0f} s "
                f"({tries} tries, last: {last_error})"
            )
        if alive_check is not None and now - last_alive_check >= alive_check_every_s:
            alive_check()
            last_alive_check = now
        sleep(poll_s)


def wait_until_ready(
    ctx: AwsContext,
    launched: LaunchResult,
    *,
    resolve: AddressResolver = default_address,
    running_timeout_s: float = RUNNING_TIMEOUT_S,
    ssh_timeout_s: float = SSH_TIMEOUT_S,
    poll_s: float = POLL_S,
    on_progress: ProgressCallback = no_progress,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[LaunchResult, tuple[str, int]]:
    """:func:`wait_until_running`, then :func:`wait_for_ssh_port` on ``resolve``'s address, checking meanwhile
    that the instance is still alive.

    Returns:
        The launch result with fresh addresses, and the ``(host, port)`` to dial.

    Raises:
        InstanceLostError, CloudError, SSHTimeoutError: as the two waits.
    """
    info = wait_until_running(
        ctx,
        launched.instance_id,
        timeout_s=running_timeout_s,
        poll_s=poll_s,
        on_progress=on_progress,
        clock=clock,
        sleep=sleep,
    )
    address = resolve(info)
    wait_for_ssh_port(
        address,
        timeout_s=ssh_timeout_s,
        poll_s=poll_s,
        alive_check=lambda: check_alive(ctx, launched.instance_id),
        on_progress=on_progress,
        clock=clock,
        sleep=sleep,
    )
    return launched.with_instance(info), address
