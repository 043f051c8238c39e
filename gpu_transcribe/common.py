"""General helpers shared by every layer: progress events, UTC time, run ids and EC2's billing rule.

Nothing here talks to AWS or the network; the AWS layer, the orchestration and the CLI all import it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime


def utc_now() -> datetime:
    """The time now, timezone-aware UTC."""
    return datetime.now(UTC)


def parse_iso_utc(text: str) -> datetime | None:
    """Parse a ``gpu-transcribe:created`` tag value; ``None`` if it is not an ISO 8601 time."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


#: EC2 bills Linux instances per second with a 60-second minimum per start
#: (docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-instance-lifecycle.html, "Instance billing").
MIN_BILLED_S = 60.0


def billed_seconds(running_s: float) -> float:
    """The seconds EC2 bills for an instance that ran ``running_s`` seconds: at least :data:`MIN_BILLED_S`."""
    return max(MIN_BILLED_S, running_s)


def cost_usd(price_usd_per_hour: float | None, billed_s: float) -> float | None:
    """``price_usd_per_hour * billed_s / 3600`` (instance time only: no EBS, transfer or S3), or ``None`` if
    the price is unknown."""
    return None if price_usd_per_hour is None else price_usd_per_hour * billed_s / 3600.0


def new_run_id(now: datetime | None = None) -> str:
    """A fresh run id: UTC time to the second and 6 random hex digits, e.g. ``20261122T042641Z-3f9a1c``.

    Sortable by time, unique enough for one account (16.7 million per second), valid in EC2 names and tags.
    """
    return f"{(now or utc_now()).astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


# --- progress ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a long AWS operation, for a progress callback (the layer itself never prints).

    Attributes:
        stage: a stable machine-readable step name: ``preflight``, ``quota``, ``zones``, ``key-pair``,
            ``security-group``, ``attempt``, ``launched``, ``wait-running``, ``wait-ssh``, ``terminate``,
            ``delete``, ``note``.
        message: one human-readable line.
    """

    stage: str
    message: str


ProgressCallback = Callable[[ProgressEvent], None]


def no_progress(event: ProgressEvent) -> None:
    """A progress callback that ignores every event."""
