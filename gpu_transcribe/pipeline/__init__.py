"""``gpu-transcribe pipeline``: a queue of transcription jobs on spot GPU workers, one CloudFormation stack.

- :mod:`.contract` holds the names the stack, the worker, the command line and
  :mod:`gpu_transcribe.aws.pipeline` share (constants only; this file imports nothing, so ``aws`` can import
  it without loading the orchestration);
- :mod:`.template` fills the stack's template (``stack.yaml``) and its parameters from a frozen
  :class:`~.template.PipelineSpec`; :mod:`.lambda_code` and :mod:`.fleet_boot` give it the Lambdas' code and
  the fleet's dead-man switch;
- :mod:`.plan` makes the spec of ``pipeline deploy``; :mod:`.deploy` creates, updates, reports on and deletes
  the stack (``pipeline deploy | status | destroy``);
- :mod:`.jobs` finds a pipeline (a worker's description file, else by name from its stack's outputs, read by
  :mod:`gpu_transcribe.aws.pipeline.stack`) and lists, fetches and retries jobs (``jobs``);
- :mod:`.submit` writes job rows, uploads the audio and runs the scaler in-process (``submit``);
- :mod:`.worker` is the worker loop (``worker``), the same code on the fleet's instances and any machine.

Orchestration only: no printing, progress through callbacks. The AWS calls are in :mod:`gpu_transcribe.aws`
(``stack``, ``pipeline``, ``queue``, ``jobs_table``, ``job_objects``, ``fleet_member``, ``scaler_lambda``).
docs/pipeline.md describes the stack, then the jobs.
"""
