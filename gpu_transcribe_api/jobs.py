"""Async transcription jobs on disk: one directory per job holding its record, its upload and its result.

Layout under the store's root (``ServerConfig.jobs_dir``, mode 0700)::

    <id>/job.json      the record (:class:`JobRecord`), rewritten atomically on every change
    <id>/audio<.ext>   the upload, from submission until the job finishes
    <id>/result.json   the Transcript as JSON (:meth:`Transcript.to_dict`), once the job succeeded

Every file is written to a temporary file in the same directory and moved into place with
:func:`os.replace` (:func:`gpu_transcribe_engine.files.write_atomic`), so a reader (or a restarted server)
sees the old version or the new one, never a partial one. Files are created with mode 0600 (the uploads and
transcripts are the caller's data).

A finished job (``succeeded`` or ``failed``) expires ``ttl_s`` seconds after ``finished_at``: from then on
:meth:`JobStore.get` treats it as unknown, and :meth:`JobStore.sweep` (run by a background thread every
``sweep_interval_s``) removes its directory. Queued and running jobs never expire. A store opened on a
directory that already holds jobs (a ``jobs_dir`` kept across restarts) marks the jobs a previous process left
queued or running as failed, since nothing will run them any more.

The result is stored as the whole Transcript rather than as one rendered body, so ``GET /v1/jobs/{id}`` can
render any response format later (:func:`gpu_transcribe_engine.transcript.transcript_from_dict` reads it
back).

This module imports nothing of the client (``gpu_transcribe``) and nothing of torch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

from gpu_transcribe_api.config import DEFAULT_JOB_TTL_S
from gpu_transcribe_engine.files import write_atomic
from gpu_transcribe_engine.transcript import Transcript, transcript_from_dict
from gpu_transcribe_engine.utc import iso_utc

logger = logging.getLogger(__name__)

JobStatus = Literal["queued", "running", "succeeded", "failed"]
FINISHED: tuple[str, ...] = ("succeeded", "failed")

DEFAULT_SWEEP_INTERVAL_S = 60.0
"""Seconds between two sweeps of expired jobs by the background thread (at most 60 s late on a 24 h TTL)."""
JOB_ID_BYTES = 16
"""Random bytes in a job id: 128 bits, so ids cannot be guessed (``secrets.token_urlsafe`` -> 22 chars)."""
DIR_MODE = 0o700
FILE_MODE = 0o600
RESTART_ERROR = "the server stopped before the job finished; submit it again"

_ID_RE = re.compile(r"[A-Za-z0-9_-]{22}")  # secrets.token_urlsafe(16): exactly 22 characters
_OWN_FILE_RE = re.compile(r"job\.json|result\.json|audio(\.[A-Za-z0-9]{1,10})?|\..+\.tmp")
_SUFFIX_RE = re.compile(r"\.[A-Za-z0-9]{1,10}")
_RECORD = "job.json"
_RESULT = "result.json"
_AUDIO = "audio"


class JobStoreError(Exception):
    """The job store cannot write to its directory (disk full, removed, read-only); one line, naming it."""


def _unix_s(iso: str) -> float:
    """The inverse of :func:`~gpu_transcribe_engine.utc.iso_utc`: UTC ISO 8601 (``Z`` or ``+00:00``) to Unix
    seconds."""
    return datetime.fromisoformat(iso).timestamp()


def one_line(text: str, limit: int = 500) -> str:
    """``text`` with white space runs (new lines included) as single spaces, cut to ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


@dataclass(frozen=True)
class JobRecord:
    """The state of one job, as stored in ``<id>/job.json`` and answered by ``GET /v1/jobs/{id}``.

    Attributes:
        id: random URL-safe token (``secrets.token_urlsafe``, :data:`JOB_ID_BYTES` bytes).
        status: ``queued`` (accepted, waiting for the scheduler), ``running`` (handed to the scheduler),
            ``succeeded`` (the result is stored) or ``failed`` (``error`` says why).
        created_at: submission time, UTC ISO 8601 with milliseconds (``2026-12-02T06:07:21.123Z``).
        finished_at: when the job succeeded or failed (same format), else ``None``.
        options: the request's options as given (``language``, ``prompt``, ``response_format``,
            ``temperature``, ...); JSON values only.
        error: one line saying why the job failed, else ``None``.
        duration_s: the audio's duration in seconds once decoded, else ``None``.
        callback_url: where the ``job.succeeded``/``job.failed`` webhook goes, or ``None``.
        filename: the upload's file name as the client sent it (for the transcript's ``audio``).
    """

    id: str
    status: JobStatus
    created_at: str
    finished_at: str | None = None
    options: dict[str, Any] | None = None
    error: str | None = None
    duration_s: float | None = None
    callback_url: str | None = None
    filename: str = ""

    @property
    def finished(self) -> bool:
        """True once the job succeeded or failed."""
        return self.status in FINISHED

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict (field name -> value)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobRecord:
        """Read a record written by :meth:`to_dict`; unknown keys are ignored.

        Raises:
            ValueError: a required field is missing or the status is not one of the four.
        """
        fields = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        try:
            record = cls(**fields)
        except TypeError as exc:
            raise ValueError(f"not a job record: {exc}") from None
        if record.status not in ("queued", "running", *FINISHED):
            raise ValueError(f"not a job status: {record.status!r}")
        return record


def _json_bytes(data: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON (letters kept as they are); NaN and infinities are refused (ValueError)."""
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


class JobStore:
    """Async jobs on disk under ``root``. Thread-safe: every method may be called from any thread.

    The records are also kept in memory (one small dict per job) so that status reads do not touch the
    disk; the disk copy is written first on every change, so memory never shows a state the disk lacks.
    Results are read from disk when asked for.

    Args:
        root: the jobs directory; created (mode 0700) if missing; an existing one is chmod'ed to 0700.
        ttl_s: seconds a finished job is kept after ``finished_at`` (> 0); default 24 h, as
            ``ServerConfig.job_ttl_s``.
        clock: Unix seconds (injectable for tests); ``time.time`` by default.

    Raises:
        JobStoreError: ``root`` cannot be created.
        ValueError: ``ttl_s`` is not positive.
    """

    def __init__(self, root: Path, ttl_s: float = DEFAULT_JOB_TTL_S, clock: Callable[[], float] = time.time):
        if not ttl_s > 0:
            raise ValueError(f"job_ttl_s: {ttl_s} is not a positive number of seconds")
        self.root = Path(root)
        self.ttl_s = float(ttl_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._records: dict[str, JobRecord] = {}
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        try:
            self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            os.chmod(self.root, DIR_MODE)
        except OSError as exc:
            raise JobStoreError(
                f"cannot create the jobs directory {self.root}: {exc.strerror or exc}"
            ) from exc
        self._load()

    # -- start-up ---------------------------------------------------------------------------------------

    def _load(self) -> None:
        """Read the jobs a previous process left; fail the unfinished ones, drop unreadable ones.

        A directory is only removed if every file in it is one this store writes (a misconfigured
        ``jobs_dir`` pointing at other data loses nothing); anything else is left alone.
        """
        for entry in sorted(self.root.iterdir()):
            if not (entry.is_dir() and _ID_RE.fullmatch(entry.name)):
                continue
            try:
                record = JobRecord.from_dict(json.loads((entry / _RECORD).read_bytes()))
                if record.id != entry.name:
                    raise ValueError(f"the record's id {record.id!r} is not its directory's name")
            except (OSError, ValueError) as exc:
                if not all(_OWN_FILE_RE.fullmatch(child.name) for child in entry.iterdir()):
                    logger.warning("jobs: %s is not a job directory; left alone", entry)
                    continue
                logger.warning("jobs: removing %s, its record is unreadable (%s)", entry, one_line(str(exc)))
                shutil.rmtree(entry, ignore_errors=True)
                continue
            self._records[record.id] = record
            if not record.finished:
                self._finish(record.id, "failed", error=RESTART_ERROR)
        if self._records:
            logger.info("jobs: %d job(s) found in %s", len(self._records), self.root)

    # -- creating and updating jobs ---------------------------------------------------------------------

    def create(
        self,
        upload: BinaryIO,
        *,
        filename: str = "",
        options: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
    ) -> JobRecord:
        """Store an upload as a new ``queued`` job and return its record.

        Blocks while the upload is copied (call it from a worker thread in async code).

        Args:
            upload: the audio, read from its current position to its end.
            filename: the client's file name; only its extension is used on disk (``audio.flac``).
            options: the request's options, JSON values only; stored as given.
            callback_url: where to send the webhook when the job finishes (checked by the caller).

        Raises:
            JobStoreError: the upload or record cannot be written (nothing of the job is left behind).
            ValueError: ``options`` holds a value JSON cannot represent.
        """
        job_id = secrets.token_urlsafe(JOB_ID_BYTES)
        record = JobRecord(
            id=job_id,
            status="queued",
            created_at=iso_utc(self._clock(), "milliseconds"),
            options=dict(options or {}),
            callback_url=callback_url,
            filename=filename,
        )
        payload = _json_bytes(record.to_dict())  # ValueError before anything is written
        job_dir = self.root / job_id
        suffix = Path(filename).suffix
        audio = job_dir / (_AUDIO + (suffix.lower() if _SUFFIX_RE.fullmatch(suffix) else ""))
        try:
            job_dir.mkdir(mode=DIR_MODE)
            fd = os.open(audio, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            with os.fdopen(fd, "wb") as handle:
                shutil.copyfileobj(upload, handle, 1024 * 1024)
            write_atomic(job_dir / _RECORD, payload, FILE_MODE)
        except OSError as exc:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise JobStoreError(f"cannot store the job in {job_dir}: {exc.strerror or exc}") from exc
        with self._lock:
            self._records[job_id] = record
        return record

    def audio_path(self, job_id: str) -> Path | None:
        """The job's uploaded audio, or ``None`` once removed (the job finished) or for an unknown id."""
        if not _ID_RE.fullmatch(job_id):
            return None
        for path in (self.root / job_id).glob(_AUDIO + "*"):
            return path
        return None

    def mark_running(self, job_id: str, duration_s: float | None = None) -> JobRecord | None:
        """Set a queued job ``running`` (and its audio duration in seconds, if known).

        Returns:
            The new record, or ``None`` if the job is unknown, expired or already finished.

        Raises:
            JobStoreError: the record cannot be written.
        """
        with self._lock:
            record = self._records.get(job_id)
            if record is None or record.finished:
                return None
            new = replace(record, status="running", duration_s=duration_s)
            self._save(new)
            return new

    def mark_succeeded(self, job_id: str, transcript: Transcript) -> JobRecord | None:
        """Store the transcript, set the job ``succeeded`` and remove its upload.

        Returns:
            The new record, or ``None`` if the job is unknown or already finished (nothing is stored).

        Raises:
            JobStoreError: the result or record cannot be written; the job is then marked failed if possible.
        """
        with self._lock:
            record = self._records.get(job_id)
            if record is None or record.finished:
                return None
        try:
            result = _json_bytes(transcript.to_dict())
            write_atomic(self.root / job_id / _RESULT, result, FILE_MODE)
        except (OSError, ValueError) as exc:
            message = f"cannot store the result: {one_line(getattr(exc, 'strerror', None) or str(exc))}"
            with contextlib.suppress(JobStoreError):
                self.mark_failed(job_id, message)
            raise JobStoreError(f"job {job_id}: {message}") from exc
        return self._finish(job_id, "succeeded", duration_s=transcript.duration_s)

    def mark_failed(self, job_id: str, error: str) -> JobRecord | None:
        """Set the job ``failed`` with ``error`` (made one line) and remove its upload.

        Returns:
            The new record, or ``None`` if the job is unknown or already finished.

        Raises:
            JobStoreError: the record cannot be written.
        """
        return self._finish(job_id, "failed", error=one_line(error) or "failed")

    def _finish(
        self, job_id: str, status: JobStatus, error: str | None = None, duration_s: float | None = None
    ) -> JobRecord | None:
        """Move a job to a finished status, stamp ``finished_at`` and remove the upload."""
        with self._lock:
            record = self._records.get(job_id)
            if record is None or record.finished:
                return None
            new = replace(
                record,
                status=status,
                finished_at=iso_utc(self._clock(), "milliseconds"),
                error=error,
                duration_s=duration_s if duration_s is not None else record.duration_s,
            )
            self._save(new)
        audio = self.audio_path(job_id)
        if audio is not None:
            with contextlib.suppress(OSError):
                audio.unlink()
        return new

    def _save(self, record: JobRecord) -> None:
        """Write the record to disk, then to memory (call with the lock held)."""
        path = self.root / record.id / _RECORD
        try:
            write_atomic(path, _json_bytes(record.to_dict()), FILE_MODE)
        except OSError as exc:
            raise JobStoreError(f"cannot write {path}: {exc.strerror or exc}") from exc
        self._records[record.id] = record

    # -- reading -----------------------------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord | None:
        """The job's record, or ``None`` for an unknown or expired id (an expired job is removed now)."""
        with self._lock:
            record = self._records.get(job_id)
            if record is None or not self._expired(record, self._clock()):
                return record
        self.sweep()
        return None

    def result(self, job_id: str) -> Transcript | None:
        """The transcript of a succeeded job, or ``None`` (unknown, expired, not succeeded, or just swept).

        Raises:
            ValueError: the stored result is not a transcript (a damaged file).
        """
        record = self.get(job_id)
        if record is None or record.status != "succeeded":
            return None
        try:
            data = json.loads((self.root / job_id / _RESULT).read_bytes())
        except FileNotFoundError:
            return None
        return transcript_from_dict(data)

    def __len__(self) -> int:
        """Jobs held (any status, expired ones not yet swept included)."""
        with self._lock:
            return len(self._records)

    # -- expiry -----------------------------------------------------------------------------------------

    def _expired(self, record: JobRecord, now_s: float) -> bool:
        """True if the job finished more than ``ttl_s`` seconds before ``now_s``."""
        return record.finished_at is not None and now_s >= _unix_s(record.finished_at) + self.ttl_s

    def sweep(self) -> list[str]:
        """Remove every expired job (record, result, directory) now.

        Returns:
            The ids removed.
        """
        now_s = self._clock()
        with self._lock:
            expired = [job_id for job_id, rec in self._records.items() if self._expired(rec, now_s)]
            for job_id in expired:
                del self._records[job_id]
        for job_id in expired:
            shutil.rmtree(self.root / job_id, ignore_errors=True)
        if expired:
            logger.info("jobs: %d expired job(s) removed", len(expired))
        return expired

    def start_sweeper(self, interval_s: float = DEFAULT_SWEEP_INTERVAL_S) -> None:
        """Run :meth:`sweep` every ``interval_s`` seconds in a daemon thread until :meth:`close`."""
        if self._sweeper is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.sweep()
                except Exception:  # the sweeper must outlive any one bad sweep
                    logger.exception("jobs: sweep failed")

        self._sweeper = threading.Thread(target=loop, name="job-sweeper", daemon=True)
        self._sweeper.start()

    def close(self) -> None:
        """Stop the sweeper thread (jobs stay on disk). Safe to call twice."""
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout=5)
            self._sweeper = None
