"""One instance session: launch, wait for SSH, connect, keep it alive and watched, tear down exactly once.

Every command that launches an instance (``run``, ``build-ami``, ``server up``) does it through
:class:`InstanceSession`, so there is one sequence over the cloud layer (:mod:`gpu_transcribe.aws`) and the
SSH layer (:mod:`gpu_transcribe.ssh`):

1. launch with the plan's fallback (spot in the cheapest zone, other zones, then on-demand);
2. wait until the instance runs and its SSH port answers;
3. connect with the run's client key, checking the host key injected at launch (never trusted on first use);
4. touch the dead-man switch's heartbeat file every 30 s, and (optionally) watch for a spot interruption:
   EC2's instance state every ``alive_check_s``, and on spot instances the two-minute interruption notice
   that IMDSv2 serves at ``spot/instance-action``, read on the instance over the open connection;
5. on leaving, whatever the reason (normal end, an error, SIGINT/SIGTERM/SIGHUP), run the caller's clean-up
   steps, close SSH and remove every resource of the run, once; unless the caller :meth:`detached
   <InstanceSession.detach>` the instance at the end of successful work (``server up``: the instance outlives
   the command, and ``server down`` or ``cleanup`` removes it).

Nothing here prints: progress goes to a callback.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from gpu_transcribe.common import ProgressCallback, ProgressEvent, billed_seconds, cost_usd, no_progress
from gpu_transcribe.errors import (
    EngineError,
    GpuTranscribeError,
    InstanceLostError,
    InterruptedRunError,
    SSHError,
    TeardownError,
)
from gpu_transcribe.instance.lifecycle import SignalCallback, TeardownGuard
from gpu_transcribe.instance.spot_watch import NOTICE_CHECK_S, SpotNotice, SpotWatcher

if TYPE_CHECKING:
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.ec2.instances import AddressResolver
    from gpu_transcribe.aws.ec2.launch_plan import LaunchPlan
    from gpu_transcribe.aws.ec2.models import LaunchResult, LaunchSpec
    from gpu_transcribe.ssh import SSHSession

#: Seconds between EC2 ``DescribeInstances`` checks that the instance still runs.
ALIVE_CHECK_S = 10.0

#: Test seam: where the heartbeat file is on the host (default: the path the dead-man switch watches).
HEARTBEAT_PATH_ENV = "GPU_TRANSCRIBE_HEARTBEAT_PATH"


def heartbeat_path() -> str:
    """The heartbeat file on the instance: :data:`HEARTBEAT_PATH_ENV` if set, else the dead-man switch's."""
    from gpu_transcribe.aws.ec2.userdata import HEARTBEAT_PATH

    return os.environ.get(HEARTBEAT_PATH_ENV, "").strip() or HEARTBEAT_PATH


@dataclass(frozen=True)
class InstanceUsage:
    """One instance a command used, and what it cost.

    Attributes:
        instance_id: e.g. ``i-0123456789abcdef0``.
        instance_type: e.g. ``g4dn.xlarge``.
        zone: its availability zone.
        market: ``spot`` or ``on-demand``.
        price_usd_per_hour: the spot price when ranked, or the on-demand price; ``None`` if unknown.
        billed_s: seconds from launch to stop or confirmed termination, at least 60 (EC2 per-second billing,
            :func:`gpu_transcribe.common.billed_seconds`).
        interrupted: EC2 reclaimed it (spot interruption) or it was otherwise lost.
    """

    instance_id: str
    instance_type: str
    zone: str
    market: str
    price_usd_per_hour: float | None
    billed_s: float
    interrupted: bool = False

    @property
    def cost_usd(self) -> float | None:
        """``price_usd_per_hour * billed_s / 3600``, or ``None`` if the price is unknown."""
        return cost_usd(self.price_usd_per_hour, self.billed_s)


@dataclass
class SessionTimes:
    """Wall seconds of the session's own steps (the caller times its work).

    Attributes:
        launch_s: ``RunInstances`` with the fallback, until an instance exists.
        ready_s: until it runs and its SSH port answers.
        connect_s: logging in (host key checked).
        teardown_s: the clean-up steps, closing SSH and removing the resources.
    """

    launch_s: float = 0.0
    ready_s: float = 0.0
    connect_s: float = 0.0
    teardown_s: float = 0.0


@dataclass(frozen=True)
class CleanupStep:
    """A step of the caller's that the teardown runs before SSH is closed and the instance terminated.

    Attributes:
        what: names it in a leftover report, e.g. ``image ami-0123``.
        run: does it; gets the SSH session while it is open, else ``None``. Raising
            :class:`GpuTranscribeError` records a leftover; other steps and the termination still run.
    """

    what: str
    run: Callable[[SSHSession | None], None]


class InstanceSession:
    """A launched instance with an open SSH session, as a context manager; see the module docstring.

    ``with InstanceSession(ctx, spec, ...) as session:`` returns once the caller can work over
    ``session.ssh``. Leaving the block tears everything down once (also on SIGINT/SIGTERM/SIGHUP, which raise
    :class:`InterruptedRunError` in the main thread), then fills in :attr:`usage`.

    Args:
        ctx: region, profile, endpoint.
        spec: what to launch; ``spec.run_id`` names and tags every resource.
        plan: a plan from :func:`gpu_transcribe.aws.ec2.launch_plan.plan_launch` for ``spec`` (else made when
            launching).
        on_progress: one :class:`ProgressEvent` per step (the launch's and the teardown's own, ``ssh``,
            ``lost``, ``spot-notice``, ``note``).
        on_signal: ``(signal name, during teardown)`` for every SIGINT/SIGTERM/SIGHUP.
        resolve: maps the instance to the address to dial (default: ``GPU_TRANSCRIBE_DIAL_ADDRESS`` if
            set, else its public IP on port 22).
        ssh_deadline_s: seconds to wait for the SSH port to answer, then again for a session (default
            :data:`gpu_transcribe.aws.ec2.instances.SSH_TIMEOUT_S`).
        alive_check_s: seconds between EC2 checks while the caller works; ``None`` watches nothing.
        notice_check_s: seconds between reads of the spot interruption notice (spot instances only, and only
            when ``alive_check_s`` is set); ``None`` reads none.
        on_notice: called with the notice and the instance, from the watcher thread, when the notice
            appears (e.g. to plan a relaunch).
        clock / sleep: injectable time for the cloud layer's waits.

    Attributes:
        launched: the instance (after entering).
        ssh: the open session (after entering; closed on leaving or by :meth:`close_ssh`).
        times: the session's step durations.
        usage: the instance and its billed time (after leaving; ``None`` if nothing was launched).
        lost: the loss that ended the work (a spot interruption), else ``None``.
        connected: the SSH session was opened.

    Raises (from ``with``):
        InstanceLostError: the instance was lost while booting, or an SSH or engine failure turned out to be
            its loss (``lost`` is set; the failure is the ``__cause__``).
        TeardownError: something could not be removed (it replaces an error already raised, which the
            ``note`` progress line names); ``gpu-transcribe cleanup --run-id`` can retry.
        InterruptedRunError: a signal (exit status 128 + signal).
        CredentialsError, QuotaError, ImageNotFoundError, CapacityError, CloudError, HostKeyError,
            SSHTimeoutError, SSHError: launching or connecting failed (everything was removed).
    """

    def __init__(
        self,
        ctx: AwsContext,
        spec: LaunchSpec,
        *,
        plan: LaunchPlan | None = None,
        on_progress: ProgressCallback = no_progress,
        on_signal: SignalCallback | None = None,
        resolve: AddressResolver | None = None,
        ssh_deadline_s: float = 300.0,
        alive_check_s: float | None = ALIVE_CHECK_S,
        notice_check_s: float | None = NOTICE_CHECK_S,
        on_notice: Callable[[SpotNotice, LaunchResult], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._ctx, self._spec, self._plan = ctx, spec, plan
        self._on_progress, self._resolve = on_progress, resolve
        self._ssh_deadline_s = ssh_deadline_s
        self._alive_check_s, self._notice_check_s, self._on_notice = alive_check_s, notice_check_s, on_notice
        self._clock, self._sleep = clock, sleep
        self._guard = TeardownGuard(self._teardown, on_signal=on_signal)
        self._cleanups: list[CleanupStep] = []
        self._watcher: SpotWatcher | None = None
        self._ssh: SSHSession | None = None
        self._launch_started = False
        self._launched_at: float | None = None
        self._billing_ended_at: float | None = None
        self._launched: LaunchResult | None = None
        self._detached = False
        self.times = SessionTimes()
        self.usage: InstanceUsage | None = None
        self.lost: InstanceLostError | None = None
        self.connected = False

    @property
    def ctx(self) -> AwsContext:
        """The region, profile and endpoint the instance lives in."""
        return self._ctx

    @property
    def run_id(self) -> str:
        """The run id that names and tags every resource of this session."""
        return self._spec.run_id

    @property
    def launched(self) -> LaunchResult:
        """The instance. Raises ``RuntimeError`` before the launch."""
        if self._launched is None:
            raise RuntimeError("no instance launched yet")
        return self._launched

    @property
    def ssh(self) -> SSHSession:
        """The open SSH session. Raises ``RuntimeError`` before connecting or after :meth:`close_ssh`."""
        if self._ssh is None:
            raise RuntimeError("no SSH session")
        return self._ssh

    def add_cleanup(self, step: CleanupStep) -> None:
        """Run ``step`` in the teardown, before SSH is closed; steps run last added first."""
        self._cleanups.append(step)

    def remove_cleanup(self, step: CleanupStep) -> None:
        """Forget ``step`` (what it cleans up is gone)."""
        with contextlib.suppress(ValueError):
            self._cleanups.remove(step)

    def close_ssh(self) -> None:
        """Stop watching, stop the heartbeat and close SSH (e.g. before the instance is stopped)."""
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        ssh, self._ssh = self._ssh, None
        if ssh is not None:
            ssh.close()

    @property
    def detached(self) -> bool:
        """True once :meth:`detach` was called: leaving keeps the instance and its resources."""
        return self._detached

    def detach(self) -> LaunchResult:
        """Keep the instance: stop watching and the heartbeat, close SSH, and let leaving the ``with`` block
        remove nothing (no clean-up step runs either). Call it as the last step of successful work; until
        then every failure or signal tears everything down as usual.

        The heartbeat stops, so the caller must first have made the instance independent of it (``server
        up`` stops the dead-man switch; the server's own idle stop and lifetime replace it).

        Returns:
            The instance kept (:attr:`usage` stays ``None``: its billing goes on).

        Raises:
            RuntimeError: nothing was launched yet.
        """
        launched = self.launched
        self.close_ssh()
        self._detached = True
        return launched

    def billing_ended(self) -> None:
        """The instance was stopped: its billed time ends now, not at termination."""
        self._billing_ended_at = self._clock()

    # --- entering ------------------------------------------------------------------------------------------

    def __enter__(self) -> InstanceSession:
        self._guard.__enter__()
        try:
            self._start()
        except BaseException as exc:
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def _start(self) -> None:
        from gpu_transcribe.aws.ec2.instances import address_resolver_from_env, wait_until_ready
        from gpu_transcribe.aws.ec2.launch import launch
        from gpu_transcribe.aws.ec2.userdata import HEARTBEAT_INTERVAL_S
        from gpu_transcribe.ssh import SSHTarget, connect

        spec, progress = self._spec, self._on_progress
        progress(ProgressEvent("launch", f"launching {', '.join(spec.instance_types)} ({spec.market})"))
        started = self._clock()
        self._launch_started = True
        launched = launch(
            self._ctx, spec, plan=self._plan, on_progress=progress, clock=self._clock, sleep=self._sleep
        )
        self._launched, self._launched_at = launched, self._clock()
        self.times.launch_s = self._launched_at - started
        launched, address = wait_until_ready(
            self._ctx,
            launched,
            resolve=self._resolve or address_resolver_from_env(),
            on_progress=progress,
            clock=self._clock,
            sleep=self._sleep,
            ssh_timeout_s=self._ssh_deadline_s,
        )
        self._launched = launched
        ready_at = self._clock()
        self.times.ready_s = ready_at - self._launched_at
        target = SSHTarget(
            host=address[0],
            port=address[1],
            username=launched.login_user,
            private_key=launched.client_key.private_key_openssh,
            host_public_key=launched.host_public_key,
        )
        progress(ProgressEvent("ssh", f"connecting to {target}"))
        self._ssh = connect(target, deadline_s=self._ssh_deadline_s, clock=self._clock, sleep=self._sleep)
        self.connected = True
        self.times.connect_s = self._clock() - ready_at
        progress(ProgressEvent("ssh", f"connected to {launched.instance_id} ({self._ssh.server_version})"))
        self._start_heartbeat(HEARTBEAT_INTERVAL_S)
        if self._alive_check_s is not None:
            self._watcher = SpotWatcher(
                self._ctx,
                launched.instance_id,
                self._ssh,
                alive_check_s=self._alive_check_s,
                notice_check_s=self._notice_check_s if launched.market == "spot" else None,
                on_progress=progress,
                on_notice=None if self._on_notice is None else self._notice,
            )
            self._watcher.start()

    def _notice(self, notice: SpotNotice) -> None:
        if self._on_notice is not None and self._launched is not None:
            self._on_notice(notice, self._launched)

    def _start_heartbeat(self, interval_s: float) -> None:
        path = heartbeat_path()
        failures: list[str] = []

        def on_error(message: str) -> None:
            if not failures:  # once: a missing heartbeat file repeats the same line every interval
                self._on_progress(ProgressEvent("note", f"heartbeat to {path} failed: {message}"))
            failures.append(message)

        self.ssh.start_heartbeat(path, interval_s=interval_s, on_error=on_error)

    # --- leaving -------------------------------------------------------------------------------------------

    def _confirm_lost(self, exc: BaseException | None) -> InstanceLostError | None:
        if isinstance(exc, InstanceLostError):
            return exc
        if self._launched is None or not isinstance(exc, SSHError | EngineError):
            return None
        if self._watcher is not None:
            return self._watcher.confirm_lost()
        from gpu_transcribe.aws.ec2.instances import check_alive

        try:
            check_alive(self._ctx, self._launched.instance_id)
        except InstanceLostError as lost:
            return lost
        except GpuTranscribeError:
            pass
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._detached:
            self._guard.__exit__(exc_type, exc, tb)  # restores the signal handlers; the teardown is a no-op
            return
        watcher = self._watcher
        if watcher is not None:
            watcher.stop()
        if not isinstance(exc, InterruptedRunError):
            self.lost = self._confirm_lost(exc)
        elif watcher is not None:
            self.lost = watcher.lost
        if self.lost is not None and (watcher is None or watcher.reported is not self.lost):
            self._on_progress(ProgressEvent("lost", str(self.lost)))
        try:
            self._guard.__exit__(exc_type, exc, tb)
        except TeardownError:
            if exc is not None:
                self._on_progress(ProgressEvent("note", f"the teardown followed this error: {exc}"))
            raise
        finally:
            self._record_usage()
        if self.lost is not None and self.lost is not exc and exc is not None:
            raise self.lost from exc

    def _teardown(self) -> None:
        if self._detached:
            return
        started = self._clock()
        leftovers: list[tuple[str, str]] = []
        try:
            for step in reversed(self._cleanups):
                try:
                    step.run(self._ssh)
                except TeardownError as exc:
                    leftovers.extend(exc.leftovers or [(step.what, str(exc))])
                except GpuTranscribeError as exc:
                    leftovers.append((step.what, str(exc)))
            self.close_ssh()
            if self._launch_started:
                self._remove_resources(leftovers)
        finally:
            end = self._clock()
            self.times.teardown_s += end - started
            if self._billing_ended_at is None:
                self._billing_ended_at = end
        if leftovers:
            kind = {"builder": "build", "server": "server"}.get(self._spec.role, "run")
            raise TeardownError(
                f"{kind} {self.run_id}: {len(leftovers)} problem(s) removing its resources: "
                + "; ".join(f"{what}: {reason}" for what, reason in leftovers)
                + f"; retry with `gpu-transcribe cleanup --run-id {self.run_id}`",
                leftovers,
            )

    def _remove_resources(self, leftovers: list[tuple[str, str]]) -> None:
        from gpu_transcribe.aws.ec2.models import RunResources
        from gpu_transcribe.aws.ec2.resources import teardown

        self._on_progress(
            ProgressEvent("teardown", f"terminating run {self.run_id}'s instance and removing its resources")
        )
        launched = self._launched
        resources = launched.resources if launched is not None else RunResources(run_id=self.run_id)
        try:
            teardown(
                self._ctx, resources, on_progress=self._on_progress, clock=self._clock, sleep=self._sleep
            )
        except TeardownError as exc:
            leftovers.extend(exc.leftovers)

    def _record_usage(self) -> None:
        launched = self._launched
        if launched is None or self._launched_at is None:
            return
        end = self._billing_ended_at if self._billing_ended_at is not None else self._clock()
        self.usage = InstanceUsage(
            instance_id=launched.instance_id,
            instance_type=launched.instance_type,
            zone=launched.zone,
            market=launched.market,
            price_usd_per_hour=launched.price_usd_per_hour,
            billed_s=billed_seconds(end - self._launched_at),
            interrupted=self.lost is not None,
        )


__all__ = [
    "ALIVE_CHECK_S",
    "CleanupStep",
    "InstanceSession",
    "InstanceUsage",
    "SessionTimes",
    "heartbeat_path",
]
