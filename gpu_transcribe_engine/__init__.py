"""The Whisper engine that runs on the GPU instance (and for ``gpu-transcribe run --local``).

Stands alone: it imports neither ``gpu_transcribe``, boto3, paramiko, typer nor rich, and speaks to the
orchestrator through JSON lines on stdout (:mod:`gpu_transcribe_engine.protocol`). The light modules
(``options``,
``languages``, ``protocol``, ``transcript``, ``errors``) import no torch, so the client may import them to
validate options and read results; ``engine``, ``whisper_model``, ``audio`` and ``vad`` import the heavy
libraries, and ``python -m gpu_transcribe_engine`` (``__main__``) imports them only once a command runs.
"""
