"""The one exception hierarchy of the client (``gpu_transcribe``).

Every error that library code raises on purpose is a :class:`GpuTranscribeError`. The CLI maps it to one
line on stderr (``str(error)``, which names the file or setting and says what to do) and to
``error.exit_code``. Subclasses carry structured fields so that callers and tests can inspect what went
wrong without parsing messages. Library code never calls ``sys.exit``.

The engine (``remote``) has its own small hierarchy (``gpu_transcribe_engine.errors``) because it must not
import this
package; its failures reach the client as JSON events and become :class:`EngineError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class GpuTranscribeError(Exception):
    """Base of every deliberate error of gpu-transcribe.

    Attributes:
        exit_code: process exit status the CLI uses for this error (1 unless a subclass says otherwise).
    """

    exit_code: int = 1


class InputError(GpuTranscribeError):
    """A path given on the command line cannot be used (missing, empty directory, unreadable, not audio).

    Attributes:
        path: the offending path as the user gave it.
    """

    exit_code = 2

    def __init__(self, path: Path | str, message: str) -> None:
        self.path = Path(path)
        super().__init__(message)


class OutputExistsError(InputError):
    """An input was passed over because one of its outputs already exists (neither ``--overwrite`` nor
    ``--skip-existing`` given). Not a failure: reported as ``skipped:`` (the message says which flag
    replaces the output) and the run's exit status does not change; the other inputs go on.

    Attributes:
        path: the input, as found.
        existing: the output that exists.
    """

    exit_code = 1

    def __init__(self, path: Path | str, existing: Path | str) -> None:
        self.existing = Path(existing)
        super().__init__(
            path, f"{existing} exists (--overwrite replaces it; --skip-existing passes over it quietly)"
        )


class OutputError(GpuTranscribeError):
    """An output location cannot be written (unwritable directory, disk full)."""

    def __init__(self, path: Path | str, message: str) -> None:
        self.path = Path(path)
        super().__init__(message)


class OutputDirError(OutputError):
    """The ``--output-dir`` given cannot be used (a file, or not writable): a bad option, so exit status 2."""

    exit_code = 2


class SettingsError(GpuTranscribeError):
    """A setting has a bad value.

    Attributes:
        setting: the setting's name (``instance_types``, ``language``...).
        source: where the value came from (``--language``, ``GPU_TRANSCRIBE_REGION``, a TOML file path).
        allowed: what would be accepted, for the message.
    """

    exit_code = 2

    def __init__(self, setting: str, source: str, message: str, allowed: str = "") -> None:
        self.setting = setting
        self.source = source
        self.allowed = allowed
        super().__init__(message)


class EngineError(GpuTranscribeError):
    """The Whisper engine failed as a whole (model not found, crashed), locally or on the instance.

    Attributes:
        code: the engine's error code (``model_not_found``, ``crashed``...; see
        ``gpu_transcribe_engine.protocol``).
        stderr_tail: the last lines the engine wrote to stderr, for the user to read.
        exit_code: 2 when the engine refused an option (code ``bad_option``: ``--device cuda`` on a machine
            without a CUDA GPU...), as for any bad option; else 1.
    """

    def __init__(self, code: str, message: str, stderr_tail: str = "") -> None:
        self.code = code
        self.stderr_tail = stderr_tail
        self.exit_code = 2 if code == "bad_option" else 1
        super().__init__(message)


# --- cloud -------------------------------------------------------------------------------------------


class CloudError(GpuTranscribeError):
    """Base of errors from AWS calls."""


class CredentialsError(CloudError):
    """AWS credentials are missing or rejected. Nothing was launched."""

    def __init__(self, message: str, profile: str | None = None, region: str | None = None) -> None:
        self.profile = profile
        self.region = region
        super().__init__(message)


class ProfileNotFoundError(CredentialsError):
    """The AWS profile named by ``--aws-profile``, ``aws_profile`` or ``AWS_PROFILE`` does not exist: a bad
    setting, so the exit status is 2."""

    exit_code = 2


class QuotaError(CloudError):
    """A Service Quotas limit is too small for one instance.

    Attributes:
        quota_code: e.g. ``L-3819A6DF`` (spot G and VT vCPUs), ``L-DB2E81BA`` (on-demand G and VT vCPUs).
        quota_vcpus: the quota's value in vCPUs.
        needed_vcpus: vCPUs one instance of the chosen type needs.
    """

    def __init__(self, message: str, quota_code: str, quota_vcpus: float, needed_vcpus: int) -> None:
        self.quota_code = quota_code
        self.quota_vcpus = quota_vcpus
        self.needed_vcpus = needed_vcpus
        super().__init__(message)


@dataclass(frozen=True)
class LaunchAttempt:
    """One try to launch an instance, kept for the launch result and for error messages.

    Attributes:
        zone: availability zone name, e.g. ``eu-north-1a``.
        market: ``spot`` or ``on-demand``.
        instance_type: e.g. ``g4dn.xlarge``.
        error_code: the AWS error code, or ``""`` if the attempt succeeded.
        seconds: wall time of the attempt in seconds.
    """

    zone: str
    market: str
    instance_type: str
    error_code: str
    seconds: float


class CapacityError(CloudError):
    """Every allowed (zone, market, instance type) failed to launch.

    Attributes:
        attempts: every attempt in the order made.
    """

    def __init__(self, message: str, attempts: Sequence[LaunchAttempt]) -> None:
        self.attempts = list(attempts)
        super().__init__(message)


class TeardownError(CloudError):
    """Some resources of a run could not be removed. ``gpu-transcribe cleanup`` can retry.

    Attributes:
        leftovers: ``(resource, reason)`` pairs; a resource is its kind and id (``security-group sg-0a1b``).
    """

    def __init__(self, message: str, leftovers: Sequence[tuple[str, str]]) -> None:
        self.leftovers = list(leftovers)
        super().__init__(message)


class InstanceLostError(CloudError):
    """The instance left ``pending``/``running`` without us asking: a spot interruption, the dead-man switch,
    or someone else terminated it.

    Attributes:
        instance_id: e.g. ``i-0123456789abcdef0``.
        state: the EC2 state seen (``shutting-down``, ``terminated``, ``stopping``, ``stopped``).
        reason_code: the EC2 state reason code, e.g. ``Server.SpotInstanceTermination``
            (``""`` when EC2 gave none).
    """

    def __init__(self, message: str, instance_id: str, state: str, reason_code: str) -> None:
        self.instance_id = instance_id
        self.state = state
        self.reason_code = reason_code
        super().__init__(message)

    @property
    def spot_interruption(self) -> bool:
        """True when EC2 reclaimed a spot instance (state reason ``Server.SpotInstanceTermination``)."""
        return self.reason_code == "Server.SpotInstanceTermination"


class ImageNotFoundError(CloudError):
    """No AMI of ours matches this version and model; ``gpu-transcribe build-ami`` makes one."""


class StackError(CloudError):
    """A CloudFormation stack operation failed or cannot start (a rollback, a stack busy with another
    operation, a change set CloudFormation refused).

    Attributes:
        stack: the stack's name.
        status: the stack's status when we stopped (``ROLLBACK_COMPLETE``, ``UPDATE_ROLLBACK_COMPLETE``...),
            or the change set's (``FAILED``).
        resource: the logical id of the first resource that failed, ``""`` if none was named.
        resource_type: its type (``AWS::SQS::Queue``...), ``""`` if unknown.
        reason: CloudFormation's reason for that failure, ``""`` if none.
    """

    def __init__(
        self,
        message: str,
        *,
        stack: str,
        status: str,
        resource: str = "",
        resource_type: str = "",
        reason: str = "",
    ) -> None:
        self.stack = stack
        self.status = status
        self.resource = resource
        self.resource_type = resource_type
        self.reason = reason
        super().__init__(message)


class PipelineNotFoundError(CloudError):
    """No pipeline stack of this name in the region; ``gpu-transcribe pipeline deploy`` makes one.

    Attributes:
        name: the pipeline's name.
        region: the region looked in.
    """

    def __init__(self, name: str, region: str) -> None:
        self.name = name
        self.region = region
        super().__init__(
            f"no pipeline {name!r} in {region}; create it with "
            f"`gpu-transcribe pipeline deploy --pipeline {name}`"
        )


class BedrockError(CloudError):
    """A call to Amazon Bedrock failed (after the retries of throttling), or the model cannot be used in the
    region. The correction stage records it as the reason and keeps the raw transcript; it never fails a run.

    Attributes:
        code: the AWS error code (``ThrottlingException``, ``ValidationException``...) or botocore's name for
            a connection failure (``EndpointConnectionError``); ``""`` if none.
        model_id: the Bedrock model id asked for.
        region: the region called.
    """

    def __init__(self, message: str, *, code: str, model_id: str, region: str) -> None:
        self.code = code
        self.model_id = model_id
        self.region = region
        super().__init__(message)


class UploadError(CloudError):
    """Uploading results to S3 failed; the local files are kept."""


# --- SSH ---------------------------------------------------------------------------------------------


class SSHError(GpuTranscribeError):
    """Base of errors from the SSH layer."""


class SSHTimeoutError(SSHError):
    """The host did not accept an SSH session within the timeout."""


class HostKeyError(SSHError):
    """The host presented a key other than the one we expected. The connection was refused."""


class TransferError(SSHError):
    """A file transfer failed or its size or SHA-256 did not match after the transfer."""


class RemoteCommandError(SSHError):
    """A remote command exited non-zero.

    Attributes:
        returncode: the command's exit status (``-1`` if unknown).
        command: the command line as sent (already quoted).
        stderr_tail: the last lines of its stderr.
    """

    def __init__(self, message: str, returncode: int, command: str, stderr_tail: str = "") -> None:
        self.returncode = returncode
        self.command = command
        self.stderr_tail = stderr_tail
        super().__init__(message)


class ProvisionError(GpuTranscribeError):
    """Provisioning the ``build-ami`` builder failed (``ami/provision.py`` exited non-zero, or its manifest
    does not show every check passing). No image was made; the builder was terminated.

    Attributes:
        failed_checks: ``(check, reason)`` for each failed check of the manifest (empty if there was none).
        output_tail: the last lines the provisioning printed (stdout and stderr), for the user to read.
    """

    def __init__(
        self, message: str, failed_checks: Sequence[tuple[str, str]] = (), output_tail: str = ""
    ) -> None:
        self.failed_checks = list(failed_checks)
        self.output_tail = output_tail
        super().__init__(message)


class InterruptedRunError(GpuTranscribeError):
    """The run was stopped by a signal; teardown has run.

    Attributes:
        signal_name: ``SIGINT``, ``SIGTERM`` or ``SIGHUP``.
    """

    def __init__(self, signal_name: str, exit_code: int) -> None:
        self.signal_name = signal_name
        self.exit_code = exit_code
        super().__init__(f"stopped by {signal_name}; every cloud resource of this run was removed")


class LocalRunInterruptedError(InterruptedRunError):
    """``run --local`` was stopped by a signal; the engine was stopped and finished transcripts are kept.

    Attributes:
        signal_name: ``SIGINT``, ``SIGTERM`` or ``SIGHUP``.
        outputs: the transcripts written before the signal, in input order.
        not_done: the inputs without a transcript.
        problems: the paths that could not be used (reported like a normal run's).
    """

    def __init__(
        self,
        signal_name: str,
        exit_code: int,
        outputs: Sequence[Path],
        not_done: Sequence[Path],
        problems: Sequence[InputError] = (),
    ) -> None:
        self.signal_name = signal_name
        self.exit_code = exit_code
        self.outputs = tuple(outputs)
        self.not_done = tuple(not_done)
        self.problems = tuple(problems)
        undone = ", ".join(str(p) for p in self.not_done) or "none"
        GpuTranscribeError.__init__(
            self, f"stopped by {signal_name}; not transcribed: {undone} (finished transcripts are kept)"
        )
