"""The AWS layer: the only package of gpu-transcribe that imports boto3 and botocore.

Modules (import them where they are used, never at start-up, so ``gpu-transcribe --help`` stays free of
boto3):

- :mod:`.models`: frozen data classes that cross the boundary (no boto3 dicts leave this package);
- :mod:`.clients`: the session/context and client factory (endpoint seam, retry configuration), error
  codes and their translation into our errors (:func:`.clients.aws_errors`);
- :mod:`.prices`: zones offering a type, live spot prices, on-demand prices, zone ranking;
- :mod:`.preflight`: credentials (STS) and Service Quotas checks;
- :mod:`.launch`: key pair, security group, user data and the spot -> next zone -> on-demand fallback;
- :mod:`.instances`: describe, wait for ``running`` and the SSH port, spot interruption, stop, the address
  seam;
- :mod:`.resources`: finding our resources by tag, teardown and removal (used by ``cleanup``);
- :mod:`.retry`: capped, jittered backoff (tenacity) where botocore's own retries do not fit;
- :mod:`.s3`: encrypted uploads of a run's results, the bucket check before launching;
- :mod:`.images`: our AMIs: list, choose for a run, create from a builder, tag snapshots, delete, prune;
- :mod:`.userdata`: cloud-init user data, the heartbeat path (no boto3);
- :mod:`.checkip`: this machine's public IP for the SSH rule (no boto3).
- the pipeline's: :mod:`.stack` (CloudFormation: change sets, events, describe, delete; the one reader of a
  stack's outputs), :mod:`.pipeline` (what the stack may skip, status counts, the scaler run in-process),
  :mod:`.queue` (SQS), :mod:`.jobs_table` (DynamoDB, conditional writes), :mod:`.job_objects` (the bucket's
  ``incoming/`` and ``results/``), :mod:`.fleet_member` (a worker's scale-in protection and leaving its
  group), :mod:`.scaler_lambda` (the scaler Lambda's code; stdlib and boto3 only).

Importing this package itself imports nothing.
"""
