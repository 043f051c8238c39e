"""The command line's options and arguments, each declared once as a ``typing.Annotated`` alias.

:mod:`gpu_transcribe.cli.main` imports this module as ``opt`` and types its parameters with these (``region:
opt.Region = None``), so an option shared by several commands (``--region``, ``--aws-profile``,
``--dry-run``, ``--instance-type``, ``--model``...) has one spelling and one help text. Importing this module
imports typer and nothing heavy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gpu_transcribe_engine.options import DEFAULT_FORMATS, DEFAULT_LANGUAGE, DEFAULT_MODEL

#: ``--format``'s default: the engine's default formats, comma-separated.
DEFAULT_FORMATS_ARG = ",".join(DEFAULT_FORMATS)

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
Model = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        metavar="ID_OR_DIR",
        help=f"Whisper model: a Hugging Face id, or with --local a model directory. "
        f"Default: setting model ({DEFAULT_MODEL}).",
    ),
]
ImageModel = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        metavar="ID",
        help="Whisper model to cache in the image: a Hugging Face id. "
        f"Default: setting model ({DEFAULT_MODEL}).",
    ),
]
ServerModel = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        metavar="ID",
        help=f"Whisper model the server loads: a Hugging Face id. Default: setting model ({DEFAULT_MODEL}).",
    ),
]
WorkerModel = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        metavar="ID_OR_DIR",
        help="Whisper model: a Hugging Face id or a model directory on this machine. Default: the "
        f"pipeline's model, else setting model ({DEFAULT_MODEL}).",
    ),
]
Revision = Annotated[
    str | None,
    typer.Option("--revision", metavar="REV", help="Model revision (branch, tag or commit)."),
]

Json = Annotated[
    bool, typer.Option("--json", help="Print the result as JSON on stdout (for scripts) instead of a table.")
]

# --- run ---------------------------------------------------------------------------------------------------

Paths = Annotated[
    list[Path],
    typer.Argument(
        metavar="AUDIO...",
        help="Audio files, or directories searched for audio (wav, flac, mp3, ogg, opus, m4a...).",
        show_default=False,
    ),
]
OutputDir = Annotated[
    Path | None,
    typer.Option(
        "--output-dir", "-o", metavar="DIR", help="Write every output here. Default: beside each input file."
    ),
]
Format = Annotated[
    str,
    typer.Option(
        "--format", "-f", metavar="LIST", help="Output formats, comma-separated, any of: txt,json,srt,vtt."
    ),
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
BatchSize = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        min=1,
        max=256,
        help="Windows decoded together (batched algorithm). Default: per device.",
    ),
]
Algorithm = Annotated[
    str,
    typer.Option(
        "--algorithm",
        help="auto (= batched), batched (silence-cut windows decoded together: faster, and more accurate in "
        "the README's measurements) or sequential (OpenAI's long-form algorithm, conditioned on the "
        "previous text).",
    ),
]
BeamSize = Annotated[int, typer.Option("--beam-size", min=1, max=16, help="Beam search width; 1 is greedy.")]
Task = Annotated[str, typer.Option("--task", help="transcribe, or translate (into English).")]
WordTimestamps = Annotated[
    bool,
    typer.Option("--word-timestamps", help="Time every word: the JSON gains words per segment (batched)."),
]
Prompt = Annotated[
    str | None,
    typer.Option(
        "--prompt", metavar="TEXT", help="Text that conditions the decoding: names, jargon, spelling, style."
    ),
]
MaxLineWidth = Annotated[
    int | None,
    typer.Option(
        "--max-line-width",
        min=1,
        max=1000,
        help="Subtitle characters per line (srt/vtt; default 42 when "
        "any subtitle limit is set). Unset: one cue per segment.",
    ),
]
MaxLineCount = Annotated[
    int | None,
    typer.Option("--max-line-count", min=1, max=20, help="Subtitle lines per cue (default 2 with a limit)."),
]
MaxCueDuration = Annotated[
    float | None,
    typer.Option(
        "--max-cue-duration", min=0.5, max=600, help="Subtitle seconds per cue (default 7 with a limit)."
    ),
]
Device = Annotated[
    str | None,
    typer.Option(
        "--device",
        help="With --local only: auto (cuda if torch sees a GPU), cpu or cuda.",
        show_default=False,
    ),
]
Local = Annotated[bool, typer.Option("--local", help="Transcribe on this machine; no cloud.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace outputs that already exist.")]
SkipExisting = Annotated[
    bool,
    typer.Option(
        "--skip-existing",
        help="Pass over inputs whose outputs already exist. Default (neither): report them and pass over.",
    ),
]
NoS3 = Annotated[bool, typer.Option("--no-s3", help="Do not upload the outputs to S3.")]
Correct = Annotated[
    bool,
    typer.Option(
        "--correct",
        help="Also correct each transcript with a language model on Amazon Bedrock (correct_* settings) and "
        "write it beside the raw one as STEM.corrected.FORMAT; adds json to --format.",
    ),
]
UploadAudio = Annotated[
    bool, typer.Option("--upload-audio", help="Also store the audio files in S3 (not with --no-s3).")
]
UpdateEngine = Annotated[
    bool,
    typer.Option(
        "--update-engine", help="Use an image of another version; install this version on it first."
    ),
]
Host = Annotated[
    str | None,
    typer.Option(
        "--host",
        metavar="USER@HOST[:PORT]",
        help="Run on an existing machine, user@address[:port]; no EC2 at all.",
    ),
]
Identity = Annotated[
    Path | None,
    typer.Option("--identity", "-i", metavar="KEY_FILE", help="With --host: the private key to log in with."),
]
KnownHosts = Annotated[
    Path | None,
    typer.Option(
        "--known-hosts", help="With --host: known_hosts file with the host's key (~/.ssh/known_hosts)."
    ),
]
Market = Annotated[str | None, typer.Option("--market", help="spot-then-on-demand, spot or on-demand.")]
Bucket = Annotated[str | None, typer.Option("--s3-bucket", metavar="BUCKET", help="Bucket for the outputs.")]

# --- config show -----------------------------------------------------------------------------------------

SettingsJson = Annotated[
    bool,
    typer.Option("--json", help='Print {"setting": {"value": ..., "source": ...}} as JSON, for scripts.'),
]

# --- cleanup ---------------------------------------------------------------------------------------------

AllOwners = Annotated[bool, typer.Option("--all-owners", help="Include other callers' resources.")]
OlderThan = Annotated[
    str | None,
    typer.Option(
        "--older-than",
        metavar="AGE",
        help="Only resources at least this old (2h, 90m, 0); default: max lifetime + 10 minutes.",
    ),
]
RunId = Annotated[
    str | None, typer.Option("--run-id", metavar="RUN", help="Only this run (any age unless --older-than).")
]

# --- build-ami, images prune -----------------------------------------------------------------------------

BaseAmi = Annotated[
    str | None,
    typer.Option(
        "--base-ami",
        metavar="AMI",
        help="AMI to build on; default: the newest AWS Deep Learning Base OSS Nvidia Driver GPU AMI "
        "(Ubuntu 22.04), from its SSM public parameter.",
    ),
]
Spot = Annotated[
    bool, typer.Option("--spot", help="Launch the builder on spot (then on-demand); default on-demand.")
]
Wheel = Annotated[
    Path | None,
    typer.Option(
        "--wheel", metavar="FILE", help="A built gpu-transcribe wheel; default: build one from this checkout."
    ),
]
LoginUser = Annotated[str, typer.Option("--login-user", metavar="USER", help="The base AMI's SSH user.")]
ProvisionArg = Annotated[
    list[str] | None,
    typer.Option(
        "--provision-arg",
        hidden=True,
        help="Extra argument for ami/provision.py on the builder (repeatable; tests: --skip-system-packages, "
        "--model-dir, --lock requirements/cpu.lock, --python, --device cpu, --no-require-cuda).",
    ),
]
Keep = Annotated[
    int, typer.Option("--keep", min=0, help="Images to keep per model (the newest available ones).")
]

# --- submit, jobs, worker (the pipeline) --------------------------------------------------------------------

PipelineOption = Annotated[
    str | None,
    typer.Option(
        "--pipeline",
        metavar="NAME",
        help="The pipeline's name (default: 'default'). Found from $GPU_TRANSCRIBE_PIPELINE_CONFIG or "
        "/etc/gpu-transcribe/pipeline.json (on a worker) if present, else from its stack's outputs.",
    ),
]
AudioFiles = Annotated[
    list[Path], typer.Argument(metavar="AUDIO...", help="Audio files, one job each.", show_default=False)
]
SubmitOutputDir = Annotated[
    Path | None,
    typer.Option(
        "--output-dir",
        "-o",
        metavar="DIR",
        help="With --wait: write the outputs here. Default: the current directory.",
    ),
]
JobFormat = Annotated[
    str | None,
    typer.Option(
        "--format",
        "-f",
        metavar="LIST",
        help="Output formats, comma-separated (txt,json,srt,vtt); default: the pipeline's.",
    ),
]
JobModel = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        metavar="ID",
        help="The model the job needs; default: whatever the pipeline's workers run.",
    ),
]
JobWebhookUrl = Annotated[
    str | None,
    typer.Option(
        "--webhook-url",
        metavar="URL",
        help="POST the jobs' events (succeeded, failed, dead-lettered) here, signed (Standard Webhooks).",
    ),
]
JobCorrect = Annotated[
    bool,
    typer.Option(
        "--correct",
        help="Also correct the transcripts with Bedrock (the workers' correct_* settings): "
        "STEM.corrected.FORMAT beside the raw outputs; adds json to --format.",
    ),
]
Wait = Annotated[
    bool,
    typer.Option("--wait", help="Follow the jobs to the end (progress on stderr) and download the outputs."),
]
WaitTimeout = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        metavar="SECONDS",
        min=1,
        help="With --wait: stop waiting after SECONDS, download what succeeded and exit 1 naming the jobs "
        "not finished (default: wait until every job ends).",
    ),
]
JobIds = Annotated[
    list[str] | None,
    typer.Argument(metavar="JOB_ID...", help="Job ids; default: every job.", show_default=False),
]
JobIdsRequired = Annotated[
    list[str], typer.Argument(metavar="JOB_ID...", help="Job ids.", show_default=False)
]
JobStatus = Annotated[
    str | None,
    typer.Option(
        "--status",
        help="Only jobs with this status: queued, running, succeeded, failed, interrupted, dead_lettered.",
    ),
]
Since = Annotated[
    str | None,
    typer.Option("--since", help="Only jobs created since: an age (90m, 2h, 3d) or an ISO 8601 time."),
]
FetchDir = Annotated[
    Path, typer.Option("--output-dir", "-o", metavar="DIR", help="Where to write the outputs.")
]
WorkerDevice = Annotated[str, typer.Option("--device", help="auto (cuda if torch sees a GPU), cpu or cuda.")]
ExitWhenIdle = Annotated[
    float | None,
    typer.Option(
        "--exit-when-idle",
        min=0,
        help="Exit after this many seconds with nothing received (inside the pipeline's group: leave it).",
    ),
]
WorkerMaxLifetimeH = Annotated[
    float | None,
    typer.Option(
        "--max-lifetime-h",
        min=0,
        help="Stop receiving this many hours after the start, finish the batch in hand and exit (inside the "
        "pipeline's group: leave it, as when idle). The fleet's unit passes 12. Default: no limit.",
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

# --- server ----------------------------------------------------------------------------------------------

ServerName = Annotated[
    str, typer.Option("--name", help="The server's name: one server per name, each with its own state file.")
]
ServerMarket = Annotated[
    str | None,
    typer.Option("--market", help="spot, on-demand or spot-then-on-demand; default: the market setting."),
]
ServerPort = Annotated[
    int, typer.Option("--port", min=1, max=65535, help="The server's port on the instance's 127.0.0.1.")
]
ServerIdleStopMin = Annotated[
    int,
    typer.Option(
        "--idle-stop-min", min=1, help="The server powers the instance off after this many minutes idle."
    ),
]
ServerMaxLifetimeH = Annotated[
    float,
    typer.Option(
        "--max-lifetime-h",
        min=0.01,
        max=24.0,
        help="... and this many hours after it started, whatever happens (at most 24).",
    ),
]
LocalPort = Annotated[
    int, typer.Option("--local-port", min=1, max=65535, help="The port on this machine's 127.0.0.1.")
]
LogLines = Annotated[int, typer.Option("--lines", "-n", min=1, help="How many of the last log lines.")]

# --- pipeline --------------------------------------------------------------------------------------------

PipelineName = Annotated[
    str | None,
    typer.Option(
        "--pipeline",
        metavar="NAME",
        help="The pipeline's name (1-20 lowercase letters, digits, hyphens). Default: default.",
    ),
]
#: ``pipeline deploy|status|destroy|webhook-secret --name``: the old spelling of ``--pipeline``, hidden and
#: kept working (with a warning).
PipelineNameOld = Annotated[str | None, typer.Option("--name", metavar="NAME", hidden=True)]
MaxWorkers = Annotated[
    int | None,
    typer.Option(
        "--max-workers", min=1, max=1000, help="Most GPU workers at once (the fleet is 0..N). Default: 4."
    ),
]
InstanceTypes = Annotated[
    str | None,
    typer.Option(
        "--instance-types",
        metavar="TYPES",
        help="GPU instance types the workers may use, comma-separated (spot, price-capacity-optimized). "
        "Default: the instance_types setting.",
    ),
]
PipelineBucket = Annotated[
    str | None,
    typer.Option(
        "--s3-bucket",
        metavar="BUCKET",
        help="Use this existing bucket (its incoming/ prefix) instead of creating one; it is never deleted.",
    ),
]
Image = Annotated[
    str | None,
    typer.Option(
        "--image",
        metavar="AMI",
        help="The workers' AMI. Default: image_id, else the newest image of ours (build-ami).",
    ),
]
DeleteData = Annotated[
    bool,
    typer.Option(
        "--delete-data",
        help="Also empty and delete the bucket the pipeline created (audio, transcripts). Default: keep it.",
    ),
]
WebhookUrl = Annotated[
    str | None,
    typer.Option(
        "--webhook-url",
        metavar="URL",
        help="POST a signed event (Standard Webhooks) here when a job succeeds, fails or is dead-lettered. "
        "http(s); private, loopback and link-local addresses are refused.",
    ),
]
PipelineCorrect = Annotated[
    bool,
    typer.Option(
        "--correct",
        help="Correct files uploaded without submit with Bedrock (the correct_model_id setting's model, "
        "checked now) and let the workers call that model.",
    ),
]
AllowPrivateWebhooks = Annotated[
    bool,
    typer.Option(
        "--allow-private-webhooks",
        help="Allow webhook URLs at private, loopback or link-local addresses (checked again at delivery).",
    ),
]
SecretFile = Annotated[
    Path,
    typer.Option(
        "--secret-file",
        exists=True,
        dir_okay=False,
        help="The signing secret (whsec_...); several lines: any of them (a rotation).",
    ),
]
HeadersFile = Annotated[
    Path | None,
    typer.Option(
        "--headers-file",
        metavar="FILE",
        exists=True,
        dir_okay=False,
        help="The request's headers (Name: value lines); without it BODY_FILE is a whole saved request.",
    ),
]
BodyFile = Annotated[
    Path | None,
    typer.Argument(
        exists=True,
        dir_okay=False,
        help="The body, or a saved request (headers, a blank line, the body). Default: stdin.",
    ),
]
