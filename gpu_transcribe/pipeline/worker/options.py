"""How a worker runs (:class:`WorkerOptions`), what it reports when it exits (:class:`WorkerReport`), its one
error, and the numbers its loop, job endings and watchers follow."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpu_transcribe.errors import GpuTranscribeError

if TYPE_CHECKING:
    from gpu_transcribe.correct.config import CorrectionConfig

#: Seconds between reads of the spot interruption notice (AWS recommends every 5 s: EC2 User Guide,
#: "Spot Instance interruption notices").
NOTICE_CHECK_S = 5.0
#: Seconds between checks of the stop flag by the watcher thread.
STOP_CHECK_S = 0.2
#: The lease ends this many seconds before the message's visibility, so a message that comes back finds
#: its job's lease already over and can be claimed at once.
LEASE_MARGIN_S = 2
#: Extra seconds a duplicate's message stays hidden past the holder's lease.
DUPLICATE_GRACE_S = 2
#: Seconds a batch may still run after the maximum lifetime before its jobs are handed back (interrupted):
#: long enough for a batch of ten 20-minute files on a GPU (about 2 minutes at 100x real time), short
#: against a spot instance's hourly price.
LIFETIME_GRACE_S = 900.0
#: The reason a worker stopped at its maximum lifetime (:attr:`WorkerReport.reason`).
MAX_LIFETIME = "max-lifetime"
#: Test seam: this machine's instance id (instead of IMDS ``meta-data/instance-id``).
INSTANCE_ID_ENV = "GPU_TRANSCRIBE_WORKER_INSTANCE_ID"


class WorkerError(GpuTranscribeError):
    """The worker cannot go on (the model cannot be loaded); its jobs were handed back first."""


@dataclass(frozen=True)
class WorkerOptions:
    """How the worker runs.

    Attributes:
        model: the Whisper model (hub id or local directory), loaded once, on the first job.
        device: ``auto``, ``cpu`` or ``cuda``.
        exit_when_idle_s: exit after this many seconds with nothing received (``None``: never).
        max_lifetime_s: stop receiving this many seconds after the start, finish the batch and exit
            (``None``: no limit; the CLI takes hours, ``--max-lifetime-h``).
        lifetime_grace_s: seconds the batch in hand may still run after ``max_lifetime_s`` before it is
            handed back.
        worker_id: this worker's name in the table's ``owner``; ``""``: host name and process id.
        notice_check_s: seconds between spot notice reads.
        wait_s: long-poll seconds per receive (at most 20).
        correction: model, region and rails of the Bedrock correction of jobs that ask for it
            (``correct`` in their options); ``None``: such jobs succeed uncorrected, with that reason.
    """

    model: str
    device: str = "auto"
    exit_when_idle_s: float | None = None
    max_lifetime_s: float | None = None
    lifetime_grace_s: float = LIFETIME_GRACE_S
    worker_id: str = ""
    notice_check_s: float = NOTICE_CHECK_S
    wait_s: int = 20
    correction: CorrectionConfig | None = None


@dataclass(frozen=True)
class WorkerReport:
    """What a worker did before it exited.

    Attributes:
        worker_id: its name.
        reason: why it stopped: ``idle``, ``max-lifetime``, ``spot-notice`` or a signal's name.
        succeeded: job ids it finished.
        failed: job ids it failed (bad audio, options) or dead-lettered.
        released: job ids it handed back (interruptions, engine failures below the limit).
        left_group: it left its Auto Scaling group.
        leave_failed: it should have left its group (idle or at the maximum lifetime) and could not: the
            ``worker`` command exits 1 so that systemd restarts it, and the fleet's dead-man switch powers
            the instance off if it never leaves.
    """

    worker_id: str
    reason: str
    succeeded: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    released: tuple[str, ...] = ()
    left_group: bool = False
    leave_failed: bool = False
