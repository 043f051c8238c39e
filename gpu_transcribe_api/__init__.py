"""``gpu-transcribe serve``: OpenAI's audio API (and a simple one) in front of one loaded Whisper engine.

:mod:`gpu_transcribe_api.config` (the options), :mod:`~gpu_transcribe_api.serve_options` (their command-line
declaration), :mod:`~gpu_transcribe_api.scheduler` (batching), :mod:`~gpu_transcribe_api.formats` (response
bodies), :mod:`~gpu_transcribe_api.app` (the FastAPI application), the routers
:mod:`~gpu_transcribe_api.health_api`, :mod:`~gpu_transcribe_api.audio_api`,
:mod:`~gpu_transcribe_api.models_api` and :mod:`~gpu_transcribe_api.jobs_api` with their
:mod:`~gpu_transcribe_api.dependencies`, :mod:`~gpu_transcribe_api.api_errors` (OpenAI's error shape),
:mod:`~gpu_transcribe_api.state` (the shared state and metrics), :mod:`~gpu_transcribe_api.guard` (the key,
size and counting middleware), :mod:`~gpu_transcribe_api.uploads` (decoding uploads, waiting for
transcripts), :mod:`~gpu_transcribe_api.job_service` (async jobs' threads), :mod:`~gpu_transcribe_api.run`
(uvicorn), :mod:`~gpu_transcribe_api.power_off` (the idle and lifetime power-off). Importing this package
imports nothing heavy; the contract is docs/server.md.
"""
