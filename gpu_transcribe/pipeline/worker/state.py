"""What the parts of one worker share: the jobs of the batch in hand (:class:`Job`), the order a batch is
worked in (:func:`isolate_suspects`), the engine's options for a job (:func:`job_transcribe_options`), and
:class:`WorkerState`: the AWS context per thread, the stop flag, the lock and what was done, read and written
by the loop (:mod:`.loop`), the job endings (:mod:`.endings`) and the watchers (:mod:`.watchers`)."""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpu_transcribe.common import ProgressEvent
from gpu_transcribe_engine.options import TranscribeOptions

if TYPE_CHECKING:
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.pipeline.jobs_table import JobRecord
    from gpu_transcribe.aws.pipeline.queue import QueueMessage
    from gpu_transcribe.pipeline.config import PipelineConfig
    from gpu_transcribe.pipeline.worker.options import WorkerOptions


@dataclass
class Job:
    """One claimed job of the current batch (mutable; guarded by :attr:`WorkerState.lock`).

    Attributes:
        record: its row as claimed.
        message: the delivery it was claimed from.
        duplicates: other deliveries of it in the same receive (deleted or released with it).
        state: ``working`` -> ``finishing`` (an ending took it) | ``released`` (handed back) | ``lost``
            (no longer this worker's) | ``done`` (ended).
        path: the downloaded audio, once prepared.
        samples: the decoded audio, once prepared.
        transcribe_s: seconds the engine spent on the job's batch.
    """

    record: JobRecord
    message: QueueMessage
    duplicates: list[QueueMessage] = field(default_factory=list)
    state: str = "working"
    path: Path | None = None
    samples: Any = None
    transcribe_s: float | None = None


def lost_attempts(record: JobRecord) -> int:
    """Attempts on the job before the current one that ended without a hand-back or an engine failure: its
    worker vanished while holding it (killed, out of memory, the instance gone). ``attempts`` counts the
    current claim too."""
    return max(0, record.attempts - 1 - record.interruptions - record.engine_failures)


def isolate_suspects(batch: list[Job]) -> list[list[Job]]:
    """The order a claimed batch is worked in: the jobs no worker lost before, transcribed together, then
    each suspect (a job with :func:`lost_attempts`: it may be what killed its worker) alone, fewest lost
    attempts first. A job that kills its worker every time then dies last and alone, with the rest of the
    batch finished and deleted, so its neighbours spend no more receives on it (SQS dead-letters a message
    after ``maxReceiveCount`` receives, however they ended)."""
    fresh = [job for job in batch if lost_attempts(job.record) == 0]
    suspects = sorted(
        (job for job in batch if lost_attempts(job.record) > 0), key=lambda j: lost_attempts(j.record)
    )
    return ([fresh] if fresh else []) + [[job] for job in suspects]


def job_transcribe_options(record: JobRecord, default_language: str) -> TranscribeOptions:
    """The engine's options for the job: its row's options (``submit`` checked them with
    :meth:`~gpu_transcribe_engine.options.TranscribeOptions.validated`), the pipeline's ``default_language``
    where the row names none; the rest the engine's defaults."""
    options = record.options
    return TranscribeOptions(
        language=options.language or default_language,
        word_timestamps=options.word_timestamps,
        prompt=options.prompt,
        max_line_width=options.max_line_width,
        max_line_count=options.max_line_count,
        max_cue_s=options.max_cue_s,
    )


class WorkerState:
    """The state one worker's loop, job endings and watcher threads share.

    Args:
        ctx: where AWS calls go (for the thread that makes the worker; see :attr:`ctx`).
        config: the pipeline (resources, attempts, visibility timeout, defaults).
        options: how the worker runs.
        on_event: progress, one line per step.
        instance_id: this machine's EC2 instance id (``""``: not an instance).

    Attributes:
        worker_id: this worker's name in the table's ``owner`` (the options', else instance id or host
            name, and the process id).
        in_group: it runs inside the pipeline's Auto Scaling group (the pipeline names a group and this is
            an instance).
        lock: guards :attr:`batch` and each :class:`Job`'s ``state``.
        batch: the jobs in hand (empty between batches).
        stop: set once the worker is stopping; :attr:`stop_reason` says why.
        succeeded, failed, released: job ids, for :class:`~.options.WorkerReport`.
    """

    def __init__(
        self,
        ctx: AwsContext,
        config: PipelineConfig,
        options: WorkerOptions,
        on_event: Callable[[ProgressEvent], None],
        instance_id: str,
    ) -> None:
        self._ctx = ctx
        self._owner_thread = threading.current_thread()
        self._local = threading.local()
        self._on_event = on_event
        self.config, self.options, self.instance_id = config, options, instance_id
        self.worker_id = options.worker_id or f"{instance_id or socket.gethostname()}-{os.getpid()}"
        self.in_group = bool(config.resources.group and instance_id)
        self.lock = threading.Lock()
        self.batch: list[Job] = []
        self.stop = threading.Event()
        self.stop_reason = ""
        self.succeeded: list[str] = []
        self.failed: list[str] = []
        self.released: list[str] = []
        self.started = time.monotonic()

    @property
    def ctx(self) -> AwsContext:
        """The calling thread's AWS context: the one given for the thread that made the worker, a copy (its
        own boto3 session) for the heartbeat and watcher threads, since a boto3 session is not thread-safe
        (boto3 documentation, "Multithreading or multiprocessing with clients")."""
        if threading.current_thread() is self._owner_thread:
            return self._ctx
        if not hasattr(self._local, "ctx"):
            self._local.ctx = dataclasses.replace(self._ctx)
        ctx: AwsContext = self._local.ctx
        return ctx

    def request_stop(self, reason: str) -> None:
        """Stop receiving (the first reason given is kept); safe to call from a signal handler."""
        if not self.stop_reason:
            self.stop_reason = reason
        self.stop.set()

    def lifetime_left_s(self) -> float | None:
        """Seconds until the maximum lifetime (negative once past it), ``None`` without one."""
        if self.options.max_lifetime_s is None:
            return None
        return self.options.max_lifetime_s - (time.monotonic() - self.started)

    def say(self, stage: str, message: str) -> None:
        """Report one step (``stage``: ``claim``, ``succeeded``, ``released``...)."""
        self._on_event(ProgressEvent(stage, message))
