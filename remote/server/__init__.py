"""``gpu-transcribe serve``: OpenAI's audio API (and a simple one) in front of one loaded Whisper engine.

:mod:`remote.server.config` (the options), :mod:`~remote.server.scheduler` (batching),
:mod:`~remote.server.formats` (response bodies), :mod:`~remote.server.app` (the FastAPI application and its
routes), :mod:`~remote.server.api_errors` (OpenAI's error shape), :mod:`~remote.server.state` (the shared
state and metrics), :mod:`~remote.server.guard` (the key, size and counting middleware),
:mod:`~remote.server.uploads` (decoding uploads, waiting for transcripts), :mod:`~remote.server.run`
(uvicorn and the power-off). Importing this package imports nothing heavy; the contract is docs/server.md.
"""
