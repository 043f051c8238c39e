"""``gpu-transcribe serve``: OpenAI's audio API (and a simple one) in front of one loaded Whisper engine.

:mod:`remote.server.config` (the options), :mod:`~remote.server.scheduler` (batching), :mod:`~remote.server.
formats` (response bodies), :mod:`~remote.server.app` (the FastAPI application), :mod:`~remote.server.run`
(uvicorn and the power-off). Importing this package imports nothing heavy; the contract is docs/server.md.
"""
