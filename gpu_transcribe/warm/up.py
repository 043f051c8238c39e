"""``gpu-transcribe server up``: one instance through
:class:`~gpu_transcribe.instance.session.InstanceSession`, ``serve`` started on it, kept running after the
command ends. Orchestration: no printing.

1. If a server of this name exists and its instance lives, refuse (``server down`` first); a state file whose
   instance is gone is replaced.
2. The image (as ``run`` picks it), the SSH source, and a launch spec with role ``server``, the server's name
   and lifetime as tags, and the dead-man switch's lifetime cap set to the server's lifetime plus
   :data:`LIFETIME_MARGIN_MINUTES` (a backstop: the server powers itself off first).
3. In the session (launch, SSH with the pinned host key, heartbeat): the image's manifest names the cached
   model; the API key (``secrets.token_urlsafe``) is written to the instance (0600), ``serve`` started
   (:mod:`gpu_transcribe.warm.on_instance`), and ``/health`` polled on the instance until 200.
4. The dead-man switch is stopped (the client is about to leave: the server's ``--idle-stop-min`` and
   ``--max-lifetime-h`` replace the heartbeat, the user data's scheduled ``shutdown`` stays), the state file
   written, and the session detached.

Any failure or signal before the end tears everything down as in ``run`` (the server process is stopped and
the state file removed first).
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpu_transcribe.common import ProgressCallback, ProgressEvent, no_progress
from gpu_transcribe.errors import GpuTranscribeError, SettingsError
from gpu_transcribe.instance.lifecycle import SignalCallback
from gpu_transcribe.instance.session import CleanupStep, InstanceSession
from gpu_transcribe.warm import on_instance as remote
from gpu_transcribe.warm.state import (
    DEFAULT_NAME,
    ServerState,
    ServerStateError,
    check_name,
    delete_state,
    load_state,
    save_state,
)

if TYPE_CHECKING:
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.ec2.instances import AddressResolver
    from gpu_transcribe.settings import Settings
    from gpu_transcribe.ssh import SSHSession

#: Minutes the instance's own lifetime cap (dead-man switch, scheduled shutdown) is set beyond the server's
#: ``--max-lifetime-h``: the server stops itself first; the cap is only a backstop.
LIFETIME_MARGIN_MINUTES = 15
#: The longest ``--max-lifetime-h``.
MAX_LIFETIME_H = 24.0
#: Seconds to wait for ``/health`` to answer 200 (the model loads from a freshly restored volume).
HEALTH_TIMEOUT_S = 900.0
#: Seconds between health probes while waiting.
HEALTH_POLL_S = 2.0


class ServerExistsError(GpuTranscribeError):
    """A server of this name is already up; ``server down`` (or another ``--name``) first. Exit status 2."""

    exit_code = 2


class ServerStartError(GpuTranscribeError):
    """``serve`` did not come up on the instance (it exited, or ``/health`` never answered 200).

    Attributes:
        log_tail: the server's last log lines.
    """

    def __init__(self, message: str, log_tail: str = "") -> None:
        self.log_tail = log_tail
        super().__init__(message + (f"; its log ends:\n{log_tail.rstrip()}" if log_tail.strip() else ""))


@dataclass(frozen=True)
class ServerUpRequest:
    """What ``server up`` starts.

    Attributes:
        name: the server's name (one server per name).
        port: the port ``serve`` listens on, on the instance's 127.0.0.1.
        idle_stop_min: the server powers the instance off after this many minutes without a request.
        max_lifetime_h: ... and this many hours after it started, whatever happens.
    """

    name: str = DEFAULT_NAME
    port: int = 8000
    idle_stop_min: int = 30
    max_lifetime_h: float = 12.0

    def validated(self) -> ServerUpRequest:
        """``self`` if every value is allowed.

        Raises:
            SettingsError: naming the option and the allowed values.
        """
        check_name(self.name)
        if not 1 <= self.port <= 65535:
            raise SettingsError("port", "--port", f"--port: {self.port} is not a TCP port (1-65535)")
        if self.idle_stop_min < 1:
            raise SettingsError(
                "idle_stop_min", "--idle-stop-min", "--idle-stop-min: at least 1 minute", ">= 1"
            )
        if not 0 < self.max_lifetime_h <= MAX_LIFETIME_H:
            raise SettingsError(
                "max_lifetime_h",
                "--max-lifetime-h",
                f"--max-lifetime-h: {self.max_lifetime_h:g} is not in (0, {MAX_LIFETIME_H:g}] hours",
                f"(0, {MAX_LIFETIME_H:g}]",
            )
        return self

    @property
    def lifetime_cap_minutes(self) -> int:
        """The instance's backstop lifetime in minutes: the server's lifetime plus the margin."""
        return math.ceil(self.max_lifetime_h * 60) + LIFETIME_MARGIN_MINUTES


def _refuse_existing(ctx: AwsContext, name: str, on_progress: ProgressCallback) -> None:
    from gpu_transcribe.aws.ec2.instances import describe_instance

    try:
        existing = load_state(name)
    except ServerStateError as exc:
        raise ServerExistsError(f"{exc}; remove it with `gpu-transcribe server down --name {name}`") from exc
    if existing is None:
        return
    info = describe_instance(ctx, existing.instance_id)
    if info is not None and not info.gone:
        raise ServerExistsError(
            f"server {name} is up ({existing.instance_id}, {info.state}); `gpu-transcribe server down"
            f"{'' if name == DEFAULT_NAME else ' --name ' + name}` first, or choose another --name"
        )
    on_progress(
        ProgressEvent("note", f"server {name}'s instance {existing.instance_id} is gone; replacing it")
    )
    delete_state(name)


def server_up(
    settings: Settings,
    request: ServerUpRequest,
    *,
    on_progress: ProgressCallback = no_progress,
    on_signal: SignalCallback | None = None,
    resolve: AddressResolver | None = None,
    ssh_deadline_s: float = 300.0,
    health_timeout_s: float = HEALTH_TIMEOUT_S,
    health_poll_s: float = HEALTH_POLL_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ServerState:
    """Launch a server and leave it running; see the module docstring for the steps.

    Args:
        settings: region, profile, instance types, market, image, model, tags, ``remote_prefix``.
        request: name, port, idle stop and lifetime.
        on_progress: one event per step (the launch's and teardown's stages, ``ssh``, ``server``,
            ``health``, ``note``).
        on_signal: ``(signal name, during teardown)`` for each SIGINT/SIGTERM/SIGHUP.
        resolve: maps the instance to the address to dial (default: ``GPU_TRANSCRIBE_DIAL_ADDRESS`` or its
            public IP).
        ssh_deadline_s: seconds to wait for SSH.
        health_timeout_s: seconds to wait for ``/health`` to answer 200.
        health_poll_s: seconds between health probes.
        clock / sleep: injectable time.

    Returns:
        The server's state (also written to its state file).

    Raises:
        SettingsError: a bad option.
        ServerExistsError: a server of this name is up.
        ServerStartError: ``serve`` exited or never became healthy (everything was removed).
        InterruptedRunError: a signal (everything was removed).
        CredentialsError, QuotaError, ImageNotFoundError, CapacityError, CloudError, HostKeyError,
            SSHTimeoutError, SSHError: launching or connecting failed (everything was removed).
        TeardownError: something could not be removed after a failure.
    """
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.ec2.checkip import resolve_ssh_cidr
    from gpu_transcribe.aws.models import TAG_MAX_LIFETIME, TAG_SERVER_NAME
    from gpu_transcribe.instance.spec import launch_spec
    from gpu_transcribe.run.cloud import choose_image

    request = request.validated()
    ctx = AwsContext.from_settings(settings)
    _refuse_existing(ctx, request.name, on_progress)
    image_id, _ = choose_image(ctx, settings, settings.model, None, update_engine=False)
    cidr = resolve_ssh_cidr(settings.ssh_cidr, settings.source("ssh_cidr"))
    cap = request.lifetime_cap_minutes
    spec = launch_spec(
        settings,
        image_id=image_id,
        ssh_cidr=cidr,
        role="server",
        max_lifetime_minutes=cap,
        extra_tags=(*settings.tags, (TAG_SERVER_NAME, request.name), (TAG_MAX_LIFETIME, str(cap))),
    )
    api_key = secrets.token_urlsafe(32)
    session = InstanceSession(
        ctx,
        spec,
        on_progress=on_progress,
        on_signal=on_signal,
        resolve=resolve,
        ssh_deadline_s=ssh_deadline_s,
        alive_check_s=None,
        clock=clock,
        sleep=sleep,
    )
    with session:
        ssh = session.ssh
        launched = session.launched
        directory = remote.remote_dir(session.run_id)
        python = remote.engine_python(settings.remote_prefix)
        model, offline = _model(ssh, settings)
        argv = remote.serve_argv(
            python=python,
            directory=directory,
            port=request.port,
            idle_stop_min=request.idle_stop_min,
            max_lifetime_h=request.max_lifetime_h,
            model=model,
            offline=offline,
        )
        supervisor: list[str] = ["process"]

        def stop_it(open_ssh: SSHSession | None) -> None:
            if open_ssh is None:
                return
            try:
                remote.stop_server(open_ssh, directory=directory, supervisor=supervisor[0])
            except GpuTranscribeError as exc:  # terminating the instance stops it anyway
                on_progress(ProgressEvent("note", f"could not stop the server before terminating: {exc}"))

        session.add_cleanup(CleanupStep("the server process", stop_it))
        on_progress(ProgressEvent("server", f"starting serve on port {request.port} (model {model})"))
        supervisor[0] = remote.start_server(
            ssh, directory=directory, name=request.name, argv=argv, api_key=api_key
        )
        on_progress(ProgressEvent("server", f"started ({supervisor[0]}); waiting for /health"))
        _wait_healthy(
            ssh,
            python=python,
            port=request.port,
            supervisor=supervisor[0],
            directory=directory,
            timeout_s=health_timeout_s,
            poll_s=health_poll_s,
            on_progress=on_progress,
            clock=clock,
            sleep=sleep,
        )
        if remote.stop_deadman(ssh):
            on_progress(
                ProgressEvent(
                    "server",
                    f"dead-man switch stopped: the server's idle stop ({request.idle_stop_min} min) and "
                    f"lifetime ({request.max_lifetime_h:g} h) take over; the instance's cap is {cap} min",
                )
            )
        state = ServerState(
            name=request.name,
            run_id=session.run_id,
            region=ctx.region,
            aws_profile=settings.aws_profile,
            instance_id=launched.instance_id,
            instance_type=launched.instance_type,
            zone=launched.zone,
            market=launched.market,
            price_usd_per_hour=launched.price_usd_per_hour,
            launched_at=launched.created_at,
            key_name=launched.key_name,
            security_group_id=launched.security_group_id,
            security_group_name=spec.name,
            login_user=launched.login_user,
            client_private_key=launched.client_key.private_key_openssh,
            host_public_key=launched.host_public_key,
            api_key=api_key,
            port=request.port,
            remote_dir=directory,
            supervisor="systemd" if supervisor[0] == "systemd" else "process",
            unit=remote.UNIT,
            remote_prefix=settings.remote_prefix,
            idle_stop_min=request.idle_stop_min,
            max_lifetime_h=request.max_lifetime_h,
            lifetime_cap_minutes=cap,
            ssh_cidr=cidr,
        )
        session.add_cleanup(CleanupStep("the server's state file", lambda _ssh: _forget(request.name)))
        path = save_state(state)
        on_progress(ProgressEvent("server", f"state kept in {path}"))
        session.detach()
    return state


def _forget(name: str) -> None:
    delete_state(name)


def _model(ssh: SSHSession, settings: Settings) -> tuple[str, bool]:
    """The model for ``serve``: the image's cached copy (offline) when it is the ``model`` setting's, else the
    setting's Hugging Face id (downloaded on the instance)."""
    manifest = remote.read_manifest(ssh, settings.remote_prefix)
    cached = manifest.get("model_path")
    if cached and manifest.get("model") == settings.model:
        return str(cached), True
    return settings.model, False


def _wait_healthy(
    ssh: SSHSession,
    *,
    python: str,
    port: int,
    supervisor: str,
    directory: str,
    timeout_s: float,
    poll_s: float,
    on_progress: ProgressCallback,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> None:
    """Probe until ``/health`` answers 200.

    Raises:
        ServerStartError: the process exited, or no 200 within ``timeout_s`` (the log's tail in it).
    """
    started = clock()
    last_note = started
    while True:
        health = remote.probe(ssh, python=python, port=port, supervisor=supervisor, directory=directory)
        if health.ready:
            on_progress(ProgressEvent("health", f"/health: 200 after {clock() - started:.0f} s"))
            return
        waited = clock() - started
        if health.restarts:
            tail = _log_tail(ssh, directory, supervisor)
            raise ServerStartError(
                f"the server failed on the instance after {waited:.0f} s (systemd restarted it)", tail
            )
        if not health.running:
            tail = _log_tail(ssh, directory, supervisor)
            raise ServerStartError(f"the server exited on the instance after {waited:.0f} s", tail)
        if waited >= timeout_s:
            tail = _log_tail(ssh, directory, supervisor)
            answer = f"HTTP {health.status}" if health.status else (health.error or "no answer")
            raise ServerStartError(f"/health did not answer 200 within {timeout_s:.0f} s ({answer})", tail)
        if clock() - last_note >= 15:
            last_note = clock()
            answer = f"HTTP {health.status}" if health.status else "not listening yet"
            on_progress(ProgressEvent("health", f"/health: {answer} after {waited:.0f} s"))
        sleep(poll_s)


def _log_tail(ssh: SSHSession, directory: str, supervisor: str, lines: int = 30) -> str:
    try:
        return remote.server_log(ssh, lines=lines, directory=directory, supervisor=supervisor)
    except GpuTranscribeError as exc:
        return f"(the log could not be read: {exc})"
