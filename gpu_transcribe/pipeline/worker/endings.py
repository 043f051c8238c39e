"""The ends of a job the worker claimed: succeeded (outputs uploaded), failed (bad input: not retried),
dead-lettered (engine failures at ``max_attempts``), or handed back for another worker (an interruption, or
an engine failure below the limit).

The three final ends go through one sequence (:meth:`JobEndings._end`): the table's conditional write
(only while this worker holds the job), for a dead-lettered job a copy of its message on the dead-letter
queue, the job event published (:func:`gpu_transcribe.pipeline.results.publish_final_job`, from the row),
and the message deleted last, so a crash at any step means redelivery, never a lost or half-written job:
the next worker finds the row final, publishes the same event again (the same id: the row's
``updated_at``) and deletes the message. A failed publish is logged and dropped (the table holds the
truth). A hand-back (:meth:`JobEndings.release`) writes the row first, so the next worker's claim succeeds,
then makes the message visible again at once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpu_transcribe.aws.pipeline import job_objects, jobs_table, queue
from gpu_transcribe.pipeline.job_ids import local_file_name
from gpu_transcribe.pipeline.results import ResultsChannel, publish_final_job

if TYPE_CHECKING:
    from gpu_transcribe.aws.pipeline.jobs_table import JobRecord
    from gpu_transcribe.pipeline.worker.state import Job, WorkerState


class JobEndings:
    """How the jobs of one worker end (see the module docstring); every method is called with the job's
    state ``working`` and does nothing if a watcher released it meanwhile.

    Args:
        state: the worker's shared state (context, pipeline, outcome lists, lock, progress).
    """

    def __init__(self, state: WorkerState) -> None:
        self._state = state

    def succeed(self, job: Job, transcript: Any, tmp: Path) -> None:
        """Write the job's outputs under ``tmp/<job-id>/out``, correct them if the job asks (never fails
        the job), upload them to ``results/<job-id>/`` and end the job ``succeeded``. A format no writer
        knows fails the job; a disk that cannot take the outputs is an engine failure."""
        from gpu_transcribe_engine.errors import BadOptionError, OutputWriteError
        from gpu_transcribe_engine.writers import write_outputs

        state = self._state
        record = job.record
        formats = tuple(record.options.formats or state.config.default_formats)
        if record.options.correct and "json" not in formats:  # the correction reads the raw JSON
            formats = (*formats, "json")
        out = tmp / record.job_id / "out"
        out.mkdir(exist_ok=True)
        try:
            stem = Path(local_file_name(record.file_name)).stem  # checked when the job was prepared
            written = write_outputs(transcript, out / stem, formats)
        except BadOptionError as exc:  # a format no writer knows: the job's options are wrong
            self.fail(job, f"{record.file_name}: {exc}")
            return
        except OutputWriteError as exc:  # this machine's disk: another worker may do better
            self.engine_failure(job, exc)
            return
        if not self._take(job):
            return
        paths = list(written.values())
        correction = None
        if record.options.correct:
            correction = self._correct(job, written["json"], formats)
            paths += [Path(p) for p in correction.get("outputs", {}).values()]
        keys = []
        for path in paths:
            key = job_objects.result_key(record.job_id, path.name)
            job_objects.upload(
                state.ctx, state.config.resources.bucket, key, path, metadata={"job-id": record.job_id}
            )
            keys.append(key)
        if correction is not None:  # the row names the objects, not this worker's temporary files
            corrected = correction.get("outputs", {}).items()
            correction["outputs"] = {
                f: job_objects.result_key(record.job_id, Path(p).name) for f, p in corrected
            }
            correction["source"] = job_objects.result_key(record.job_id, written["json"].name)
        ended = self._end(
            job,
            jobs_table.SUCCEEDED,
            result_keys=keys,
            duration_s=float(transcript.duration_s),
            correction=correction,
        )
        if not ended:  # another worker took it over (our lease ran out): its message is its business
            state.say("lost", f"job {record.job_id}: no longer ours; leaving its message")
            return
        state.say("succeeded", f"job {record.job_id} ({record.file_name}): {', '.join(keys)}")

    def fail(self, job: Job, reason: str) -> None:
        """Bad input: the job fails at once (not retried), its message is deleted."""
        if not self._take(job):
            return
        self._end(job, jobs_table.FAILED, error=reason)
        self._state.say("failed", f"job {job.record.job_id}: {reason}")

    def engine_failure(self, job: Job, exc: Exception) -> None:
        """Handed back for another worker below ``max_attempts`` engine failures; at it, dead-lettered."""
        state = self._state
        reason = " ".join(f"{job.record.file_name}: {exc}".split())
        failures = job.record.engine_failures + 1
        if failures < state.config.max_attempts:
            limit = state.config.max_attempts
            state.say("engine-failure", f"job {job.record.job_id}: {reason} ({failures}/{limit})")
            self.release(job, interrupted=False, error=reason)
            return
        if not self._take(job):
            return
        self._end(job, jobs_table.DEAD_LETTERED, error=reason, engine_failure=True)
        state.say("dead-lettered", f"job {job.record.job_id}: {reason} (engine failure {failures})")

    def release(self, job: Job, *, interrupted: bool, error: str = "") -> None:
        """Hand the job back: the row first (so a claim succeeds), then the message visible at once; a
        no-op for a job that is no longer ``working``."""
        state = self._state
        with state.lock:
            if job.state != "working":
                return
            job.state = "released"
        jobs_table.release_job(
            state.ctx,
            state.config.resources.table,
            job.record.job_id,
            state.worker_id,
            interrupted=interrupted,
            error=error,
        )
        url = state.config.resources.queue_url
        queue.change_visibility(state.ctx, url, job.message.receipt_handle, 0)
        for duplicate in job.duplicates:
            queue.change_visibility(state.ctx, url, duplicate.receipt_handle, 0)
        state.released.append(job.record.job_id)
        how = "interrupted" if interrupted else "queued again"
        state.say("released", f"job {job.record.job_id}: {how}, its message visible again")

    def publish(self, record: JobRecord, *, transcribe_s: float | None = None) -> None:
        """Publish the end of a job (``record``: its row after the final write) on the results queue and,
        if a webhook applies, the webhooks queue (:func:`~gpu_transcribe.pipeline.results.publish_final_job`:
        the event id comes from the row, so a republished event has the same id). Never raises: a
        notification must not fail a job."""
        state = self._state
        resources = state.config.resources
        channel = ResultsChannel(
            resources.results_queue_url, resources.webhooks_queue_url, state.config.pipeline_webhook
        )
        if not channel.results_queue_url and not channel.webhooks_queue_url:
            return
        timings = {} if transcribe_s is None else {"transcribe_s": transcribe_s}
        try:
            sent = publish_final_job(state.ctx, channel, resources.bucket, record, timings=timings)
        except Exception as exc:  # anything unforeseen: the job is done anyway
            sent = None
            state.say("note", f"job {record.job_id}: the {record.status} event not published: {exc!r}")
        if sent is not None:
            state.say("event", f"job {record.job_id}: {sent['type']} published ({sent['id']})")

    # --- the one sequence of the final ends ----------------------------------------------------------------

    def _take(self, job: Job) -> bool:
        """Move ``job`` from working to finishing; False if the watcher released it (or it was lost)."""
        with self._state.lock:
            if job.state != "working":
                return False
            job.state = "finishing"
            return True

    def _end(self, job: Job, status: str, **row: Any) -> bool:
        """End a job this worker took (:meth:`_take`) as ``status``: the row's final write with ``row``'s
        fields (:func:`~gpu_transcribe.aws.pipeline.jobs_table.finish_job`, only while this worker holds
        the job), for ``dead_lettered`` a copy of the message on the dead-letter queue (marked
        :data:`~gpu_transcribe.aws.pipeline.queue.DEAD_LETTERED_BY` ``worker``), the event published, the
        message and its duplicates deleted, the job counted.

        Returns:
            True if ended; False, with the job marked lost, if the write was refused (another worker took
            the job over when this one's lease ran out: its message is that worker's business).

        Raises:
            CloudError, CredentialsError: a call failed (the job comes back when its lease ends).
        """
        state = self._state
        resources = state.config.resources
        expires_at = int(time.time()) + state.config.job_retention_days * 86400
        done = jobs_table.finish_job(
            state.ctx,
            resources.table,
            job.record.job_id,
            state.worker_id,
            status=status,
            expires_at=expires_at,
            **row,
        )
        if done is None:
            job.state = "lost"
            return False
        if status == jobs_table.DEAD_LETTERED:
            queue.send(
                state.ctx,
                resources.dead_letter_queue_url,
                job.message.body,
                attributes={queue.DEAD_LETTERED_BY: "worker"},
            )
        self.publish(done, transcribe_s=job.transcribe_s)
        for message in (job.message, *job.duplicates):
            queue.delete(state.ctx, resources.queue_url, message.receipt_handle)
        (state.succeeded if status == jobs_table.SUCCEEDED else state.failed).append(job.record.job_id)
        job.state = "done"
        return True

    def _correct(self, job: Job, raw_json: Path, formats: tuple[str, ...]) -> dict[str, Any]:
        """Correct the job's transcript with Bedrock (:func:`gpu_transcribe.correct.correct.correct_file`),
        writing ``<stem>.corrected.<fmt>`` beside the raw files; what it did (``CorrectionResult.to_dict()``).
        Never raises: a Bedrock failure is a ``failed`` status with the reason, and the job still succeeds."""
        from gpu_transcribe.correct.correct import correct_file

        config = self._state.options.correction
        if config is None:
            return {"status": "skipped", "reason": "this worker has no correction configured", "outputs": {}}
        try:
            result = correct_file(raw_json, formats, config)
        except Exception as exc:  # correct_file never raises; a bug there must not lose the transcript
            return {"status": "failed", "reason": f"correction crashed: {exc!r}", "outputs": {}}
        summary: dict[str, Any] = result.to_dict()
        line = f"job {job.record.job_id}: correction {result.status}"
        self._state.say("corrected", f"{line} ({result.reason})" if result.reason else line)
        return summary
