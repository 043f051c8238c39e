"""What a fleet instance runs at boot before the worker: the dead-man switch, and the worker's limits.

The stack's user data (``stack.yaml``, ``WorkerLaunchTemplate``) starts with :func:`fleet_deadman_commands`
(its ``DeadmanCommands`` parameter), then writes the pipeline's names and starts the worker with
``--exit-when-idle WORKER_IDLE_EXIT_S --max-lifetime-h WORKER_MAX_LIFETIME_H`` (the ``WorkerIdleExitS`` and
``WorkerMaxLifetimeH`` parameters). The switch is ``gpu_transcribe/data/deadman.sh``, the one ``run`` uses.
"""

from __future__ import annotations

import base64
import shlex

from gpu_transcribe.aws.ec2.userdata import (
    DEADMAN_CHECK_INTERVAL_S,
    DEADMAN_PATH,
    DEADMAN_UNIT,
    HARD_STOP_MARGIN_MINUTES,
    HEARTBEAT_PATH,
    deadman_script,
)
from gpu_transcribe.pipeline.contract import WORKER_UNIT

#: The maximum lifetime the unit gives each worker, hours (``worker --max-lifetime-h``): the backstop that
#: replaces an instance that never goes idle; the scaler starts a fresh one if the backlog needs it.
WORKER_MAX_LIFETIME_H = 12
#: Seconds a worker of the fleet waits with nothing received before it leaves the group
#: (``worker --exit-when-idle``): 5 minutes of an idle g4dn.xlarge at about $0.20/h spot is $0.017, and a
#: burst that arrives within them finds the model loaded.
WORKER_IDLE_EXIT_S = 300
#: Seconds after boot at which the fleet's dead-man switch powers an instance off whatever it is doing: the
#: worker's own lifetime plus its grace for the batch in hand (``worker.LIFETIME_GRACE_S``, 15 minutes) and
#: 15 minutes for boot, model load and leaving the group. A worker that works stops long before; this fires
#: for a hung engine or a worker that could not leave.
FLEET_MAX_LIFETIME_S = WORKER_MAX_LIFETIME_H * 3600 + 30 * 60
#: Seconds the fleet's switch waits with the worker's unit not active (failed for good, or exited after it
#: could not leave the group and not restarted) before powering off; systemd restarts a failed worker within
#: 10 s, and the switch's own start counts as the first sign of life, so boot has as long to start it.
FLEET_WORKER_GONE_S = 600
#: The command the fleet's switch runs at each check: success is a sign of life (``deadman.sh``'s ALIVE_CMD).
FLEET_ALIVE_CMD = f"systemctl is-active --quiet {WORKER_UNIT}"


def fleet_deadman_script() -> str:
    """``deadman.sh`` without its comment lines and blank lines (the shebang kept), as the fleet's user data
    carries it: :func:`fleet_deadman_commands` must fit a template parameter's 4,096 bytes."""
    lines = deadman_script().splitlines()
    kept = [lines[0], *(line for line in lines[1:] if line.strip() and not line.lstrip().startswith("#"))]
    return "\n".join(kept) + "\n"


def fleet_deadman_commands() -> list[str]:
    """The user data lines that write and start the dead-man switch (``gpu_transcribe/data/deadman.sh``, the
    one ``run`` uses) on a fleet instance: power-off :data:`FLEET_MAX_LIFETIME_S` after boot, and
    :data:`FLEET_WORKER_GONE_S` after the worker's unit was last active; ``shutdown -P`` two minutes after
    the lifetime as a second, independent timer. The script travels base64-encoded, so neither the heredoc nor
    ``Fn::Sub`` (which reads ``${...}``) can change it. An instance that powers off leaves the group's
    running instances; the group's EC2 health check replaces it, and the replacement works on the backlog
    or, idle, leaves with the desired capacity decremented."""
    encoded = base64.b64encode(fleet_deadman_script().encode("utf-8")).decode("ascii")
    env = {
        "MAX_LIFETIME_S": str(FLEET_MAX_LIFETIME_S),
        "HEARTBEAT_FILE": HEARTBEAT_PATH,
        "HEARTBEAT_TIMEOUT_S": str(FLEET_WORKER_GONE_S),
        "CHECK_INTERVAL_S": str(DEADMAN_CHECK_INTERVAL_S),
        "ALIVE_CMD": FLEET_ALIVE_CMD,
    }
    start = [
        "systemd-run",
        f"--unit={DEADMAN_UNIT}",
        "--description=gpu-transcribe dead-man switch",
        *(f"--setenv={k}={v}" for k, v in env.items()),
        "/bin/sh",
        DEADMAN_PATH,
    ]
    hard_stop_minutes = FLEET_MAX_LIFETIME_S // 60 + HARD_STOP_MARGIN_MINUTES
    return [
        f"install -d -m 0755 {shlex.quote(DEADMAN_PATH.rsplit('/', 1)[0])}",
        f"base64 -d > {shlex.quote(DEADMAN_PATH)} <<'DEADMAN'",
        *(encoded[i : i + 76] for i in range(0, len(encoded), 76)),
        "DEADMAN",
        f"chmod 0755 {shlex.quote(DEADMAN_PATH)}",
        shlex.join(start),
        f"shutdown -P +{hard_stop_minutes}",
    ]
