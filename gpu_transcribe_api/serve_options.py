"""The options of ``gpu-transcribe serve`` and ``python -m gpu_transcribe_api``, declared once.

:data:`SERVE_OPTIONS` lists each option (flags, type, default in the option's unit, help, range);
``python -m gpu_transcribe_api`` builds its argparse parser from it (:mod:`gpu_transcribe_api.__main__`) and
``gpu-transcribe serve`` its Typer command (:mod:`gpu_transcribe.cli.serve`), so both offer the same options
with the same defaults. :func:`config_from_options` turns the parsed values into the checked
:class:`~gpu_transcribe_api.config.ServerConfig`; the defaults come from that config's constants.

This module imports nothing heavy (no argparse, Typer, FastAPI or torch), so the command line can import it
at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu_transcribe_api.config import (
    API_KEY_ENV,
    DEFAULT_JOB_TTL_S,
    DEFAULT_MAX_PENDING_BYTES,
    DEFAULT_MAX_PENDING_JOBS,
    DEFAULT_MAX_QUEUE,
    DEFAULT_MAX_UPLOAD_BYTES,
    DEFAULT_MIN_FREE_DISK_BYTES,
    DEFAULT_POWEROFF_COMMAND,
    GIB,
    MIB,
    POWEROFF_COMMAND_ENV,
    ServerConfig,
    read_api_key,
)
from gpu_transcribe_engine.options import DECODE_LOOPS, DEFAULT_MODEL, DEVICES

_DEFAULTS = ServerConfig()


@dataclass(frozen=True)
class ServeOption:
    """One command-line option of the server.

    Attributes:
        name: the parsed value's name (the Python parameter), ``max_upload_mb``.
        flags: the option strings, long first: ``("--model", "-m")``.
        type: ``str``, ``int``, ``float``, ``Path`` or ``bool`` (a flag, off by default).
        default: the default in the option's unit (MiB, hours...); ``None``: not set.
        help: one or two sentences for ``--help``.
        metavar: the value's name in ``--help`` (``FILE``), or ``None`` for the parser's own.
        minimum: the smallest value accepted, or ``None``.
        maximum: the largest value accepted, or ``None``.
        choices: the values accepted, or ``None`` for any.
    """

    name: str
    flags: tuple[str, ...]
    type: type
    default: Any
    help: str
    metavar: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None


SERVE_OPTIONS: tuple[ServeOption, ...] = (
    ServeOption(
        "bind",
        ("--bind",),
        str,
        _DEFAULTS.bind,
        "Address to listen on. Anything but loopback (127.0.0.1, ::1) needs an API key.",
        metavar="ADDRESS",
    ),
    ServeOption("port", ("--port",), int, _DEFAULTS.port, "TCP port to listen on.", minimum=0, maximum=65535),
    ServeOption(
        "model",
        ("--model", "-m"),
        str,
        DEFAULT_MODEL,
        "Whisper model: a Hugging Face id or a local model directory.",
        metavar="ID_OR_DIR",
    ),
    ServeOption(
        "revision", ("--revision",), str, None, "Model revision (branch, tag or commit).", metavar="REV"
    ),
    ServeOption(
        "device",
        ("--device",),
        str,
        _DEFAULTS.device,
        "auto (cuda if torch sees a GPU), cpu or cuda.",
        choices=DEVICES,
    ),
    ServeOption(
        "decode_loop",
        ("--decode-loop",),
        str,
        _DEFAULTS.decode_loop,
        "auto (= eager), eager, or compiled (CUDA: a static cache and a compiled decoding step; "
        "compiling takes a while at the first requests; not yet measured on a GPU).",
        choices=DECODE_LOOPS,
    ),
    ServeOption(
        "api_key_file",
        ("--api-key-file",),
        Path,
        None,
        f"File whose first line is the bearer key every API call must send. Default: ${API_KEY_ENV}; "
        "neither: no key (loopback only).",
        metavar="FILE",
    ),
    ServeOption(
        "max_upload_mb",
        ("--max-upload-mb",),
        float,
        DEFAULT_MAX_UPLOAD_BYTES / MIB,
        "Largest upload accepted, in MiB (larger: 413).",
        minimum=0.001,
    ),
    ServeOption(
        "max_queue",
        ("--max-queue",),
        int,
        DEFAULT_MAX_QUEUE,
        "Transcriptions waiting at most; one more is refused (429).",
        minimum=1,
    ),
    ServeOption(
        "idle_stop_min",
        ("--idle-stop-min",),
        float,
        None,
        "Power the machine off after this many minutes without an API request "
        f"(command: ${POWEROFF_COMMAND_ENV}, default {DEFAULT_POWEROFF_COMMAND}).",
        minimum=0.001,
    ),
    ServeOption(
        "max_lifetime_h",
        ("--max-lifetime-h",),
        float,
        None,
        "Power the machine off this many hours after start-up in any case.",
        minimum=0.001,
    ),
    ServeOption(
        "jobs_dir",
        ("--jobs-dir",),
        Path,
        None,
        "Where async jobs (/v1/jobs) keep their audio and results (mode 0700); default: a new temporary "
        "directory.",
        metavar="DIR",
    ),
    ServeOption(
        "job_ttl_h",
        ("--job-ttl-h",),
        float,
        DEFAULT_JOB_TTL_S / 3600,
        "Hours a finished job's result is kept, then removed.",
        minimum=0.001,
    ),
    ServeOption(
        "webhook_secret_file",
        ("--webhook-secret-file",),
        Path,
        None,
        "The Standard Webhooks secret (whsec_...) that signs job callbacks; created (mode 0600) if missing. "
        "Default: a new secret in the jobs directory.",
        metavar="FILE",
    ),
    ServeOption(
        "allow_private_callbacks",
        ("--allow-private-callbacks",),
        bool,
        False,
        "Let job callbacks go to loopback, private and link-local addresses (a receiver on this machine or "
        "its network); off, a callback_url whose host resolves to any such address is refused.",
    ),
    ServeOption(
        "max_pending_jobs",
        ("--max-pending-jobs",),
        int,
        DEFAULT_MAX_PENDING_JOBS,
        "Async jobs accepted and not finished at most; one more is refused (429, Retry-After).",
        minimum=1,
    ),
    ServeOption(
        "max_pending_gb",
        ("--max-pending-gb",),
        float,
        DEFAULT_MAX_PENDING_BYTES / GIB,
        "Their uploads on disk at most, GiB; a job that would go over is refused (429, Retry-After).",
        minimum=0.001,
    ),
    ServeOption(
        "min_free_disk_gb",
        ("--min-free-disk-gb",),
        float,
        DEFAULT_MIN_FREE_DISK_BYTES / GIB,
        "Refuse a job (507) when storing it would leave less free disk than this (GiB) in the jobs "
        "directory; 0: no floor.",
        minimum=0,
    ),
)
"""Every option of the server, in ``--help`` order."""


def config_from_options(values: Mapping[str, Any], env: dict[str, str] | None = None) -> ServerConfig:
    """The checked :class:`ServerConfig` for parsed option values.

    Args:
        values: one value per :data:`SERVE_OPTIONS` name, in the option's unit (a missing name takes its
            default).
        env: the environment for :meth:`ServerConfig.with_env` (the key, the power-off command);
            ``os.environ`` if ``None``.

    Raises:
        ServerConfigError: a value the server cannot start with, or an unreadable ``--api-key-file``; the
            one-line message names the option.
    """
    given = {option.name: values.get(option.name, option.default) for option in SERVE_OPTIONS}
    idle_stop_min, max_lifetime_h = given["idle_stop_min"], given["max_lifetime_h"]
    config = ServerConfig(
        bind=given["bind"],
        port=given["port"],
        model=given["model"],
        revision=given["revision"],
        device=given["device"],
        decode_loop=given["decode_loop"],
        api_key=read_api_key(given["api_key_file"]) if given["api_key_file"] is not None else None,
        max_upload_bytes=int(given["max_upload_mb"] * MIB),
        max_queue=given["max_queue"],
        idle_stop_s=idle_stop_min * 60 if idle_stop_min is not None else None,
        max_lifetime_s=max_lifetime_h * 3600 if max_lifetime_h is not None else None,
        jobs_dir=given["jobs_dir"],
        job_ttl_s=given["job_ttl_h"] * 3600,
        webhook_secret_file=given["webhook_secret_file"],
        allow_private_callbacks=given["allow_private_callbacks"],
        max_pending_jobs=given["max_pending_jobs"],
        max_pending_bytes=int(given["max_pending_gb"] * GIB),
        min_free_disk_bytes=int(given["min_free_disk_gb"] * GIB),
    )
    return config.with_env(env).checked()
