"""The AWS layer: the only package of gpu-transcribe that imports boto3 and botocore.

Modules (import them where they are used, never at start-up, so ``gpu-transcribe --help`` stays free of
boto3):

- :mod:`.models`: the tag names and values on every resource, and the types the subpackages share (no boto3
  dicts leave this package);
- :mod:`.clients`: the one client factory (the session/context, endpoint seam, retry configuration), error
  codes and their translation into our errors (:func:`.clients.aws_errors`);
- :mod:`.retry`: capped, jittered backoff (tenacity) where botocore's own retries do not fit;
- :mod:`.s3`: encrypted uploads of a run's results, the bucket check before launching;
- :mod:`.bedrock`: Amazon Bedrock's Converse call and the model check (``--correct``);
- :mod:`.ec2`: the EC2 lifecycle of a run, a build and a warm server: prices, preflight, launch plan, launch,
  instances, teardown, images, user data;
- :mod:`.pipeline`: the services the pipeline uses: the stack, the queue, the jobs table, the bucket's
  objects, the worker group.

Importing this package itself imports nothing.
"""
