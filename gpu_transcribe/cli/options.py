"""The options shared by several commands, and ``serve``'s, each declared once as a ``typing.Annotated``
alias.

The command modules import this module as ``opt`` and type their parameters with these (``region: opt.Region =
None``), so an option shared by several commands (``--region``, ``--aws-profile``, ``--dry-run``,
``--instance-type``, ``--json``...) has one spelling and one help text. An option of one command family is
declared in that family's module (``run``'s in :mod:`gpu_transcribe.cli.run`). Importing this module imports
typer and nothing heavy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gpu_transcribe_engine.options import DEFAULT_LANGUAGE

# --- options used by several commands --------------------------------------------------------------------

Region = Annotated[
    str | None, typer.Option("--region", metavar="REGION", help="AWS region (setting: region).")
]
Profile = Annotated[
    str | None,
    typer.Option(
        "--aws-profile",
        metavar="PROFILE",
        help="Named AWS profile from ~/.aws/config (setting: aws_profile).",
    ),
]
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Only show what would be done (the plan, prices and tags, or what would be removed); "
        "launch, create and remove nothing.",
    ),
]
InstanceType = Annotated[
    list[str] | None,
    typer.Option(
        "--instance-type",
        "-t",
        metavar="TYPE",
        help="Instance type, repeatable, in order of preference; default: the instance_types setting.",
    ),
]
Revision = Annotated[
    str | None,
    typer.Option("--revision", metavar="REV", help="Model revision (branch, tag or commit)."),
]

Json = Annotated[
    bool, typer.Option("--json", help="Print the result as JSON on stdout (for scripts) instead of a table.")
]
Language = Annotated[
    str | None,
    typer.Option(
        "--language",
        "-l",
        metavar="CODE",
        help=f"Language code (sv, en...) or 'auto' to detect. Default: setting language, {DEFAULT_LANGUAGE}.",
    ),
]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace outputs that already exist.")]
PipelineOption = Annotated[
    str | None,
    typer.Option(
        "--pipeline",
        metavar="NAME",
        help="The pipeline's name (default: 'default'). Found from $GPU_TRANSCRIBE_PIPELINE_CONFIG or "
        "/etc/gpu-transcribe/pipeline.json (on a worker) if present, else from its stack's outputs.",
    ),
]
# --- serve -----------------------------------------------------------------------------------------------

Bind = Annotated[
    str,
    typer.Option(
        "--bind",
        metavar="ADDRESS",
        help="Address to listen on. Anything but loopback (127.0.0.1, ::1) needs an API key.",
    ),
]
Port = Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port to listen on.")]
ServeModel = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        metavar="ID_OR_DIR",
        help="Whisper model: a Hugging Face id or a local model directory.",
    ),
]
ServeDevice = Annotated[str, typer.Option("--device", help="auto (cuda if torch sees a GPU), cpu or cuda.")]
ApiKeyFile = Annotated[
    Path | None,
    typer.Option(
        "--api-key-file",
        metavar="FILE",
        help="File whose first line is the bearer key every API call must send. "
        "Default: $GPU_TRANSCRIBE_API_KEY; neither: no key (loopback only).",
    ),
]
MaxUploadMb = Annotated[
    float, typer.Option("--max-upload-mb", min=0.001, help="Largest upload accepted, in MiB (larger: 413).")
]
MaxQueue = Annotated[
    int, typer.Option("--max-queue", min=1, help="Transcriptions waiting at most; one more is refused (429).")
]
IdleStopMin = Annotated[
    float | None,
    typer.Option(
        "--idle-stop-min",
        min=0.001,
        help="Power the machine off after this many minutes without an API request "
        "(command: $GPU_TRANSCRIBE_POWEROFF_COMMAND, default shutdown -P now).",
    ),
]
MaxLifetimeH = Annotated[
    float | None,
    typer.Option(
        "--max-lifetime-h",
        min=0.001,
        help="Power the machine off this many hours after start-up in any case.",
    ),
]
JobsDir = Annotated[
    Path | None,
    typer.Option(
        "--jobs-dir",
        metavar="DIR",
        help="Where async jobs (/v1/jobs) keep their audio and results (mode 0700); default: a new "
        "temporary directory.",
    ),
]
JobTtlH = Annotated[
    float, typer.Option("--job-ttl-h", min=0.001, help="Hours a finished job's result is kept, then removed.")
]
WebhookSecretFile = Annotated[
    Path | None,
    typer.Option(
        "--webhook-secret-file",
        metavar="FILE",
        help="The Standard Webhooks secret (whsec_...) that signs job callbacks; created (mode 0600) if "
        "missing. Default: a new secret in the jobs directory.",
    ),
]
AllowPrivateCallbacks = Annotated[
    bool,
    typer.Option(
        "--allow-private-callbacks",
        help="Let job callbacks go to loopback, private and link-local addresses (a receiver on this machine "
        "or its network); off, a callback_url whose host resolves to any such address is refused.",
    ),
]
MaxPendingJobs = Annotated[
    int,
    typer.Option(
        "--max-pending-jobs",
        min=1,
        help="Async jobs accepted and not finished at most; one more is refused (429, Retry-After).",
    ),
]
MaxPendingGb = Annotated[
    float,
    typer.Option(
        "--max-pending-gb",
        min=0.001,
        help="Their uploads on disk at most, GiB; a job that would go over is refused (429, Retry-After).",
    ),
]
MinFreeDiskGb = Annotated[
    float,
    typer.Option(
        "--min-free-disk-gb",
        min=0,
        help="Refuse a job (507) when storing it would leave less free disk than this (GiB) in the jobs "
        "directory; 0: no floor.",
    ),
]
