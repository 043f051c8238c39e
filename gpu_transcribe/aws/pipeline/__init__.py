"""The AWS services of ``gpu-transcribe pipeline``: its CloudFormation stack, the jobs queue, the jobs table,
the bucket's objects and the worker group.

Modules:

- :mod:`.models`: frozen data classes: the stack, its events and outputs, queue counts, the worker group;
- :mod:`.stack`: CloudFormation: change sets, events, describe, delete (the one reader of a stack's outputs);
- :mod:`.deployment`: the calls beyond the stack: what the stack may skip, status counts, the scaler run
  in-process;
- :mod:`.queue`: the SQS jobs queue and the S3 event messages it carries;
- :mod:`.jobs_table`: the DynamoDB jobs table, every state change a conditional write;
- :mod:`.job_record`: a row of that table, its statuses and its DynamoDB item form;
- :mod:`.job_objects`: the bucket's ``incoming/`` audio and ``results/`` outputs, encrypted;
- :mod:`.fleet_member`: a worker's scale-in protection and its leaving the group;
- :mod:`.webhook_secret`: the webhooks' signing secret in Secrets Manager: read, write, ensure, delete;
- :mod:`.assets`: the region's assets bucket (the notifier's zip): upload once per content, find by tag;
- the Lambdas' code, shipped alone (standard library and boto3 only): :mod:`.scaler_lambda`, the
  scaler; :mod:`.notifier_lambda`, the notifier that delivers job events as signed webhooks.
"""
