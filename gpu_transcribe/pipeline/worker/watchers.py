"""The worker's background threads and what it reads about its machine.

- :func:`watch` (one thread for the worker's life) reads the spot interruption notice (IMDSv2, every
  ``notice_check_s``; AWS's advice is every 5 s: EC2 User Guide, "Spot Instance interruption notices") and
  the stop flag a signal sets, and notices a batch still running ``lifetime_grace_s`` past the maximum
  lifetime: on any of them the batch's jobs are handed back as interrupted (table first, so the next
  worker's claim succeeds; the messages visible again at once) and the engine stops at its next batch.
- :func:`heartbeat` (one thread per batch) extends the messages' visibility and the jobs' leases every third
  of the visibility timeout.
- :func:`read_instance_id`: this machine's EC2 instance id, if it is one.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

from gpu_transcribe.aws.pipeline import jobs_table, queue
from gpu_transcribe.errors import GpuTranscribeError
from gpu_transcribe.instance.spot_watch import IMDS_ENDPOINT_ENV, read_imds, read_local_spot_notice
from gpu_transcribe.pipeline.worker.options import INSTANCE_ID_ENV, LEASE_MARGIN_S, MAX_LIFETIME, STOP_CHECK_S

if TYPE_CHECKING:
    from gpu_transcribe.pipeline.worker.endings import JobEndings
    from gpu_transcribe.pipeline.worker.state import WorkerState


def read_instance_id() -> str:
    """This machine's instance id: ``$GPU_TRANSCRIBE_WORKER_INSTANCE_ID`` (the test seam), else IMDS
    ``meta-data/instance-id`` (1 s timeout); ``""`` off EC2."""
    given = os.environ.get(INSTANCE_ID_ENV, "").strip()
    if given:
        return given
    return (read_imds("meta-data/instance-id", timeout_s=1.0) or "").strip()


def watch(state: WorkerState, endings: JobEndings) -> None:
    """Read the spot notice every ``notice_check_s``; on a notice, a stop request, or a batch still running
    ``lifetime_grace_s`` past the maximum lifetime, hand the batch back. Returns once the worker is stopping
    and no batch is in hand."""
    next_notice = time.monotonic()
    handed_back = False
    # Off EC2 nothing answers at 169.254.169.254: read notices only on an instance or at the test seam.
    read_notices = bool(state.instance_id or os.environ.get(IMDS_ENDPOINT_ENV, "").strip())
    while True:
        stopping = state.stop.wait(STOP_CHECK_S)
        if read_notices and not stopping and time.monotonic() >= next_notice:
            next_notice = time.monotonic() + state.options.notice_check_s
            notice = read_local_spot_notice()
            if notice is not None:
                state.say("spot-notice", f"EC2 will {notice.action} this instance at {notice.time}")
                state.request_stop("spot-notice")
                stopping = True
        lifetime_s = state.lifetime_left_s()
        if not stopping and lifetime_s is not None and lifetime_s < -state.options.lifetime_grace_s:
            state.say("max-lifetime", "the batch outlived the maximum lifetime's grace; handing it back")
            state.request_stop(MAX_LIFETIME)
            stopping = True
        if stopping and not handed_back and state.stop_reason not in ("", "idle"):
            handed_back = True
            with state.lock:
                batch = list(state.batch)
            for job in batch:
                try:
                    endings.release(job, interrupted=True)
                except GpuTranscribeError as exc:
                    state.say("note", f"could not hand back job {job.record.job_id}: {exc}")
        if stopping and not state.batch:
            return
        if stopping:  # the stop event no longer waits: pace the loop until the batch is over
            time.sleep(STOP_CHECK_S)


def heartbeat(state: WorkerState, stop: threading.Event) -> None:
    """Every third of the visibility timeout until ``stop``: the messages hidden for another full timeout
    and the leases extended, for every job still in hand; a job whose lease is no longer this worker's is
    marked lost."""
    visibility_s = state.config.visibility_timeout_s
    while not stop.wait(max(1.0, visibility_s / 3)):
        with state.lock:
            jobs = [job for job in state.batch if job.state in ("working", "finishing")]
        for job in jobs:
            try:
                for message in (job.message, *job.duplicates):
                    queue.change_visibility(
                        state.ctx, state.config.resources.queue_url, message.receipt_handle, visibility_s
                    )
                held = jobs_table.extend_lease(
                    state.ctx,
                    state.config.resources.table,
                    job.record.job_id,
                    state.worker_id,
                    visibility_s - LEASE_MARGIN_S,
                )
            except GpuTranscribeError as exc:
                state.say("note", f"heartbeat of job {job.record.job_id} failed: {exc}")
                continue
            if not held:
                with state.lock:
                    if job.state == "working":
                        job.state = "lost"
                state.say("lost", f"job {job.record.job_id}: the lease is no longer ours")
