"""The work of a run on a connected host, shared by cloud runs and ``run --host``.

On the host, in as few SSH round trips as possible: find the engine and make a private run directory, push
the audio (SFTP), run ``python -m gpu_transcribe_engine transcribe`` with every argument quoted, pass its
JSON events on, and
pull each file's outputs as soon as the engine reports it done (so a lost instance keeps what finished).
``run --host`` (:func:`run_on_host`) does this on an existing machine with no EC2 call at all.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpu_transcribe.common import new_run_id
from gpu_transcribe.errors import EngineError, InputError, RemoteCommandError, SettingsError, SSHError
from gpu_transcribe.run.engine_runner import (
    ENGINE_STARTED,
    EngineRequest,
    EngineRun,
    EventCollector,
    FileOutcome,
)
from gpu_transcribe.run.inputs import AudioInput, collect_audio, validate_options
from gpu_transcribe.run.outputs import Destinations, check_existing, check_output_dirs, output_destinations
from gpu_transcribe.run.request import CloudRunRequest, CloudRunResult, FileResult, Phases, RunCallbacks
from gpu_transcribe_engine.options import TranscribeOptions

if TYPE_CHECKING:
    from gpu_transcribe.aws.s3 import UploadedObject
    from gpu_transcribe.correct.config import CorrectionConfig, CorrectionResult
    from gpu_transcribe.settings import Settings
    from gpu_transcribe.ssh import SSHSession, SSHTarget


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
#: removes the run directory. The engine ends on SIGTERM (Python's default handler). The PID file is
#: written before the engine starts, so an engine that is running is always found.
_STOP_AND_REMOVE = """if [ -f "$1/engine.pid" ]; then kill -TERM "$(cat "$1/engine.pid")" 2>/dev/null; fi
rm -rf -- "$1"
"""


def parse_host(text: str, identity_file: Path | None, known_hosts_file: Path | None) -> SSHTarget:
    """The SSH target of ``--host user@address[:port]`` (``[v6]:port`` for IPv6).

    Args:
        text: what the user typed.
        identity_file: the private key to log in with (``--identity``), required.
        known_hosts_file: the OpenSSH known_hosts file holding the host's key (``--known-hosts``, default
            ``~/.ssh/known_hosts``): the key is never trusted on first use.

    Raises:
        SettingsError: not of that form, or ``--identity`` missing.
    """
    from gpu_transcribe.aws.ec2.instances import parse_host_port
    from gpu_transcribe.ssh import SSHTarget

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
    return SSHTarget(
        host=host, username=user, port=port, identity_file=identity_file.expanduser(), known_hosts_file=known
    )


@dataclass(frozen=True)
class Job:
    """The files of a run with everything checked before anything is created or paid for.

    Attributes:
        files: the usable audio, in input order.
        problems: paths that could not be used, and inputs passed over because an output exists (policy
            ``refuse``), one error each.
        destinations: per file, format -> local output path.
        options: the validated transcription options.
        formats: the validated formats.
        model: the model the engine loads (Hugging Face id or a directory on the host).
        revision: its revision, or ``None``.
    """

    files: tuple[AudioInput, ...]
    problems: tuple[InputError, ...]
    destinations: tuple[Destinations, ...]
    options: TranscribeOptions
    formats: tuple[str, ...]
    model: str
    revision: str | None

    @classmethod
    def prepare(cls, request: CloudRunRequest) -> Job:
        """Check options and formats, find the audio, place the outputs, pass over the inputs whose outputs
        exist (``request.existing``) and prove the output directories writable.

        Raises:
            SettingsError: a bad option. InputError: two inputs would write the same output.
            OutputError: an output directory cannot be written.
        """
        options, formats = validate_options(request.options, request.formats)
        collected = collect_audio(request.paths)
        destinations = output_destinations(collected.files, formats, request.output_dir)
        existing = check_existing(collected.files, destinations, request.existing)
        if existing.todo:
            check_output_dirs([destinations[i] for i in existing.todo], request.output_dir)
        return cls(
            tuple(collected.files[i] for i in existing.todo),
            collected.problems + existing.refused,
            tuple(destinations[i] for i in existing.todo),
            options,
            formats,
            request.model,
            request.revision,
        )


@dataclass
class RunState:
    """What a run has achieved so far, per file index; updated as results arrive, so that a lost instance
    keeps what finished and the relaunch knows what is left."""

    outcomes: dict[int, FileOutcome] = field(default_factory=dict)
    outputs: dict[int, dict[str, Path]] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)
    uploads: dict[int, tuple[UploadedObject, ...]] = field(default_factory=dict)
    engine_runs: list[EngineRun] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    corrections: dict[int, CorrectionResult] = field(default_factory=dict)

    def unfinished(self, file_count: int) -> list[int]:
        """The indices of files without an outcome yet."""
        return [i for i in range(file_count) if i not in self.outcomes]

    def result(self, run_id: str, job: Job, phases: Phases, **fields: Any) -> CloudRunResult:
        """The :class:`CloudRunResult`; ``fields`` sets ``instances``, ``host``, ``upload_error``..."""
        files = tuple(
            FileResult(
                audio=audio,
                outcome=self.outcomes.get(i),
                outputs=self.outputs.get(i, {}),
                uploads=self.uploads.get(i, ()),
                attempts=self.attempts.get(i, 0),
                correction=self.corrections.get(i),
            )
            for i, audio in enumerate(job.files)
        )
        defaults: dict[str, Any] = {"instances": (), "host": None}
        return CloudRunResult(
            run_id=run_id,
            input_problems=job.problems,
            files=files,
            engine_runs=tuple(self.engine_runs),
            phases_s=dict(phases.seconds),
            notes=tuple(self.notes),
            **(defaults | fields),
        )


@dataclass(frozen=True)
class _EngineSetup:
    python: str
    model: str
    env: tuple[str, ...]
    run_dir: str


def correct_finished(
    config: CorrectionConfig | None, job: Job, state: RunState, callbacks: RunCallbacks
) -> None:
    """``--correct``: correct every finished file's transcript through Bedrock (here, after the pull) and add
    the ``.corrected.*`` files to its outputs as ``corrected.<fmt>`` (so they are uploaded and listed). A
    Bedrock failure is recorded in ``state.corrections``, never raised. Nothing happens without ``config``."""
    if config is None:
        return
    from gpu_transcribe.correct.correct import correct_outputs

    indices = sorted(state.outputs)
    results = correct_outputs(
        [state.outputs[i] for i in indices],
        job.formats,
        config,
        on_progress=lambda line: callbacks.progress("correct", line),
    )
    for index, result in zip(indices, results, strict=True):
        state.corrections[index] = result
        state.outputs[index] |= {f"corrected.{fmt}": path for fmt, path in result.outputs.items()}


def build_engine_wheel(stack: contextlib.ExitStack, callbacks: RunCallbacks, phases: Phases) -> Path:
    """Build this version's wheel for ``--update-engine`` (about 1-4 s) in a temporary directory that
    ``stack`` removes."""
    from gpu_transcribe.build_ami.wheel import build_wheel

    callbacks.progress("update-engine", "building this version's wheel for --update-engine")
    directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu-transcribe-wheel-"))
    with phases.timed("plan"):
        return build_wheel(Path(directory))


@dataclass
class HostWork:
    """The work of one run over SSH, on one host after another (a relaunch gives a new host).

    Attributes:
        job: the files and options.
        state: what finished so far (updated in place).
        callbacks: progress reporting.
        phases: the phase clock (push, transcribe, pull, update_engine).
        remote_prefix: where the image installed the engine (``PREFIX/venv/bin/python``).
        wheel: with ``--update-engine``, this version's wheel, installed on each host first.
    """

    job: Job
    state: RunState
    callbacks: RunCallbacks
    phases: Phases
    remote_prefix: str
    wheel: Path | None = None

    def run(self, ssh: SSHSession, indices: Sequence[int], run_id: str, *, remove_run_dir: bool) -> EngineRun:
        """Push ``indices``' audio, run the engine, pull each file's outputs as it finishes; with
        ``remove_run_dir``, remove the host's run directory at the end (stopping the engine first if the
        work was interrupted while it ran).

        Raises:
            SSHError (incl. TransferError, RemoteCommandError), EngineError, OutputError.
        """
        setup = self._engine_setup(ssh, run_id, len(indices))
        engine_running = False
        try:
            if self.wheel is not None:
                self._update_engine(ssh, self.wheel, setup.run_dir)
            remote_audio = [
                posixpath.join(setup.run_dir, "in", str(n), self.job.files[index].path.name)
                for n, index in enumerate(indices)
            ]
            self._push(ssh, indices, remote_audio)
            engine_running = True  # until it returns: an interrupt or a failed pull leaves it running
            try:
                engine_run = self._transcribe(ssh, setup, indices, remote_audio)
            except (RemoteCommandError, EngineError):
                engine_running = False  # it ended (killed), or the connection is gone
                raise
            engine_running = False
            return engine_run
        finally:
            # On an existing host (--host) the audio must not stay behind (an instance is terminated anyway).
            if remove_run_dir and not ssh.closed:
                script = _STOP_AND_REMOVE if engine_running else 'rm -rf -- "$1"'
                with contextlib.suppress(SSHError):
                    ssh.run(["sh", "-c", script, "sh", setup.run_dir], check=False)

    def _engine_setup(self, ssh: SSHSession, run_id: str, file_count: int) -> _EngineSetup:
        """Prepare the host in one command: find the engine (``PREFIX/venv/bin/python``), make a private run
        directory (``mktemp -d`` under ``/tmp``, mode 0700) with ``in/0 .. in/N-1``, and read the manifest:
        when it says the image caches the model asked for, the engine loads that copy offline.

        Raises:
            EngineError: ``not_installed`` when the interpreter is missing.
            SSHError: the command failed.
        """
        python = posixpath.join(self.remote_prefix, "venv", "bin", "python")
        manifest_path = posixpath.join(self.remote_prefix, "manifest.json")
        template = f"/tmp/gpu-transcribe-{run_id}-XXXXXX"
        probe = ssh.run(
            ["sh", "-c", _SETUP_SCRIPT, "sh", python, manifest_path, template, str(file_count)], check=False
        )
        if probe.returncode == 3:
            raise EngineError(
                "not_installed",
                f"{ssh.target}: no engine at {python}: the host was not provisioned by build-ami "
                f"(ami/provision.py --prefix {self.remote_prefix}); set remote_prefix to where it is",
            )
        run_dir, _, manifest_text = probe.stdout.partition("\n")
        if probe.returncode != 0 or not run_dir.startswith("/tmp/gpu-transcribe-"):
            raise SSHError(
                f"{ssh.target}: could not prepare a run directory (exit status {probe.returncode}: "
                f"{probe.stderr_tail.strip() or run_dir!r})"
            )
        try:
            manifest = json.loads(manifest_text) if manifest_text.strip() else {}
        except json.JSONDecodeError:
            manifest = {}
        if not isinstance(manifest, dict):
            manifest = {}
        cached = manifest.get("model_path")
        revision = self.job.revision
        same_revision = revision is None or manifest.get("revision") in (revision, None, "")
        if cached and manifest.get("model") == self.job.model and same_revision:
            offline = ("HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1")
            return _EngineSetup(python, str(cached), offline, run_dir)
        return _EngineSetup(python, self.job.model, (), run_dir)

    def _update_engine(self, ssh: SSHSession, wheel: Path, run_dir: str) -> None:
        """``--update-engine``: push this version's wheel and install it into the image's engine environment
        (``--no-deps``: the image has the dependencies; seconds, no download).

        Raises:
            SSHError, EngineError: the push or the install failed (the install's stderr tail in the message).
        """
        from gpu_transcribe.build_ami.wheel import update_engine_argv

        self.callbacks.progress("update-engine", f"installing {wheel.name} on {ssh.target} (--update-engine)")
        started = time.monotonic()
        remote_wheel = posixpath.join(run_dir, wheel.name)
        ssh.push([(wheel, remote_wheel)])
        result = ssh.run(update_engine_argv(self.remote_prefix, remote_wheel), check=False)
        self.phases.add("update_engine", time.monotonic() - started)
        if result.returncode != 0:
            tail = result.stderr_tail.strip().splitlines()
            raise EngineError(
                "update_failed",
                f"{ssh.target}: installing {wheel.name} into {self.remote_prefix}/venv failed "
                f"({tail[-1] if tail else f'exit status {result.returncode}'}); build a new image with "
                "gpu-transcribe build-ami",
                result.stderr_tail,
            )

    def _push(self, ssh: SSHSession, indices: Sequence[int], remote_audio: Sequence[str]) -> None:
        files, callbacks = self.job.files, self.callbacks
        for index in indices:
            self.state.attempts[index] = self.state.attempts.get(index, 0) + 1
        total_bytes = sum(files[i].size_bytes for i in indices)
        if callbacks.on_push_start is not None:
            callbacks.on_push_start(len(indices), total_bytes)
        callbacks.progress("push", f"pushing {len(indices)} file(s), {total_bytes / 1e6:.1f} MB")
        with self.phases.timed("push"):
            ssh.push(
                [(files[i].path, r) for i, r in zip(indices, remote_audio, strict=True)],
                on_progress=callbacks.on_push_progress,
            )

    def _transcribe(
        self, ssh: SSHSession, setup: _EngineSetup, indices: Sequence[int], remote_audio: Sequence[str]
    ) -> EngineRun:
        """Run the engine on the pushed audio, pulling each file's outputs as the engine reports it done."""
        job, state, callbacks = self.job, self.state, self.callbacks
        engine_request = EngineRequest(
            audio=tuple(remote_audio),
            formats=job.formats,
            options=job.options,
            model=setup.model,
            revision=job.revision,
            out_dir=None,
            device="auto",
        )
        # The engine records its PID (exec keeps it), so an interrupted run can stop it on the host.
        pid_file = posixpath.join(setup.run_dir, "engine.pid")
        env = ["env", *setup.env] if setup.env else []
        argv = ["sh", "-c", _ENGINE_WRAPPER, "sh", pid_file, *env, *engine_request.argv(setup.python)]
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
                formats = [f for f in job.formats if f in outputs]
                callbacks.progress("pull", f"pulling {job.files[index].path.name}'s {', '.join(formats)}")
                started = time.monotonic()
                written = ssh.pull([(outputs[f], job.destinations[index][f]) for f in formats])
                pull_s += time.monotonic() - started
                state.outputs[index] = dict(zip(formats, written, strict=True))
            state.outcomes[index] = collector.completed[n]

        collector = EventCollector(list(remote_audio), on_event)
        if callbacks.on_engine_event is not None:
            callbacks.on_engine_event({"event": ENGINE_STARTED, "time": time.time(), "files": len(indices)})
        callbacks.progress("transcribe", f"running the engine on {ssh.target}")
        started = time.monotonic()
        try:
            result = ssh.run(argv, on_stdout_line=collector.feed_line, check=False)
        except RemoteCommandError as exc:
            if ssh.closed:
                raise  # the connection went: the instance session asks EC2 whether the instance was lost
            tail = exc.stderr_tail.strip().splitlines()
            last = tail[-1] if tail else "no message"
            raise EngineError(
                "crashed", f"the engine on {ssh.target} was killed by a signal ({last})", exc.stderr_tail
            ) from exc
        finally:
            self.phases.add("transcribe", time.monotonic() - started - pull_s)
            self.phases.add("pull", pull_s)
        engine_run = collector.finish(result.returncode, result.stderr_tail)
        state.engine_runs.append(engine_run)
        return engine_run


def run_on_host(
    request: CloudRunRequest, settings: Settings, callbacks: RunCallbacks | None = None
) -> CloudRunResult:
    """``run --host``: the work on an existing machine (no EC2 call), then the S3 upload. The host must have
    the engine at ``settings.remote_prefix`` (``ami/provision.py`` installs it there).

    Raises:
        SettingsError, InputError, OutputError: before connecting.
        HostKeyError, SSHTimeoutError, SSHError: connecting failed.
        EngineError: the engine is missing or crashed.
        InterruptedRunError: SIGINT/SIGTERM/SIGHUP (exit status 130/143/129).
    """
    from gpu_transcribe.common import utc_now
    from gpu_transcribe.instance.lifecycle import TeardownGuard
    from gpu_transcribe.run.upload import upload_outputs
    from gpu_transcribe.ssh import connect

    assert request.host is not None
    callbacks = callbacks or RunCallbacks()
    phases = Phases()
    with phases.timed("plan"):
        job = Job.prepare(request)
        bucket = settings.require_s3_bucket() if request.upload and job.files else None
    run_id = new_run_id(started_at := utc_now())
    state = RunState()
    with contextlib.ExitStack() as stack:
        wheel = build_engine_wheel(stack, callbacks, phases) if request.update_engine and job.files else None
        if job.files:
            work = HostWork(job, state, callbacks, phases, settings.remote_prefix, wheel)
            sessions: list[SSHSession] = []

            def close() -> None:
                for ssh in sessions:
                    ssh.close()

            with TeardownGuard(close, on_signal=callbacks.on_signal):
                callbacks.progress("ssh", f"connecting to {request.host}")
                with phases.timed("ssh_ready"):
                    sessions.append(connect(request.host, deadline_s=60.0))
                work.run(sessions[0], range(len(job.files)), run_id, remove_run_dir=True)
    correct_finished(request.correct, job, state, callbacks)
    upload_error = upload_outputs(
        settings, bucket, run_id, started_at, request, job, state, callbacks, phases
    )
    return state.result(run_id, job, phases, host=str(request.host), upload_error=upload_error)
