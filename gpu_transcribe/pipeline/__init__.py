"""``gpu-transcribe pipeline``: a queue of transcription jobs on spot GPU workers, one CloudFormation stack.

:mod:`.template` builds the stack's template from a frozen :class:`~.template.PipelineSpec`; :mod:`.deploy`
creates, updates, reports on and deletes it (orchestration: no printing, progress through callbacks). The AWS
calls are in :mod:`gpu_transcribe.aws.stack` and :mod:`gpu_transcribe.aws.pipeline`. docs/pipeline.md
describes the stack and what is not built yet (the worker, ``submit``, ``jobs``).
"""
