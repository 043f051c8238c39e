"""What ``gpu-transcribe serve`` runs with: one frozen :class:`ServerConfig`, checked by
:meth:`ServerConfig.checked` before anything starts.

This module imports nothing heavy (no torch, no FastAPI), so the command line can build and check a config
before it imports the server.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path

from gpu_transcribe_engine.errors import BadOptionError
from gpu_transcribe_engine.options import DECODE_LOOPS, DEFAULT_MODEL, DEVICES, looks_like_path

MIB = 1024 * 1024
GIB = 1024 * MIB
DEFAULT_MAX_UPLOAD_BYTES = 200 * MIB
"""``--max-upload-mb`` 200: about 3.5 hours of 128 kbit/s mp3, or 1.7 hours of 16 kHz 16-bit wav."""
DEFAULT_MAX_QUEUE = 64
DEFAULT_MAX_BATCH_REQUESTS = 16
"""Requests the consumer hands to the engine in one call at most; their windows share batches."""
DEFAULT_MAX_CALL_AUDIO_S = 1800.0
"""Audio per engine call at most: 30 minutes is about 60 windows of 30 s, one batch on a large GPU
(``gpu_transcribe_engine.device.CUDA_MAX_BATCH_SIZE`` 64), so a short request arriving during a call waits
about one
batch, not an hour of someone else's audio."""
DEFAULT_JOB_TTL_S = 24 * 3600.0
DEFAULT_MAX_PENDING_JOBS = 256
"""Async jobs accepted and not finished at most (``--max-pending-jobs``): four times ``--max-queue``'s 64,
so a burst of jobs can wait for the queue without one more upload each filling the disk."""
DEFAULT_MAX_PENDING_BYTES = 10 * GIB
"""Their uploads on disk at most (``--max-pending-gb`` 10): 50 uploads of the 200 MB limit."""
DEFAULT_MIN_FREE_DISK_BYTES = 2 * GIB
"""A job is refused when storing it would leave less free space than this on the jobs directory's file
system (``--min-free-disk-gb`` 2): room for the results, the logs and the model's cache."""
DEFAULT_POWEROFF_COMMAND = "shutdown -P now"
POWEROFF_COMMAND_ENV = "GPU_TRANSCRIBE_POWEROFF_COMMAND"
"""Replaces the power-off command (a test seam, as ``POWEROFF_CMD`` is for ``deadman.sh``)."""
API_KEY_ENV = "GPU_TRANSCRIBE_API_KEY"
"""The bearer key, when ``--api-key-file`` is not given."""


class ServerConfigError(BadOptionError):
    """A server option has a value the server cannot start with; the one-line message names the option."""

    code = "bad_option"


def is_loopback(bind: str) -> bool:
    """True when ``bind`` only accepts connections from this machine (``127.x``, ``::1``, ``localhost``).

    ``0.0.0.0``, ``::`` and any other address or host name count as reachable from outside.
    """
    if bind.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind.strip().strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs; times in seconds, sizes in bytes.

    Attributes:
        bind: address to listen on; a non-loopback one needs ``api_key``.
        port: TCP port; 0 lets the OS choose (tests).
        model: the Whisper model, a hub id or a local directory
        (:meth:`gpu_transcribe_engine.engine.WhisperEngine.load`).
        revision: the hub revision, or ``None``.
        device: ``auto``, ``cpu`` or ``cuda``.
        decode_loop: ``auto``, ``eager`` or ``compiled``
            (:func:`gpu_transcribe_engine.compiled_decoding.resolve_decode_loop`: ``auto`` is ``eager``
            until the compiled loop has run on a GPU).
        api_key: the bearer key every route but ``/livez``, ``/health`` and ``GET /`` needs; ``None``: none.
        max_upload_bytes: a request body larger than this is refused with 413 (``--max-upload-mb`` x 2**20).
        max_queue: transcriptions waiting at most; one more is refused with 429.
        max_batch_requests: requests handed to the engine in one call at most.
        max_call_audio_s: seconds of audio handed to the engine in one call at most (a longer request
            still goes alone).
        batch_wait_s: after the first request arrives at an idle consumer, wait this long for more to share
            its batches (0: take what is queued at that moment; Ray Serve's ``batch_wait_timeout_s``).
        jobs_dir: where async jobs keep their files (``gpu_transcribe_api.jobs``); ``None``: a temporary
        directory.
        job_ttl_s: finished jobs are removed after this long.
        idle_stop_s: run ``poweroff_command`` after this long without an API request; ``None``: never.
        max_lifetime_s: run ``poweroff_command`` this long after start-up in any case; ``None``: never.
        poweroff_command: the command (argv) that powers the machine off.
        upload_dir: where uploads are spooled while they are decoded; ``None``: the system's temp directory.
        webhook_secret: the Standard Webhooks secret (``whsec_`` + base64) that signs job callbacks; never in
            ``repr``. ``None``: read from ``webhook_secret_file`` (``gpu_transcribe_api.job_service``).
        webhook_secret_file: the file holding that secret (``--webhook-secret-file``), created (mode 0600)
            with a new secret if missing; ``None``: a new secret in ``<jobs_dir>/webhook-secret``.
        allow_private_callbacks: job callbacks may go to loopback, private, link-local and other non-public
            addresses (``--allow-private-callbacks``); off: refused (``gpu_transcribe_api.webhooks``).
        max_pending_jobs: async jobs accepted and not finished at most; one more is refused with 429.
        max_pending_bytes: their uploads' bytes at most; a job that would go over is refused with 429
            (at least ``max_upload_bytes``, or a large upload could never be accepted).
        min_free_disk_bytes: a job is refused (507) when storing its upload would leave less free space
            than this on the jobs directory's file system; 0: no floor.
    """

    bind: str = "127.0.0.1"
    port: int = 8000
    model: str = DEFAULT_MODEL
    revision: str | None = None
    device: str = "auto"
    decode_loop: str = "auto"
    api_key: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_queue: int = DEFAULT_MAX_QUEUE
    max_batch_requests: int = DEFAULT_MAX_BATCH_REQUESTS
    max_call_audio_s: float = DEFAULT_MAX_CALL_AUDIO_S
    batch_wait_s: float = 0.0
    jobs_dir: Path | None = None
    job_ttl_s: float = DEFAULT_JOB_TTL_S
    idle_stop_s: float | None = None
    max_lifetime_s: float | None = None
    poweroff_command: tuple[str, ...] = field(default_factory=lambda: tuple(DEFAULT_POWEROFF_COMMAND.split()))
    upload_dir: Path | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_secret_file: Path | None = None
    allow_private_callbacks: bool = False
    max_pending_jobs: int = DEFAULT_MAX_PENDING_JOBS
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES
    min_free_disk_bytes: int = DEFAULT_MIN_FREE_DISK_BYTES

    def checked(self) -> ServerConfig:
        """Return this config, or raise for a value the server cannot start with.

        Raises:
            ServerConfigError: a non-loopback ``bind`` without ``api_key``; an empty key; a port outside
                0..65535; a non-positive size, queue, batch or time; ``max_pending_bytes`` under
                ``max_upload_bytes``; a negative disk floor; an unknown device or decoding loop; an empty
                power-off command; a ``--model`` path that is not a directory; a webhook secret file that
                holds no usable secret. The message names the option and what to do.
        """
        if self.api_key is not None and not self.api_key.strip():
            raise ServerConfigError("the API key is empty; put the key in --api-key-file or $" + API_KEY_ENV)
        if self.api_key is None and not is_loopback(self.bind):
            raise ServerConfigError(
                f"--bind {self.bind} accepts connections from other machines, and no API key is set; "
                f"give --api-key-file FILE or set ${API_KEY_ENV}, or bind 127.0.0.1"
            )
        if not 0 <= self.port <= 65535:
            raise ServerConfigError(f"--port: {self.port} is outside 0..65535")
        if looks_like_path(self.model) and not Path(self.model).expanduser().is_dir():
            raise ServerConfigError(
                f"--model {self.model}: no such directory; pass a directory holding a Whisper checkpoint, "
                "or a Hugging Face model id such as KBLab/kb-whisper-small"
            )
        if self.device not in DEVICES:
            raise ServerConfigError(f"--device: {self.device!r} is not one of {', '.join(DEVICES)}")
        if self.decode_loop not in DECODE_LOOPS:
            raise ServerConfigError(
                f"--decode-loop: {self.decode_loop!r} is not one of {', '.join(DECODE_LOOPS)}"
            )
        positive = {
            "--max-upload-mb": self.max_upload_bytes,
            "--max-queue": self.max_queue,
            "max_batch_requests": self.max_batch_requests,
            "max_call_audio_s": self.max_call_audio_s,
            "job_ttl_s": self.job_ttl_s,
            "--max-pending-jobs": self.max_pending_jobs,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ServerConfigError(f"{name}: {value} must be more than 0")
        for name, maybe in (("--idle-stop-min", self.idle_stop_s), ("--max-lifetime-h", self.max_lifetime_s)):
            if maybe is not None and maybe <= 0:
                raise ServerConfigError(f"{name}: must be more than 0 (leave it out for no limit)")
        if self.webhook_secret_file is not None and self.webhook_secret_file.exists():
            from gpu_transcribe_api.webhooks import check_secret

            try:
                check_secret(self.webhook_secret_file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise ServerConfigError(
                    f"--webhook-secret-file {self.webhook_secret_file}: {exc}; put a secret made by `python "
                    "-c 'import gpu_transcribe_api.webhooks as w; print(w.generate_secret())'` there, "
                    "or remove the file for a new one"
                ) from None
        if self.max_pending_bytes < self.max_upload_bytes:
            raise ServerConfigError(
                f"--max-pending-gb {self.max_pending_bytes / GIB:g} is less than --max-upload-mb "
                f"{self.max_upload_bytes / MIB:g}: no upload that size could be accepted; raise it"
            )
        if self.min_free_disk_bytes < 0:
            floor_gib = self.min_free_disk_bytes / GIB
            raise ServerConfigError(f"--min-free-disk-gb {floor_gib:g} must be 0 or more")
        if self.batch_wait_s < 0:
            raise ServerConfigError(f"batch_wait_s: {self.batch_wait_s} must be 0 or more")
        if not self.poweroff_command:
            raise ServerConfigError(
                f"${POWEROFF_COMMAND_ENV} is empty; unset it for {DEFAULT_POWEROFF_COMMAND}"
            )
        return self

    def with_env(self, env: dict[str, str] | None = None) -> ServerConfig:
        """This config with ``$GPU_TRANSCRIBE_API_KEY`` (when no key is set; empty counts as unset) and
        ``$GPU_TRANSCRIBE_POWEROFF_COMMAND`` (split as a shell would, no shell run) applied.

        Args:
            env: the environment; ``os.environ`` if ``None``.
        """
        env = dict(os.environ) if env is None else env
        key = self.api_key if self.api_key is not None else (env.get(API_KEY_ENV) or None)
        command = self.poweroff_command
        if POWEROFF_COMMAND_ENV in env:
            command = tuple(shlex.split(env[POWEROFF_COMMAND_ENV]))
        return replace(self, api_key=key.strip() if key is not None else None, poweroff_command=command)


def read_api_key(path: Path) -> str:
    """The key in ``path``: its first line, stripped.

    Raises:
        ServerConfigError: the file cannot be read, or its first line is empty.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ServerConfigError(f"--api-key-file {path}: cannot read it ({reason})") from exc
    lines = text.strip().splitlines()
    key = lines[0].strip() if lines else ""
    if not key:
        raise ServerConfigError(f"--api-key-file {path}: the file is empty; put the key on its first line")
    return key
