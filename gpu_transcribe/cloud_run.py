"""``gpu-transcribe run``: launch, push over SSH, transcribe, pull, upload to S3, always terminate.

Orchestration only: no printing, every step reports through :class:`RunCallbacks`. The cloud layer
(:mod:`gpu_transcribe.aws`) makes every AWS call and the SSH layer (:mod:`gpu_transcribe.ssh`) every SSH
call. The flow (issue 4):

1. Plan: inputs, output directories, the S3 bucket, then preflight, the image and the launch plan
   (nothing is created; ``--dry-run`` stops here).
2. Launch (spot in the cheapest zone, other zones, then on-demand) and wait for SSH.
3. Connect with the run's client key, checking the host key injected at launch; keep the heartbeat going.
4. Push the audio (SFTP, several files at once, size and SHA-256 verified on the instance).
5. Run the engine (``python -m remote transcribe``, every argument quoted) and pass its JSON events on;
   each file's outputs are pulled as soon as the engine reports it done, so a lost instance keeps them.
6. Pull what is left (atomic writes), upload to S3, tear down (always, exactly once) and report.

A spot interruption (the instance found ``shutting-down``/``terminated`` with reason
``Server.SpotInstanceTermination`` by a watcher thread, or the connection lost and EC2 then saying so) is
reported, and the unfinished files run again once on a new instance, the lost zone's spot tried last.

``--host user@address[:port]`` runs steps 3-6 on an existing machine: no EC2 call at all.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpu_transcribe import __version__
from gpu_transcribe.common import billed_seconds, cost_usd, new_run_id, no_progress, utc_now
from gpu_transcribe.engine_runner import ENGINE_STARTED, EngineRequest, EngineRun, EventCollector, FileOutcome
from gpu_transcribe.errors import (
    EngineError,
    GpuTranscribeError,
    InputError,
    InstanceLostError,
    OutputError,
    RemoteCommandError,
    SettingsError,
    SSHError,
    TeardownError,
    UploadError,
)
from gpu_transcribe.inputs import AudioInput, collect_audio
from gpu_transcribe.local import prepare_output_dir, validate_options
from remote.options import TranscribeOptions

if TYPE_CHECKING:
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.images import OurImage
    from gpu_transcribe.aws.launch import LaunchPlan
    from gpu_transcribe.aws.models import LaunchResult
    from gpu_transcribe.aws.s3 import UploadedObject
    from gpu_transcribe.common import ProgressEvent
    from gpu_transcribe.settings import Settings
    from gpu_transcribe.ssh import SSHSession

#: The phases whose seconds the summary reports, in order.
PHASES: tuple[str, ...] = ("plan", "launch", "ssh_ready", "push", "transcribe", "pull", "upload", "teardown")

#: Seconds assumed for a whole run in the ``--dry-run`` cost estimate: the product's target for a 20-minute
#: file (about 90 s to boot and reach SSH, about a minute to transcribe, transfers and teardown). A target,
#: not a measurement: the summary of a real run reports the billed seconds.
ESTIMATE_RUN_S = 300.0

#: Seconds between the watcher's ``DescribeInstances`` calls while the instance works.
ALIVE_CHECK_S = 10.0

#: Test seam: where the heartbeat file is on the host (default: the path the dead-man switch watches).
HEARTBEAT_PATH_ENV = "GPU_TRANSCRIBE_HEARTBEAT_PATH"

#: How many times the unfinished files may run again on a new instance after a spot interruption.
MAX_RELAUNCHES = 1


# --- request and result ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostSpec:
    """An existing machine for ``--host user@address[:port]``.

    Attributes:
        username: login name.
        host: DNS name or IP address.
        port: sshd port.
        identity_file: the private key to log in with (``--identity``).
        known_hosts_file: the OpenSSH known_hosts file holding the host's key (``--known-hosts``, default
            ``~/.ssh/known_hosts``): the key is never trusted on first use.
    """

    username: str
    host: str
    port: int
    identity_file: Path
    known_hosts_file: Path

    @classmethod
    def parse(cls, text: str, identity_file: Path | None, known_hosts_file: Path | None) -> HostSpec:
        """Parse ``user@address[:port]`` (``[v6]:port`` for IPv6).

        Raises:
            SettingsError: not of that form, or ``--identity`` missing.
        """
        from gpu_transcribe.aws.instances import parse_host_port

        user, sep, address = text.partition("@")
        try:
            host, port = parse_host_port(address)
        except ValueError:
            host, port = "", 0
        if not sep or not user or not host:
            raise SettingsError(
                "host", "--host", f"--host {text!r}: expected user@address[:port], e.g. ubuntu@gpu-box:22", ""
            )
        if identity_file is None:
            raise SettingsError(
                "identity", "--identity", "--host needs --identity FILE: the private key to log in with", ""
            )
        known = known_hosts_file or Path("~/.ssh/known_hosts").expanduser()
        return cls(user, host, port, identity_file.expanduser(), known)

    def __str__(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"


@dataclass(frozen=True)
class CloudRunRequest:
    """What ``gpu-transcribe run`` was asked to do.

    Attributes:
        paths: files and directories as the user typed them.
        output_dir: where every output goes, or ``None`` for beside each input.
        formats: output formats (``txt``, ``json``, ``srt``, ``vtt``).
        options: transcription options (validated here).
        model: Hugging Face id (the image must have it cached) or a directory on the host.
        revision: model revision, or ``None``.
        upload: upload the outputs to S3 (``--no-s3`` turns it off).
        upload_audio: upload the audio files too.
        update_engine: run on an image of another version, installing this version's wheel first.
        host: run on this existing machine instead of launching one.
    """

    paths: tuple[str, ...]
    output_dir: Path | None
    formats: tuple[str, ...]
    options: TranscribeOptions
    model: str
    revision: str | None = None
    upload: bool = True
    upload_audio: bool = False
    update_engine: bool = False
    host: HostSpec | None = None


@dataclass(frozen=True)
class InstanceUsage:
    """One instance the run used, and what it cost.

    Attributes:
        instance_id: e.g. ``i-0123456789abcdef0``.
        instance_type: e.g. ``g4dn.xlarge``.
        zone: its availability zone.
        market: ``spot`` or ``on-demand``.
        price_usd_per_hour: the spot price when ranked, or the on-demand price; ``None`` if unknown.
        billed_s: seconds from launch to confirmed termination, at least 60 (EC2 per-second billing).
            See :func:`gpu_transcribe.common.billed_seconds`.
        interrupted: EC2 reclaimed it (spot interruption) or it was otherwise lost.
    """

    instance_id: str
    instance_type: str
    zone: str
    market: str
    price_usd_per_hour: float | None
    billed_s: float
    interrupted: bool = False

    @property
    def cost_usd(self) -> float | None:
        """``price_usd_per_hour * billed_s / 3600``, or ``None`` if the price is unknown."""
        return cost_usd(self.price_usd_per_hour, self.billed_s)


@dataclass(frozen=True)
class FileResult:
    """One input file's outcome.

    Attributes:
        audio: the local input.
        outcome: the engine's outcome (``None`` if it never ran to a result: lost twice, or interrupted).
        outputs: format -> local path written.
        uploads: the S3 objects written for it (outputs, and the audio with ``--upload-audio``).
        attempts: on how many instances it ran.
    """

    audio: AudioInput
    outcome: FileOutcome | None
    outputs: dict[str, Path] = field(default_factory=dict)
    uploads: tuple[UploadedObject, ...] = ()
    attempts: int = 1

    @property
    def ok(self) -> bool:
        """Transcribed and every output written locally."""
        return self.outcome is not None and self.outcome.ok and bool(self.outputs)


@dataclass(frozen=True)
class CloudRunResult:
    """The outcome of a run.

    Attributes:
        run_id: the run's id (tags, S3 keys); with a relaunch, the first instance's.
        input_problems: paths that could not be used (the others went on).
        files: one result per usable input, in input order.
        engine_runs: the engine's result on each host it finished on.
        instances: every instance used, in order (empty with ``--host``).
        host: ``user@address:port`` for a ``--host`` run, else ``None``.
        phases_s: seconds spent in each of :data:`PHASES` (summed over relaunches).
        notes: things the user should know that are not errors (a relaunch, a bucket not checkable...).
        upload_error: the S3 upload failed (the local files are kept), or ``None``.
        teardown_error: something could not be removed (``gpu-transcribe cleanup`` can retry), or ``None``.
        lost: the instance losses (spot interruptions) that happened.
    """

    run_id: str
    input_problems: tuple[InputError, ...]
    files: tuple[FileResult, ...]
    engine_runs: tuple[EngineRun, ...]
    instances: tuple[InstanceUsage, ...]
    host: str | None
    phases_s: dict[str, float]
    notes: tuple[str, ...] = ()
    upload_error: UploadError | None = None
    teardown_error: TeardownError | None = None
    lost: tuple[InstanceLostError, ...] = ()

    @property
    def failed_files(self) -> tuple[FileResult, ...]:
        """The files without a complete local transcript."""
        return tuple(f for f in self.files if not f.ok)

    @property
    def ok(self) -> bool:
        """Every path usable, every file transcribed and written, uploaded if asked, nothing left behind."""
        return (
            not self.input_problems
            and not self.failed_files
            and self.upload_error is None
            and self.teardown_error is None
        )

    @property
    def cost_usd(self) -> float | None:
        """Total instance cost, ``None`` if any price is unknown."""
        costs = [i.cost_usd for i in self.instances]
        return None if any(c is None for c in costs) else sum(c for c in costs if c is not None)


@dataclass(frozen=True)
class DryRunPlan:
    """What a run would do (``--dry-run``): nothing was created.

    Attributes:
        files: the audio that would be pushed.
        input_problems: unusable paths.
        plan: the launch plan (zone order, markets, prices, tags, quota checks).
        image: the chosen image of ours, or ``None`` when ``image_id`` was set explicitly.
        estimate_s: the run length the estimate assumes (:data:`ESTIMATE_RUN_S`).
        estimated_cost_usd: the first option's price for ``estimate_s`` (60 s minimum), ``None`` if no price.
        s3_url: where the outputs would go, or ``None`` with ``--no-s3``.
    """

    files: tuple[AudioInput, ...]
    input_problems: tuple[InputError, ...]
    plan: LaunchPlan
    image: OurImage | None
    estimate_s: float
    estimated_cost_usd: float | None
    s3_url: str | None


@dataclass
class RunCallbacks:
    """Where the run reports progress (the CLI renders it; tests record it). Every callback is optional.

    Attributes:
        on_progress: a :class:`~gpu_transcribe.common.ProgressEvent` per step (``stage`` names it).
        on_engine_event: each engine JSON event (``remote.protocol``), plus ``engine_started``.
        on_push_start: ``(file count, total bytes)`` before the audio goes up.
        on_push_progress: ``(local path, bytes sent since the last call)`` while pushing.
        on_signal: ``(signal name, during teardown)`` when SIGINT/SIGTERM/SIGHUP arrives.
    """

    on_progress: Callable[[ProgressEvent], None] = no_progress
    on_engine_event: Callable[[dict[str, Any]], None] | None = None
    on_push_start: Callable[[int, int], None] | None = None
    on_push_progress: Callable[[Path, int], None] | None = None
    on_signal: Callable[[str, bool], None] | None = None


# --- helpers -------------------------------------------------------------------------------------------


class _Phases:
    """Wall seconds per phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.add(name, time.monotonic() - started)


def _progress(callbacks: RunCallbacks, phase: str, message: str) -> None:
    from gpu_transcribe.common import ProgressEvent

    callbacks.on_progress(ProgressEvent(phase, message))


def output_destinations(
    files: Sequence[AudioInput], formats: Sequence[str], output_dir: Path | None
) -> list[dict[str, Path]]:
    """Where each file's outputs go locally: ``output_dir/<stem>.<format>``, or beside the input.

    Raises:
        InputError: two inputs would write the same output (same stem into one directory); names both.
    """
    destinations: list[dict[str, Path]] = []
    owners: dict[Path, Path] = {}
    for audio in files:
        directory = output_dir if output_dir is not None else audio.path.parent
        outputs = {fmt: directory / f"{audio.path.stem}.{fmt}" for fmt in formats}
        for path in outputs.values():
            if path in owners:
                raise InputError(
                    audio.path,
                    f"{audio.path} and {owners[path]} would both write {path}; rename one, or run them "
                    "separately",
                )
            owners[path] = audio.path
        destinations.append(outputs)
    return destinations


def _check_output_dirs(destinations: Sequence[dict[str, Path]], output_dir: Path | None) -> None:
    """Prove every output directory is writable before anything is launched (and paid for)."""
    if output_dir is not None:
        prepare_output_dir(output_dir)
        return
    for directory in sorted({p.parent for d in destinations for p in d.values()}):
        try:
            prepare_output_dir(directory)
        except OutputError as exc:
            raise OutputError(
                directory,
                f"{directory}: cannot write the transcripts beside the audio ({exc.__cause__ or exc}); "
                "choose a writable directory with --output-dir",
            ) from None


@dataclass
class _Work:
    """Mutable state of one run, shared by the flow, the watcher and the teardown."""

    files: list[AudioInput]
    destinations: list[dict[str, Path]]
    outcomes: dict[int, FileOutcome] = field(default_factory=dict)
    outputs: dict[int, dict[str, Path]] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)
    engine_runs: list[EngineRun] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    uploads: dict[int, tuple[UploadedObject, ...]] = field(default_factory=dict)
    wheel: Path | None = None  # --update-engine: this version's wheel, installed on the host first
    wheel_dir: Any = None  # its TemporaryDirectory, removed with this object (or at exit)

    def build_wheel(self, phases: _Phases, callbacks: RunCallbacks) -> None:
        """Build this version's wheel for ``--update-engine`` (about 1-4 s)."""
        import tempfile

        from gpu_transcribe.wheel import build_wheel

        _progress(callbacks, "update-engine", "building this version's wheel for --update-engine")
        self.wheel_dir = tempfile.TemporaryDirectory(prefix="gpu-transcribe-wheel-")
        with phases.timed("plan"):
            self.wheel = build_wheel(Path(self.wheel_dir.name))

    def unfinished(self) -> list[int]:
        return [i for i in range(len(self.files)) if i not in self.outcomes]


class _Watcher:
    """Polls EC2 while the instance works; when it is gone, records why and closes the SSH session so the
    blocked SSH call returns at once (a spot interruption gives two minutes' notice at best)."""

    def __init__(
        self,
        ctx: AwsContext,
        instance_id: str,
        session: SSHSession,
        interval_s: float,
        callbacks: RunCallbacks,
    ) -> None:
        self._ctx, self._instance_id, self._session = ctx, instance_id, session
        self._interval_s, self._callbacks = interval_s, callbacks
        self._stop = threading.Event()
        self.lost: InstanceLostError | None = None
        self._thread = threading.Thread(target=self._loop, name="instance-watcher", daemon=True)

    def __enter__(self) -> _Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        from gpu_transcribe.aws.instances import check_alive

        while not self._stop.wait(self._interval_s):
            try:
                check_alive(self._ctx, self._instance_id)
            except InstanceLostError as exc:
                self.lost = exc
                _progress(self._callbacks, "lost", str(exc))
                self._session.close()
                return
            except GpuTranscribeError as exc:  # EC2 not answering: keep working, say so
                _progress(self._callbacks, "note", f"could not check the instance: {exc}")

    def confirm_lost(self) -> InstanceLostError | None:
        """After an SSH failure: was the instance lost? Asks EC2 once more if the watcher has not seen it."""
        from gpu_transcribe.aws.instances import check_alive

        if self.lost is None:
            try:
                check_alive(self._ctx, self._instance_id)
            except InstanceLostError as exc:
                self.lost = exc
            except GpuTranscribeError:
                pass
        return self.lost


# --- planning --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Inputs:
    files: tuple[AudioInput, ...]
    problems: tuple[InputError, ...]
    destinations: tuple[dict[str, Path], ...]
    options: TranscribeOptions
    formats: tuple[str, ...]


def _prepare_inputs(request: CloudRunRequest) -> _Inputs:
    options, formats = validate_options(request.options, request.formats)
    collected = collect_audio(request.paths)
    destinations = output_destinations(collected.files, formats, request.output_dir)
    if collected.files:
        _check_output_dirs(destinations, request.output_dir)
    return _Inputs(collected.files, collected.problems, tuple(destinations), options, formats)


def choose_image(
    ctx: AwsContext, settings: Settings, model: str, revision: str | None, *, update_engine: bool
) -> tuple[str, OurImage | None]:
    """The AMI for a run: the ``image_id`` setting, else the newest image of ours for this version and model.

    Returns:
        ``(image id, our image or None when set explicitly)``.

    Raises:
        ImageNotFoundError: no image fits; the message says to run ``gpu-transcribe build-ami``.
        CredentialsError, CloudError: listing failed.
    """
    from gpu_transcribe.aws.images import list_images, select_run_image

    if settings.image_id:
        return settings.image_id, None
    image = select_run_image(
        list_images(ctx),
        version=__version__,
        model=model,
        revision=revision,
        region=ctx.region,
        allow_older_version=update_engine,
    )
    return image.image_id, image


@dataclass(frozen=True)
class _CloudPlan:
    bucket: str | None
    ctx: AwsContext
    image: OurImage | None
    plan: LaunchPlan
    started_at: datetime


def _plan_cloud(request: CloudRunRequest, settings: Settings, callbacks: RunCallbacks) -> _CloudPlan:
    """The cloud half of planning, shared by ``run`` and ``--dry-run``: the bucket (checked), the image, the
    SSH source, the run id and the launch plan. Creates nothing."""
    from gpu_transcribe.aws.checkip import resolve_ssh_cidr
    from gpu_transcribe.aws.clients import AwsContext, s3_client
    from gpu_transcribe.aws.launch import plan_launch
    from gpu_transcribe.aws.models import LaunchSpec
    from gpu_transcribe.aws.s3 import check_bucket

    bucket = settings.require_s3_bucket() if request.upload else None
    ctx = AwsContext.from_settings(settings)
    if bucket is not None:
        note = check_bucket(s3_client(ctx), bucket)
        if note:
            _progress(callbacks, "note", note)
    image_id, image = choose_image(
        ctx, settings, request.model, request.revision, update_engine=request.update_engine
    )
    cidr = resolve_ssh_cidr(settings.ssh_cidr, settings.source("ssh_cidr"))
    started_at = utc_now()
    spec = LaunchSpec.from_settings(settings, image_id=image_id, ssh_cidr=cidr, run_id=new_run_id(started_at))
    plan = plan_launch(ctx, spec, on_progress=callbacks.on_progress, now=started_at)
    return _CloudPlan(bucket, ctx, image, plan, started_at)


def plan_run(
    request: CloudRunRequest, settings: Settings, callbacks: RunCallbacks | None = None
) -> DryRunPlan:
    """Everything ``run`` decides before launching; creates nothing (``--dry-run``).

    Raises:
        SettingsError, InputError, OutputError: a bad option, colliding outputs, an unwritable directory.
        UploadError: the bucket does not exist.
        CredentialsError, QuotaError, ImageNotFoundError, CapacityError, CloudError: from the cloud layer.
    """
    inputs = _prepare_inputs(request)
    cloud = _plan_cloud(request, settings, callbacks or RunCallbacks())
    first = cloud.plan.options[0] if cloud.plan.options else None
    price = None
    if first is not None:
        price = first.zone.spot_price_usd_per_hour if first.market == "spot" else None
        if price is None and first.zone.on_demand is not None:
            price = first.zone.on_demand.price_usd_per_hour
    return DryRunPlan(
        files=inputs.files,
        input_problems=inputs.problems,
        plan=cloud.plan,
        image=cloud.image,
        estimate_s=ESTIMATE_RUN_S,
        estimated_cost_usd=cost_usd(price, billed_seconds(ESTIMATE_RUN_S)),
        s3_url=f"s3://{cloud.bucket}/{settings.s3_prefix}/" if cloud.bucket else None,
    )


# --- the remote part (steps 3-6), shared by cloud and --host runs ----------------------------------------


@dataclass(frozen=True)
class _EngineSetup:
    python: str
    model: str
    env: tuple[str, ...]
    run_dir: str


#: One round trip to prepare the host (each SSH exec costs the host a fork and a shell): check the engine's
#: interpreter, make the run directory with one input directory per file, print it, then the manifest.
_SETUP_SCRIPT = """set -e
test -x "$1" || exit 3
dir=$(mktemp -d "$3")
i=0
while [ "$i" -lt "$4" ]; do mkdir -p "$dir/in/$i"; i=$((i + 1)); done
echo "$dir"
cat "$2" 2>/dev/null || true
"""


#: Runs the engine (its argv follows) after writing its PID to the file named first; ``exec`` keeps the PID.
_ENGINE_WRAPPER = 'echo "$$" > "$1"; shift; exec "$@"'

#: Stops a run's engine (used only while it runs: once it exited, its PID may be another process's) and
#: removes the run directory. The engine ends on SIGTERM (Python's default handler).
_STOP_AND_REMOVE = """if [ -f "$1/engine.pid" ]; then kill -TERM "$(cat "$1/engine.pid")" 2>/dev/null; fi
rm -rf -- "$1"
"""  # the PID file is written before the engine starts, so an engine that is running is always found


def _engine_setup(
    session: SSHSession, remote_prefix: str, model: str, revision: str | None, run_id: str, file_count: int
) -> _EngineSetup:
    """Prepare the host in one command: find the engine (``PREFIX/venv/bin/python``), make a private run
    directory (``mktemp -d`` under ``/tmp``, mode 0700) with ``in/0 .. in/N-1``, and read the manifest: when
    it says the image caches the model asked for, the engine loads that copy offline.

    Raises:
        EngineError: ``not_installed`` when the interpreter is missing.
        SSHError: the command failed.
    """
    python = posixpath.join(remote_prefix, "venv", "bin", "python")
    manifest_path = posixpath.join(remote_prefix, "manifest.json")
    template = f"/tmp/gpu-transcribe-{run_id}-XXXXXX"
    probe = session.run(
        ["sh", "-c", _SETUP_SCRIPT, "sh", python, manifest_path, template, str(file_count)], check=False
    )
    if probe.returncode == 3:
        raise EngineError(
            "not_installed",
            f"{session.target}: no engine at {python}: the host was not provisioned by build-ami "
            f"(ami/provision.py --prefix {remote_prefix}); set remote_prefix to where it is",
        )
    run_dir, _, manifest_text = probe.stdout.partition("\n")
    if probe.returncode != 0 or not run_dir.startswith("/tmp/gpu-transcribe-"):
        raise SSHError(
            f"{session.target}: could not prepare a run directory (exit status {probe.returncode}: "
            f"{probe.stderr_tail.strip() or run_dir!r})"
        )
    try:
        manifest = json.loads(manifest_text) if manifest_text.strip() else {}
    except json.JSONDecodeError:
        manifest = {}
    if not isinstance(manifest, dict):
        manifest = {}
    cached = manifest.get("model_path")
    same_revision = revision is None or manifest.get("revision") in (revision, None, "")
    if cached and manifest.get("model") == model and same_revision:
        return _EngineSetup(python, str(cached), ("HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1"), run_dir)
    return _EngineSetup(python, model, (), run_dir)


def _heartbeat_path() -> str:
    import os

    from gpu_transcribe.aws.userdata import HEARTBEAT_PATH

    return os.environ.get(HEARTBEAT_PATH_ENV, "").strip() or HEARTBEAT_PATH


def _update_engine(
    session: SSHSession,
    wheel: Path,
    remote_prefix: str,
    run_dir: str,
    callbacks: RunCallbacks,
    phases: _Phases,
) -> None:
    """``--update-engine``: push this version's wheel and install it into the image's engine environment
    (``--no-deps``: the image has the dependencies; seconds, no download).

    Raises:
        SSHError, EngineError: the push or the install failed (the install's stderr tail in the message).
    """
    from gpu_transcribe.wheel import update_engine_argv

    _progress(callbacks, "update-engine", f"installing {wheel.name} on {session.target} (--update-engine)")
    started = time.monotonic()
    remote_wheel = posixpath.join(run_dir, wheel.name)
    session.push([(wheel, remote_wheel)])
    result = session.run(update_engine_argv(remote_prefix, remote_wheel), check=False)
    phases.add("update_engine", time.monotonic() - started)
    if result.returncode != 0:
        tail = result.stderr_tail.strip().splitlines()
        raise EngineError(
            "update_failed",
            f"{session.target}: installing {wheel.name} into {remote_prefix}/venv failed "
            f"({tail[-1] if tail else f'exit status {result.returncode}'}); build a new image with "
            "gpu-transcribe build-ami",
            result.stderr_tail,
        )


def _work_on_host(
    session: SSHSession,
    work: _Work,
    indices: Sequence[int],
    request: CloudRunRequest,
    inputs: _Inputs,
    settings_remote_prefix: str,
    callbacks: RunCallbacks,
    phases: _Phases,
    run_id: str,
    *,
    remove_run_dir: bool,
) -> EngineRun:
    """Push ``indices``' audio, run the engine, pull each file's outputs as it finishes; with
    ``remove_run_dir``, remove the host's run directory at the end. Updates ``work`` as results arrive (so
    a lost instance keeps what finished).

    Raises:
        SSHError (incl. TransferError, RemoteCommandError), EngineError, OutputError.
    """
    setup = _engine_setup(
        session, settings_remote_prefix, request.model, request.revision, run_id, len(indices)
    )
    run_dir = setup.run_dir
    engine_running = False
    try:
        if work.wheel is not None:
            _update_engine(session, work.wheel, settings_remote_prefix, run_dir, callbacks, phases)
        remote_audio = [
            posixpath.join(run_dir, "in", str(n), work.files[index].path.name)
            for n, index in enumerate(indices)
        ]
        for index in indices:
            work.attempts[index] = work.attempts.get(index, 0) + 1
        total_bytes = sum(work.files[i].size_bytes for i in indices)
        if callbacks.on_push_start is not None:
            callbacks.on_push_start(len(indices), total_bytes)
        _progress(callbacks, "push", f"pushing {len(indices)} file(s), {total_bytes / 1e6:.1f} MB")
        with phases.timed("push"):
            session.push(
                [(work.files[i].path, r) for i, r in zip(indices, remote_audio, strict=True)],
                on_progress=callbacks.on_push_progress,
            )
        engine_request = EngineRequest(
            audio=tuple(remote_audio),
            formats=inputs.formats,
            options=inputs.options,
            model=setup.model,
            revision=request.revision,
            out_dir=None,
            device="auto",
        )
        engine_argv = engine_request.argv(setup.python)
        # The engine records its PID (exec keeps it), so an interrupted run can stop it on the host.
        pid_file = posixpath.join(run_dir, "engine.pid")
        argv = [
            "sh",
            "-c",
            _ENGINE_WRAPPER,
            "sh",
            pid_file,
            *(["env", *setup.env] if setup.env else []),
            *engine_argv,
        ]
        pull_s = 0.0

        def on_event(event: dict[str, Any]) -> None:
            nonlocal pull_s
            if callbacks.on_engine_event is not None:
                callbacks.on_engine_event(event)
            kind = event.get("event")
            if kind not in ("file_done", "file_failed"):
                return
            n = int(event["index"])
            index = indices[n]
            if kind == "file_done":
                outputs = {str(k): str(v) for k, v in event.get("outputs", {}).items()}
                formats = [f for f in inputs.formats if f in outputs]
                _progress(callbacks, "pull", f"pulling {work.files[index].path.name}'s {', '.join(formats)}")
                started = time.monotonic()
                written = session.pull([(outputs[f], work.destinations[index][f]) for f in formats])
                pull_s += time.monotonic() - started
                work.outputs[index] = dict(zip(formats, written, strict=True))
            work.outcomes[index] = collector.completed[n]

        collector = EventCollector(remote_audio, on_event)
        if callbacks.on_engine_event is not None:
            callbacks.on_engine_event({"event": ENGINE_STARTED, "time": time.time(), "files": len(indices)})
        _progress(callbacks, "transcribe", f"running the engine on {session.target}")
        started = time.monotonic()
        engine_running = True
        try:
            result = session.run(argv, on_stdout_line=collector.feed_line, check=False)
            engine_running = False
        except RemoteCommandError as exc:
            engine_running = False  # it ended (killed), or the connection is gone
            if session.closed:
                raise  # the connection went: the caller asks EC2 whether the instance was lost
            tail = exc.stderr_tail.strip().splitlines()
            last = tail[-1] if tail else "no message"
            raise EngineError(
                "crashed",
                f"the engine on {session.target} was killed by a signal ({last})",
                exc.stderr_tail,
            ) from exc
        finally:
            phases.add("transcribe", time.monotonic() - started - pull_s)
            phases.add("pull", pull_s)
        engine_run = collector.finish(result.returncode, result.stderr_tail)
        work.engine_runs.append(engine_run)
        return engine_run
    finally:
        # On an existing host (--host) the audio must not stay behind (an instance is terminated anyway);
        # if the run was interrupted while the engine ran, stop the engine too. Only then: once it exited,
        # its PID may already be another process's.
        if remove_run_dir and not session.closed:
            script = _STOP_AND_REMOVE if engine_running else 'rm -rf -- "$1"'
            with contextlib.suppress(SSHError):
                session.run(["sh", "-c", script, "sh", run_dir], check=False)


# --- the flow ----------------------------------------------------------------------------------------------


def run_on_host(
    request: CloudRunRequest, settings: Settings, callbacks: RunCallbacks | None = None
) -> CloudRunResult:
    """``run --host``: steps 3-6 on an existing machine (no EC2 call). The host must have the engine at
    ``settings.remote_prefix`` (``ami/provision.py`` installs it there).

    Raises:
        SettingsError, InputError, OutputError: before connecting.
        HostKeyError, SSHTimeoutError, SSHError: connecting failed.
        EngineError: the engine is missing or crashed.
        InterruptedRunError: SIGINT/SIGTERM/SIGHUP (exit status 130/143/129).
    """
    from gpu_transcribe.lifecycle import TeardownGuard
    from gpu_transcribe.ssh import SSHTarget, connect

    assert request.host is not None
    callbacks = callbacks or RunCallbacks()
    phases = _Phases()
    with phases.timed("plan"):
        inputs = _prepare_inputs(request)
        bucket = settings.require_s3_bucket() if request.upload and inputs.files else None
    started_at = utc_now()
    run_id = new_run_id(started_at)
    work = _Work(list(inputs.files), list(inputs.destinations))
    if request.update_engine and work.files:
        work.build_wheel(phases, callbacks)
    if inputs.files:
        host = request.host
        target = SSHTarget(
            host=host.host,
            username=host.username,
            port=host.port,
            identity_file=host.identity_file,
            known_hosts_file=host.known_hosts_file,
        )
        sessions: list[SSHSession] = []

        def close() -> None:
            for s in sessions:
                s.close()

        with TeardownGuard(close, on_signal=callbacks.on_signal):
            _progress(callbacks, "ssh", f"connecting to {target}")
            with phases.timed("ssh_ready"):
                sessions.append(connect(target, deadline_s=60.0))
            _work_on_host(
                sessions[0], work, range(len(work.files)), request, inputs, settings.remote_prefix,
                callbacks, phases, run_id, remove_run_dir=True,
            )  # fmt: skip
    upload_error = _upload(settings, bucket, run_id, started_at, work, request, callbacks, phases)
    return _result(run_id, inputs, work, [], str(request.host), phases, upload_error, None, [])


def run_cloud(
    request: CloudRunRequest,
    settings: Settings,
    callbacks: RunCallbacks | None = None,
    *,
    alive_check_s: float = ALIVE_CHECK_S,
    ssh_deadline_s: float = 300.0,
) -> CloudRunResult:
    """``gpu-transcribe run``: the whole flow on a new instance, torn down whatever happens.

    Args:
        request: what to transcribe and how.
        settings: the effective settings (region, instance types, market, bucket...).
        callbacks: progress reporting.
        alive_check_s: seconds between checks that the instance still runs (spot interruptions).
        ssh_deadline_s: seconds to wait for the instance's SSH port to answer, then again for a session.

    Returns:
        The result; check ``result.ok``. Files that failed, an upload failure and a teardown problem are
        in it, not raised, so that the summary can show everything.

    Raises:
        SettingsError, InputError, OutputError: before anything is created.
        CredentialsError, QuotaError, ImageNotFoundError, CapacityError, CloudError: planning or launching
            failed (anything created was removed).
        HostKeyError, SSHTimeoutError, SSHError, EngineError: the run failed on the instance (it was
            terminated).
        InterruptedRunError: SIGINT/SIGTERM/SIGHUP; the instance was terminated first.
    """
    callbacks = callbacks or RunCallbacks()
    phases = _Phases()
    with phases.timed("plan"):
        inputs = _prepare_inputs(request)
        if not inputs.files:
            return _result(new_run_id(), inputs, _Work([], []), [], None, phases, None, None, [])
        cloud = _plan_cloud(request, settings, callbacks)
    ctx, bucket, plan, started_at = cloud.ctx, cloud.bucket, cloud.plan, cloud.started_at
    spec = plan.spec
    run_id = spec.run_id
    work = _Work(list(inputs.files), list(inputs.destinations))
    if request.update_engine and work.files:
        work.build_wheel(phases, callbacks)
    usages: list[InstanceUsage] = []
    losses: list[InstanceLostError] = []
    teardown_error: TeardownError | None = None
    for attempt in range(MAX_RELAUNCHES + 1):
        indices = work.unfinished()
        if attempt > 0:
            lost = losses[-1]
            _progress(
                callbacks,
                "relaunch",
                f"running {len(indices)} unfinished file(s) again on a new instance "
                f"({lost.instance_id} was lost)",
            )
            spec = replace(spec, run_id=new_run_id())
            plan = _plan_after_loss(ctx, spec, usages[-1], callbacks)
        usage, lost_error, error = _one_instance(
            ctx, spec, plan, work, indices, request, inputs, settings, callbacks, phases,
            alive_check_s=alive_check_s, ssh_deadline_s=ssh_deadline_s,
        )  # fmt: skip
        if usage is not None:
            usages.append(usage)
        if isinstance(error, TeardownError):
            teardown_error = error
        elif error is not None:
            raise error
        if lost_error is None:
            break
        losses.append(lost_error)
        if not work.unfinished():
            break
    else:
        work.notes.append(
            f"{len(work.unfinished())} file(s) unfinished: the instance was lost {len(losses)} times"
        )
    upload_error = _upload(settings, bucket, run_id, started_at, work, request, callbacks, phases)
    return _result(run_id, inputs, work, usages, None, phases, upload_error, teardown_error, losses)


def _plan_after_loss(
    ctx: AwsContext, spec: Any, lost_on: InstanceUsage, callbacks: RunCallbacks
) -> LaunchPlan:
    """A fresh plan for ``spec`` with the lost instance's (spot, zone, type) tried last."""
    from gpu_transcribe.aws.launch import plan_launch

    plan = plan_launch(ctx, spec, on_progress=callbacks.on_progress)

    def same(option: Any) -> bool:
        return bool(
            option.market == "spot"
            and option.zone.zone == lost_on.zone
            and option.instance_type == lost_on.instance_type
        )

    return replace(
        plan, options=tuple([o for o in plan.options if not same(o)] + [o for o in plan.options if same(o)])
    )


def _one_instance(
    ctx: AwsContext,
    spec: Any,
    plan: LaunchPlan,
    work: _Work,
    indices: Sequence[int],
    request: CloudRunRequest,
    inputs: _Inputs,
    settings: Settings,
    callbacks: RunCallbacks,
    phases: _Phases,
    *,
    alive_check_s: float,
    ssh_deadline_s: float,
) -> tuple[InstanceUsage | None, InstanceLostError | None, BaseException | None]:
    """Launch, work, tear down: one instance. Returns its usage, a loss (spot interruption) and the error
    that ended it (``TeardownError`` if only the teardown failed; other errors are for the caller to raise
    after recording the usage)."""
    from gpu_transcribe.aws.instances import address_resolver_from_env, wait_until_ready
    from gpu_transcribe.aws.launch import launch
    from gpu_transcribe.aws.models import RunResources
    from gpu_transcribe.aws.resources import teardown
    from gpu_transcribe.lifecycle import TeardownGuard
    from gpu_transcribe.ssh import SSHTarget, connect

    state: dict[str, Any] = {"resources": RunResources(run_id=spec.run_id), "launched": None, "session": None}
    clock: dict[str, float] = {}
    error: BaseException | None = None
    lost: InstanceLostError | None = None

    def do_teardown() -> None:
        session = state["session"]
        if session is not None:
            session.close()
        _progress(
            callbacks, "teardown", f"terminating run {spec.run_id}'s instance and removing its resources"
        )
        started = time.monotonic()
        try:
            teardown(ctx, state["resources"], on_progress=callbacks.on_progress)
        finally:
            clock["terminated"] = time.monotonic()
            phases.add("teardown", clock["terminated"] - started)

    resolve = address_resolver_from_env()
    try:
        with TeardownGuard(do_teardown, on_signal=callbacks.on_signal):
            _progress(callbacks, "launch", f"launching {', '.join(spec.instance_types)} ({spec.market})")
            with phases.timed("launch"):
                launched: LaunchResult = launch(ctx, spec, plan=plan, on_progress=callbacks.on_progress)
            clock["launched"] = time.monotonic()
            state["launched"] = launched
            state["resources"] = launched.resources
            try:
                with phases.timed("ssh_ready"):
                    launched, address = wait_until_ready(
                        ctx,
                        launched,
                        resolve=resolve,
                        ssh_timeout_s=ssh_deadline_s,
                        on_progress=callbacks.on_progress,
                    )
                    state["launched"] = launched
                    target = SSHTarget(
                        host=address[0],
                        port=address[1],
                        username=launched.login_user,
                        private_key=launched.client_key.private_key_openssh,
                        host_public_key=launched.host_public_key,
                    )
                    session = connect(target, deadline_s=ssh_deadline_s)
                    state["session"] = session
            except InstanceLostError as exc:  # reclaimed while booting: the same as during the work
                if not exc.spot_interruption:
                    raise
                lost = exc
                _progress(callbacks, "lost", str(exc))
            if lost is None:
                _progress(callbacks, "ssh", f"connected to {launched.instance_id} ({session.server_version})")
                session.start_heartbeat(
                    _heartbeat_path(),
                    on_error=lambda why: _progress(callbacks, "note", f"heartbeat: {why}"),
                )
                with _Watcher(ctx, launched.instance_id, session, alive_check_s, callbacks) as watcher:
                    try:
                        _work_on_host(
                            session,
                            work,
                            indices,
                            request,
                            inputs,
                            settings.remote_prefix,
                            callbacks,
                            phases,
                            spec.run_id,
                            remove_run_dir=False,
                        )
                    except (SSHError, EngineError, OutputError) as exc:
                        lost = watcher.confirm_lost() if isinstance(exc, SSHError | EngineError) else None
                        if lost is None:
                            raise
    except TeardownError as exc:
        error = exc
    except BaseException as exc:  # recorded, re-raised by the caller once the usage is known
        error = exc
    launched = state["launched"]
    usage = None
    if launched is not None:
        end = clock.get("terminated", time.monotonic())
        usage = InstanceUsage(
            instance_id=launched.instance_id,
            instance_type=launched.instance_type,
            zone=launched.zone,
            market=launched.market,
            price_usd_per_hour=launched.price_usd_per_hour,
            billed_s=billed_seconds(end - clock.get("launched", end)),
            interrupted=lost is not None,
        )
    return usage, lost, error


def _upload(
    settings: Settings,
    bucket: str | None,
    run_id: str,
    started_at: datetime,
    work: _Work,
    request: CloudRunRequest,
    callbacks: RunCallbacks,
    phases: _Phases,
) -> UploadError | None:
    """Upload every finished file's outputs (and audio with ``--upload-audio``) under the run's date
    (``started_at``, UTC); never raises UploadError."""
    if bucket is None or not work.outputs:
        return None
    from gpu_transcribe.aws.clients import AwsContext, s3_client
    from gpu_transcribe.aws.s3 import upload_files

    client = s3_client(AwsContext.from_settings(settings))
    uploads = work.uploads
    _progress(callbacks, "upload", f"uploading to s3://{bucket}/{settings.s3_prefix}")
    with phases.timed("upload"):
        try:
            for index, outputs in sorted(work.outputs.items()):
                outcome = work.outcomes[index]
                metadata = {
                    "run-id": run_id,
                    "model": request.model,
                    "revision": request.revision or "",
                    "language": outcome.language,
                    "duration-s": f"{outcome.duration_s or 0:.2f}",
                    "source-file": work.files[index].path.name,
                    "gpu-transcribe-version": __version__,
                }
                files = list(outputs.values())
                if request.upload_audio:
                    files.append(work.files[index].path)
                uploads[index] = tuple(
                    upload_files(
                        client, files, bucket, settings.s3_prefix, run_id, started_at, metadata,
                        kms_key_id=settings.s3_kms_key_id,
                    )
                )  # fmt: skip
        except UploadError as exc:
            return exc
    return None


def _result(
    run_id: str,
    inputs: _Inputs,
    work: _Work,
    usages: list[InstanceUsage],
    host: str | None,
    phases: _Phases,
    upload_error: UploadError | None,
    teardown_error: TeardownError | None,
    losses: list[InstanceLostError],
) -> CloudRunResult:
    uploads = work.uploads
    files = tuple(
        FileResult(
            audio=audio,
            outcome=work.outcomes.get(i),
            outputs=work.outputs.get(i, {}),
            uploads=uploads.get(i, ()),
            attempts=work.attempts.get(i, 0),
        )
        for i, audio in enumerate(work.files)
    )
    return CloudRunResult(
        run_id=run_id,
        input_problems=inputs.problems,
        files=files,
        engine_runs=tuple(work.engine_runs),
        instances=tuple(usages),
        host=host,
        phases_s=dict(phases.seconds),
        notes=tuple(work.notes),
        upload_error=upload_error,
        teardown_error=teardown_error,
        lost=tuple(losses),
    )


__all__ = [
    "PHASES",
    "CloudRunRequest",
    "CloudRunResult",
    "DryRunPlan",
    "FileResult",
    "HostSpec",
    "InstanceUsage",
    "RunCallbacks",
    "choose_image",
    "output_destinations",
    "plan_run",
    "run_cloud",
    "run_on_host",
]
