"""``gpu-transcribe server status|tunnel|logs|down``: a server that ``server up`` left, found through its
state file (:mod:`gpu_transcribe.warm.state`). Orchestration: no printing.

Every SSH connection uses the server's own client key and checks the pinned host key from the state file;
the address is the instance's public IP as EC2 gives it now (or ``GPU_TRANSCRIBE_DIAL_ADDRESS``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from gpu_transcribe.common import (
    ProgressCallback,
    ProgressEvent,
    billed_seconds,
    cost_usd,
    no_progress,
    utc_now,
)
from gpu_transcribe.errors import GpuTranscribeError, InstanceLostError, TeardownError
from gpu_transcribe.warm import on_instance as remote
from gpu_transcribe.warm.state import DEFAULT_NAME, ServerState, delete_state, load_state

if TYPE_CHECKING:
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.ec2.models import InstanceInfo, RemovalOutcome
    from gpu_transcribe.settings import Settings
    from gpu_transcribe.ssh import SSHSession

#: Seconds to wait for an SSH session to a running server (it is up: no boot to wait for).
CONNECT_DEADLINE_S = 30.0


class ServerNotFoundError(GpuTranscribeError):
    """No state file for this server name here (``server up`` makes one). Exit status 2 for a name that is
    not known; ``server down`` treats it as done."""

    exit_code = 2


def require_state(name: str) -> ServerState:
    state = load_state(name)
    if state is None:
        flag = "" if name == DEFAULT_NAME else f" --name {name}"
        raise ServerNotFoundError(
            f"no server named {name} here; start one with `gpu-transcribe server up{flag}` "
            "(`gpu-transcribe cleanup` finds servers whose state is gone)"
        )
    return state


def _ctx(state: ServerState, settings: Settings) -> AwsContext:
    """The server's region (from its state), with the ``aws_profile`` setting if one is set, else the profile
    it was launched with."""
    from gpu_transcribe.aws.clients import AwsContext

    if settings.aws_profile:
        return AwsContext(
            region=state.region, profile=settings.aws_profile, profile_source=settings.source("aws_profile")
        )
    return AwsContext(region=state.region, profile=state.aws_profile, profile_source=f"server {state.name}")


def connect_server(
    state: ServerState, info: InstanceInfo, *, deadline_s: float = CONNECT_DEADLINE_S
) -> SSHSession:
    """An SSH session to the server's instance: its client key, its pinned host key.

    Raises:
        HostKeyError: the host showed another key.
        SSHTimeoutError: no session (the message names the one address port 22 is open to).
        SSHError: no session.
    """
    from gpu_transcribe.aws.ec2.instances import address_resolver_from_env
    from gpu_transcribe.errors import SSHTimeoutError
    from gpu_transcribe.ssh import SSHTarget, connect

    host, port = address_resolver_from_env()(info)
    target = SSHTarget(
        host=host,
        port=port,
        username=state.login_user,
        private_key=state.client_private_key,
        host_public_key=state.host_public_key,
    )
    try:
        return connect(target, deadline_s=deadline_s)
    except SSHTimeoutError as exc:
        if not state.ssh_cidr:
            raise
        raise SSHTimeoutError(
            f"{exc}; its security group lets only {state.ssh_cidr} (your address at `server up`) reach port "
            f"22: if your address has changed, add it to {state.security_group_id} or run `server down`"
        ) from exc


def follow_caller(
    state: ServerState, settings: Settings, on_progress: ProgressCallback = no_progress
) -> ServerState:
    """Keep port 22 open to the caller only when the caller's address changed since ``server up`` (a laptop
    on another network): the security group's rule moves to the address the ``ssh_cidr`` setting gives now
    (``auto``: detected), and the state file is updated.

    Returns:
        The state (updated, or as it was).

    Raises:
        SettingsError: ``ssh_cidr`` is ``auto`` and the address could not be detected.
        CredentialsError, CloudError: EC2 refused.
    """
    from dataclasses import replace

    from gpu_transcribe.aws.ec2.checkip import resolve_ssh_cidr
    from gpu_transcribe.aws.ec2.launch import move_ssh_rule
    from gpu_transcribe.warm.state import save_state

    cidr = resolve_ssh_cidr(settings.ssh_cidr, settings.source("ssh_cidr"))
    if cidr == state.ssh_cidr or not state.ssh_cidr:
        return state
    on_progress(
        ProgressEvent(
            "security-group",
            f"your address changed: port 22 of server {state.name} is opened to {cidr} and closed to "
            f"{state.ssh_cidr}",
        )
    )
    move_ssh_rule(_ctx(state, settings), state.security_group_id, state.ssh_cidr, cidr)
    moved = replace(state, ssh_cidr=cidr)
    save_state(moved)
    return moved


def running_info(state: ServerState, settings: Settings) -> InstanceInfo:
    """EC2's view of the server's instance, which must be running.

    Raises:
        InstanceLostError: it is gone (a spot interruption, its idle stop or lifetime, or terminated).
        CloudError: EC2 could not be asked.
    """
    from gpu_transcribe.aws.ec2.instances import check_alive

    try:
        return check_alive(_ctx(state, settings), state.instance_id)
    except InstanceLostError as exc:
        flag = "" if state.name == DEFAULT_NAME else f" --name {state.name}"
        raise InstanceLostError(
            f"server {state.name}: {exc}; `gpu-transcribe server down{flag}` removes what is left of it",
            instance_id=exc.instance_id,
            state=exc.state,
            reason_code=exc.reason_code,
        ) from exc


# --- status ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerStatus:
    """``server status``: EC2's view, the money, and the server's own ``/health``.

    Attributes:
        name: the server's name.
        instance_id / instance_type / zone / market / region: where it runs.
        state: EC2's instance state (``running``, ``terminated``...), or ``unknown`` if EC2 no longer lists
            it.
        state_reason: EC2's state reason code, or ``""``.
        interrupted: EC2 reclaimed the spot instance.
        launched_at: when it was launched (UTC).
        age_s: seconds since then.
        price_usd_per_hour: the price when launched, or ``None``.
        cost_usd: price times the billed seconds so far (or until now, if it is gone: an upper bound), or
            ``None``.
        health_status: HTTP status of ``/health`` on the instance (0: no answer; ``None``: not asked).
        health: ``/health``'s JSON, or ``None``.
        health_error: why ``/health`` was not read, else ``""``.
        requests_served: from ``/health``, or ``None``.
        idle_s: seconds since the last request (``/health``), or ``None``.
        idle_stop_min / max_lifetime_h: the server's limits.
        port: the server's port on the instance.
        state_file: where the state is kept.
    """

    name: str
    instance_id: str
    instance_type: str
    zone: str
    market: str
    region: str
    state: str
    state_reason: str
    interrupted: bool
    launched_at: datetime
    age_s: float
    price_usd_per_hour: float | None
    cost_usd: float | None
    health_status: int | None
    health: dict[str, Any] | None
    health_error: str
    requests_served: int | None
    idle_s: float | None
    idle_stop_min: int
    max_lifetime_h: float
    port: int
    state_file: str

    @property
    def idle_left_s(self) -> float | None:
        """Seconds until the idle stop, if ``idle_s`` is known."""
        return None if self.idle_s is None else max(0.0, self.idle_stop_min * 60 - self.idle_s)

    @property
    def lifetime_left_s(self) -> float:
        """Seconds until the lifetime stop (counted from launch; the server counts from its own start)."""
        return max(0.0, self.max_lifetime_h * 3600 - self.age_s)


def server_status(
    settings: Settings,
    name: str = DEFAULT_NAME,
    *,
    now: datetime | None = None,
    on_progress: ProgressCallback = no_progress,
) -> ServerStatus:
    """The server's status: EC2's state, its age and cost so far, and ``/health`` read on the instance.

    Args:
        settings: the ``aws_profile`` setting, if set, replaces the one the server was launched with (the
            state file names the region).
        name: the server.
        now: the time to measure the age at (default: now).
        on_progress: a ``security-group`` event when the SSH rule follows a changed address
            (:func:`follow_caller`).

    Raises:
        ServerNotFoundError: no such server here.
        ServerStateError: its state file is damaged.
        CredentialsError, CloudError: EC2 could not be asked.
    """
    from gpu_transcribe.aws.ec2.instances import describe_instance

    state = require_state(name)
    moment = now or utc_now()
    info = describe_instance(_ctx(state, settings), state.instance_id)
    age_s = max(0.0, (moment - state.launched_at).total_seconds())
    health: remote.Health | None = None
    health_error = ""
    if info is not None and info.state == "running":
        try:
            state = follow_caller(state, settings, on_progress)
            with connect_server(state, info) as ssh:
                health = remote.probe(
                    ssh,
                    python=remote.engine_python(state.remote_prefix),
                    port=state.port,
                    supervisor=state.supervisor,
                    directory=state.remote_dir,
                )
        except GpuTranscribeError as exc:
            health_error = str(exc)
        if health is not None and not health.ready:
            health_error = health.error or ("the server process is not running" if not health.running else "")
    elif info is not None:
        health_error = f"the instance is {info.state}"
    else:
        health_error = "EC2 no longer lists the instance"
    served = health.number("requests_served") if health is not None else None
    return ServerStatus(
        name=state.name,
        instance_id=state.instance_id,
        instance_type=state.instance_type,
        zone=state.zone,
        market=state.market,
        region=state.region,
        state=info.state if info is not None else "unknown",
        state_reason=info.state_reason_code if info is not None else "",
        interrupted=bool(info is not None and info.spot_interrupted),
        launched_at=state.launched_at,
        age_s=age_s,
        price_usd_per_hour=state.price_usd_per_hour,
        cost_usd=cost_usd(state.price_usd_per_hour, billed_seconds(age_s)),
        health_status=health.status if health is not None else None,
        health=health.body if health is not None else None,
        health_error=health_error,
        requests_served=int(served) if served is not None else None,
        idle_s=health.number("idle_s") if health is not None else None,
        idle_stop_min=state.idle_stop_min,
        max_lifetime_h=state.max_lifetime_h,
        port=state.port,
        state_file=str(state.path),
    )


# --- logs ------------------------------------------------------------------------------------------------


def server_logs(
    settings: Settings,
    name: str = DEFAULT_NAME,
    *,
    lines: int = 100,
    on_progress: ProgressCallback = no_progress,
) -> str:
    """The server's last ``lines`` log lines (``journalctl -u gpu-transcribe-server``, or its log file).
    The SSH rule follows a changed address first (:func:`follow_caller`).

    Raises:
        ServerNotFoundError: no such server here.
        InstanceLostError: its instance is gone.
        HostKeyError, SSHError, RemoteCommandError: the log could not be read.
    """
    state = require_state(name)
    info = running_info(state, settings)
    state = follow_caller(state, settings, on_progress)
    with connect_server(state, info) as ssh:
        return remote.server_log(ssh, lines=lines, directory=state.remote_dir, supervisor=state.supervisor)


# --- down ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DownReport:
    """What ``server down`` did.

    Attributes:
        name: the server.
        found: a state file existed.
        instance_id: its instance, or ``""``.
        outcomes: one per resource removed or found gone.
        stopped_server: the server process was stopped over SSH before the termination.
    """

    name: str
    found: bool
    instance_id: str
    outcomes: tuple[RemovalOutcome, ...]
    stopped_server: bool


def server_down(
    settings: Settings,
    name: str = DEFAULT_NAME,
    *,
    on_progress: ProgressCallback = no_progress,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> DownReport:
    """Stop the server, terminate its instance, delete its key pair and security group, then its state file.
    Idempotent: a server already gone (or no state file at all) is fine.

    Raises:
        TeardownError: something could not be removed; the state file is kept so that ``down`` can retry.
        CredentialsError: the credentials were rejected.
        ServerStateError: the state file is damaged (``gpu-transcribe cleanup`` removes the resources).
    """
    from gpu_transcribe.aws.ec2.instances import describe_instance
    from gpu_transcribe.aws.ec2.models import RunResources
    from gpu_transcribe.aws.ec2.resources import teardown

    state = load_state(name)
    if state is None:  # the caller says so (DownReport.found); no progress line to repeat it
        return DownReport(name=name, found=False, instance_id="", outcomes=(), stopped_server=False)
    ctx = _ctx(state, settings)
    stopped = False
    info = describe_instance(ctx, state.instance_id)
    if info is not None and info.state == "running":
        try:
            with connect_server(state, info, deadline_s=15.0) as ssh:
                on_progress(ProgressEvent("server", f"stopping the server on {state.instance_id}"))
                remote.stop_server(ssh, directory=state.remote_dir, supervisor=state.supervisor)
                stopped = True
        except GpuTranscribeError as exc:  # terminating stops it anyway
            on_progress(ProgressEvent("note", f"could not stop the server over SSH ({exc}); terminating"))
    on_progress(ProgressEvent("teardown", f"terminating server {name} ({state.instance_id})"))
    resources = RunResources(
        run_id=state.run_id,
        instance_ids=(state.instance_id,),
        key_name=state.key_name,
        security_group_id=state.security_group_id,
    )
    try:
        outcomes = teardown(ctx, resources, on_progress=on_progress, clock=clock, sleep=sleep)
    except TeardownError as exc:
        raise TeardownError(
            f"server {name}: {exc}; its state file {state.path} is kept: run `gpu-transcribe server down` "
            "again",
            exc.leftovers,
        ) from exc
    delete_state(name)
    return DownReport(
        name=name, found=True, instance_id=state.instance_id, outcomes=outcomes, stopped_server=stopped
    )


__all__ = [
    "DownReport",
    "InstanceLostError",
    "ServerNotFoundError",
    "ServerStatus",
    "connect_server",
    "server_down",
    "server_logs",
    "server_status",
]
