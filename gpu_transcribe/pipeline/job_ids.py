"""Job ids and the file names a job gives: an id made by ``submit`` (:func:`new_job_id`), the id of a file
another uploader put into ``incoming/`` (:func:`external_job_id`), the job a key belongs to
(:func:`job_id_for_key`), and the base name a job's file may be written under (:func:`local_file_name`).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import secrets
from datetime import UTC, datetime

from gpu_transcribe.errors import GpuTranscribeError

#: A job id made by ``submit``: UTC time to the second and 8 random hex digits, ``20261202T061940Z-3f9a1c0b``
#: (sortable by time; 4.3 billion per second).
JOB_ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")


class UnsafeFileNameError(GpuTranscribeError):
    """A file name from the jobs table (a job's ``file_name``, the last part of a result key) that has no
    usable base name, so it cannot name a local file.

    Attributes:
        name: the name as the table has it.
    """

    def __init__(self, name: str, what: str) -> None:
        self.name = name
        super().__init__(f"{what}: {name!r} is not a file name (no base name to write to)")


def local_file_name(name: str, what: str = "file name") -> str:
    """The base name of ``name`` to use as a local file name: ``\\`` read as ``/``, then the last part;
    ``../../x.wav`` gives ``x.wav``, and ``a/..``, ``x/`` or ``..`` have none. The worker and
    ``jobs fetch`` join only this to their folders, so a name written into the jobs table can never reach
    outside them.

    Args:
        name: a job's ``file_name`` or a result key.
        what: how the error names the value (``job 20261202T061940Z-3f9a1c0b's file name``).

    Raises:
        UnsafeFileNameError: the base name is empty, ``.`` or ``..``, or the name holds a NUL or another
            control character.
    """
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        raise UnsafeFileNameError(name, what)
    base = posixpath.basename(name.replace("\\", "/"))
    if base in ("", ".", ".."):
        raise UnsafeFileNameError(name, what)
    return base


def new_job_id(now: datetime | None = None) -> str:
    """A fresh job id (:data:`JOB_ID_RE`): ``20261202T061940Z-3f9a1c0b``."""
    return f"{(now or datetime.now(UTC)).astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def external_job_id(key: str, etag: str) -> str:
    """The job id of an object another uploader put into ``incoming/``: ``x-`` and 20 hex digits of the
    SHA-256 of its key and ETag, so a repeated delivery of the same upload is the same job, and the same
    key uploaded again with other content a new one."""
    return "x-" + hashlib.sha256(f"{key}\n{etag}".encode()).hexdigest()[:20]


def job_id_for_key(key: str, etag: str) -> tuple[str, bool]:
    """``(job id, made by submit)`` for an ``incoming/`` key: ``incoming/<id>/<name>`` with an id of
    :data:`JOB_ID_RE`'s form is that job; any other key is another uploader's (:func:`external_job_id`)."""
    parts = key.split("/")
    if len(parts) == 3 and JOB_ID_RE.match(parts[1]):
        return parts[1], True
    return external_job_id(key, etag), False
