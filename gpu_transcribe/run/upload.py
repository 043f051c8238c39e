"""The last step of a run: every finished file's outputs (and the audio with ``--upload-audio``) to S3, under
the run's date, encrypted, with metadata naming the run, model and source file."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from gpu_transcribe import __version__
from gpu_transcribe.errors import GpuTranscribeError, UploadError

if TYPE_CHECKING:
    from gpu_transcribe.run.host import Job, RunState
    from gpu_transcribe.run.request import CloudRunRequest, Phases, RunCallbacks
    from gpu_transcribe.settings import Settings


def upload_outputs(
    settings: Settings,
    bucket: str | None,
    run_id: str,
    started_at: datetime,
    request: CloudRunRequest,
    job: Job,
    state: RunState,
    callbacks: RunCallbacks,
    phases: Phases,
) -> UploadError | None:
    """Upload what finished to ``s3://bucket/<s3_prefix>/<date of started_at, UTC>/<run_id>/``; records the
    objects in ``state.uploads``. Nothing happens without a bucket (``--no-s3``) or a finished file.

    Returns:
        The upload's error (the local files are kept), or ``None``; it is returned, never raised, so that
        the summary shows it beside everything else.
    """
    if bucket is None or not state.outputs:
        return None
    from gpu_transcribe.aws.clients import AwsContext, s3_client
    from gpu_transcribe.aws.ec2.preflight import caller_identity
    from gpu_transcribe.aws.s3 import upload_files

    ctx = AwsContext.from_settings(settings)
    client = s3_client(ctx)
    try:  # the account that must own the bucket (ExpectedBucketOwner on every request)
        account_id = caller_identity(ctx).account_id
    except GpuTranscribeError as exc:
        return UploadError(f"s3://{bucket}: cannot upload: {exc}")
    callbacks.progress("upload", f"uploading to s3://{bucket}/{settings.s3_prefix}")
    with phases.timed("upload"):
        try:
            for index, outputs in sorted(state.outputs.items()):
                outcome = state.outcomes[index]
                audio = job.files[index].path
                metadata = {
                    "run-id": run_id,
                    "model": request.model,
                    "revision": request.revision or "",
                    "language": outcome.language,
                    "duration-s": f"{outcome.duration_s or 0:.2f}",
                    "source-file": audio.name,
                    "gpu-transcribe-version": __version__,
                }
                files = [*outputs.values(), *([audio] if request.upload_audio else [])]
                state.uploads[index] = tuple(
                    upload_files(
                        client,
                        files,
                        bucket,
                        settings.s3_prefix,
                        run_id,
                        started_at,
                        metadata,
                        kms_key_id=settings.s3_kms_key_id,
                        expected_owner=account_id,
                    )
                )
        except UploadError as exc:
            return exc
    return None
