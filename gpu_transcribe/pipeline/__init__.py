"""``gpu-transcribe pipeline``: a queue of transcription jobs on spot GPU workers, one CloudFormation stack.

Orchestration only: no printing, progress through callbacks. The AWS calls are in
:mod:`gpu_transcribe.aws.pipeline`. docs/pipeline.md describes the stack, then the jobs.
"""
