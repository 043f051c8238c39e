"""``gpu-transcribe pipeline``: a queue of transcription jobs on spot GPU workers, one CloudFormation stack.

- :mod:`.template` fills the stack's template (``stack.yaml``) and its parameters from a frozen
  :class:`~.template.PipelineSpec`; :mod:`.lambda_code` and :mod:`.fleet_boot` give it the Lambdas' code (the
  scaler inline, the notifier as a zip) and the fleet's dead-man switch; :mod:`.assets` makes the region's
  assets stack (``assets.yaml``) that holds the zip, uploads it, and removes them for ``cleanup``;
- :mod:`.plan` makes the spec of ``pipeline deploy``; :mod:`.deploy` creates, updates, reports on and deletes
  the stack (``pipeline deploy | status | destroy``);
- :mod:`.config` finds a pipeline (a worker's description file, else by name from its stack's outputs, read
  by :mod:`gpu_transcribe.aws.pipeline.stack`);
- :mod:`.jobs` lists, fetches and retries jobs (``jobs``), :mod:`.job_ids` names them, :mod:`.dead_letters`
  reconciles the dead-letter queue with the jobs table;
- :mod:`.results` publishes job events and follows the results queue (``jobs watch``), :mod:`.webhooks`
  checks webhook URLs, rotates the signing secret and verifies requests (``webhook verify``);
- :mod:`.submit` writes job rows, uploads the audio and runs the scaler in-process (``submit``);
- :mod:`.worker` is the worker (``worker``: its loop, job endings and watchers), the same code on the
  fleet's instances and any machine.

Orchestration only: no printing, progress through callbacks. The AWS calls are in :mod:`gpu_transcribe.aws`
(``aws.pipeline``: ``stack``, ``deployment``, ``queue``, ``jobs_table``, ``job_objects``, ``fleet_member``,
``webhook_secret``, ``assets``, ``scaler_lambda``, ``notifier_lambda``).
docs/pipeline.md describes the stack, then the jobs.
"""
