"""What ``gpu-transcribe run`` (cloud or ``--host``) is asked, what it reports while it works, and what it
returns: the request, the callbacks, the per-file and per-run results, the dry-run plan and the phase clock.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpu_transcribe.common import ProgressEvent, no_progress
from gpu_transcribe.errors import (
    GpuTranscribeError,
    InputError,
    InstanceLostError,
    TeardownError,
    UploadError,
)
from gpu_transcribe.instance.session import InstanceUsage
from gpu_transcribe.run.engine_runner import EngineRun, FileOutcome
from gpu_transcribe.run.inputs import AudioInput
from gpu_transcribe_engine.options import TranscribeOptions

if TYPE_CHECKING:
    from gpu_transcribe.aws.ec2.images import OurImage
    from gpu_transcribe.aws.ec2.launch_plan import LaunchPlan
    from gpu_transcribe.aws.s3 import UploadedObject
    from gpu_transcribe.correct.config import CorrectionConfig, CorrectionResult
    from gpu_transcribe.run.outputs import ExistingPolicy
    from gpu_transcribe.ssh import SSHTarget

#: The phases whose seconds the summary reports, in order.
PHASES: tuple[str, ...] = ("plan", "launch", "ssh_ready", "push", "transcribe", "pull", "upload", "teardown")


@dataclass(frozen=True)
class CloudRunRequest:
    """What ``gpu-transcribe run`` was asked to do.

    Attributes:
        paths: files and directories as the user typed them.
        output_dir: where every output goes, or ``None`` for beside each input.
        formats: output formats (``txt``, ``json``, ``srt``, ``vtt``).
        options: transcription options (validated when the run starts).
        model: Hugging Face id (the image must have it cached) or a directory on the host.
        revision: model revision, or ``None``.
        upload: upload the outputs to S3 (``--no-s3`` turns it off).
        upload_audio: upload the audio files too.
        update_engine: run on an image of another version, installing this version's wheel first.
        host: run on this existing machine instead of launching one (``--host``; its host key must be in
            ``known_hosts_file``).
        existing: what to do with an input whose output exists (see
            :data:`~gpu_transcribe.run.outputs.ExistingPolicy`); checked before anything is launched.
        correct: with ``--correct``, how to correct each finished transcript through Bedrock, here, after the
            outputs are pulled and before the upload (the ``.corrected.*`` files are uploaded too); ``None``
            for no correction.
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
    host: SSHTarget | None = None
    existing: ExistingPolicy = "refuse"
    correct: CorrectionConfig | None = None


@dataclass(frozen=True)
class FileResult:
    """One input file's outcome.

    Attributes:
        audio: the local input.
        outcome: the engine's outcome (``None`` if it never ran to a result: lost twice, or interrupted).
        outputs: format -> local path written; with ``--correct``, also ``corrected.<fmt>`` -> the
            corrected file.
        uploads: the S3 objects written for it (outputs, and the audio with ``--upload-audio``).
        attempts: on how many instances it ran.
        correction: with ``--correct``, what the correction did (``None`` without it, or when the file was
            not transcribed).
    """

    audio: AudioInput
    outcome: FileOutcome | None
    outputs: dict[str, Path] = field(default_factory=dict)
    uploads: tuple[UploadedObject, ...] = ()
    attempts: int = 1
    correction: CorrectionResult | None = None

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
        """No problem fails the run (:func:`~gpu_transcribe.run.outputs.problems_fail_run`), every file
        transcribed and written, uploaded if asked, nothing left behind."""
        from gpu_transcribe.run.outputs import problems_fail_run

        return (
            not problems_fail_run(self.input_problems)
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
        estimate_s: the run length the estimate assumes.
        estimated_cost_usd: the first option's price for ``estimate_s`` (60 s minimum), ``None`` if no price.
        s3_url: where the outputs would go, or ``None`` with ``--no-s3`` (or no bucket set).
        missing: what a real run would stop at, each naming the setting or cloud problem: no bucket set, no
            credentials, no image... (``plan`` is ``None`` when the launch could not be planned).
    """

    files: tuple[AudioInput, ...]
    input_problems: tuple[InputError, ...]
    plan: LaunchPlan | None
    image: OurImage | None
    estimate_s: float
    estimated_cost_usd: float | None
    s3_url: str | None
    missing: tuple[GpuTranscribeError, ...] = ()


@dataclass
class RunCallbacks:
    """Where the run reports progress (the CLI renders it; tests record it). Every callback is optional.

    Attributes:
        on_progress: a :class:`~gpu_transcribe.common.ProgressEvent` per step (``stage`` names it).
        on_engine_event: each engine JSON event (``gpu_transcribe_engine.protocol``), plus ``engine_started``.
        on_push_start: ``(file count, total bytes)`` before the audio goes up.
        on_push_progress: ``(local path, bytes sent since the last call)`` while pushing.
        on_signal: ``(signal name, during teardown)`` when SIGINT/SIGTERM/SIGHUP arrives.
    """

    on_progress: Callable[[ProgressEvent], None] = no_progress
    on_engine_event: Callable[[dict[str, Any]], None] | None = None
    on_push_start: Callable[[int, int], None] | None = None
    on_push_progress: Callable[[Path, int], None] | None = None
    on_signal: Callable[[str, bool], None] | None = None

    def progress(self, stage: str, message: str) -> None:
        """Report one step: ``on_progress(ProgressEvent(stage, message))``."""
        self.on_progress(ProgressEvent(stage, message))


class Phases:
    """Wall seconds per phase of :data:`PHASES` (and ``update_engine``), summed over instances."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)

    def add(self, name: str, seconds: float) -> None:
        """Add ``seconds`` to phase ``name``."""
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Add the wall time of the ``with`` block to phase ``name``."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.add(name, time.monotonic() - started)
