"""``gpu-transcribe serve``: the transcription API on this machine (the warm instance that runs it is
:mod:`gpu_transcribe.cli.warm`). Parsing only; :mod:`gpu_transcribe.cli.main` registers it.
"""

from __future__ import annotations

from gpu_transcribe.cli import options as opt
from gpu_transcribe_engine.options import DEFAULT_MODEL

# --- serve -----------------------------------------------------------------------------------------------


def serve(
    bind: opt.Bind = "127.0.0.1",
    port: opt.Port = 8000,
    model: opt.ServeModel = DEFAULT_MODEL,
    revision: opt.Revision = None,
    device: opt.ServeDevice = "auto",
    api_key_file: opt.ApiKeyFile = None,
    max_upload_mb: opt.MaxUploadMb = 200,
    max_queue: opt.MaxQueue = 64,
    idle_stop_min: opt.IdleStopMin = None,
    max_lifetime_h: opt.MaxLifetimeH = None,
    jobs_dir: opt.JobsDir = None,
    job_ttl_h: opt.JobTtlH = 24.0,
    webhook_secret_file: opt.WebhookSecretFile = None,
    allow_private_callbacks: opt.AllowPrivateCallbacks = False,
    max_pending_jobs: opt.MaxPendingJobs = 256,
    max_pending_gb: opt.MaxPendingGb = 10.0,
    min_free_disk_gb: opt.MinFreeDiskGb = 2.0,
) -> None:
    """Serve OpenAI's audio API here, with one loaded model.

    /v1/audio/transcriptions and /transcribe, on this machine, until Ctrl-C. Logs go to stderr."""
    from gpu_transcribe.errors import EngineError, SettingsError
    from gpu_transcribe_api.config import GIB, MIB, ServerConfig, ServerConfigError, read_api_key
    from gpu_transcribe_engine.errors import ModelLoadError

    try:
        config = (
            ServerConfig(
                bind=bind,
                port=port,
                model=model,
                revision=revision,
                device=device,
                api_key=read_api_key(api_key_file) if api_key_file is not None else None,
                max_upload_bytes=int(max_upload_mb * MIB),
                max_queue=max_queue,
                idle_stop_s=idle_stop_min * 60 if idle_stop_min is not None else None,
                max_lifetime_s=max_lifetime_h * 3600 if max_lifetime_h is not None else None,
                jobs_dir=jobs_dir,
                job_ttl_s=job_ttl_h * 3600,
                webhook_secret_file=webhook_secret_file,
                allow_private_callbacks=allow_private_callbacks,
                max_pending_jobs=max_pending_jobs,
                max_pending_bytes=int(max_pending_gb * GIB),
                min_free_disk_bytes=int(min_free_disk_gb * GIB),
            )
            .with_env()
            .checked()
        )
    except ServerConfigError as error:
        raise SettingsError("serve", "command line", str(error)) from None
    from gpu_transcribe_api.run import serve as run_server
    from gpu_transcribe_engine.device import resolve_device
    from gpu_transcribe_engine.hub import check_hub_model, is_hub_id

    try:  # before uvicorn starts: --device cuda on a machine without a GPU is a bad option (exit status 2)
        resolve_device(config.device)
    except ValueError as error:
        raise SettingsError("device", "--device", str(error)) from None
    try:
        if is_hub_id(config.model):  # before uvicorn starts: one line in seconds when the hub is out of reach
            check_hub_model(config.model, config.revision)
        run_server(config)
    except ModelLoadError as error:
        raise EngineError(error.code, str(error)) from None
