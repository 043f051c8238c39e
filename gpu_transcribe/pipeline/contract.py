"""The names the pipeline's stack, its worker, its command line and :mod:`gpu_transcribe.aws.pipeline` share.

One home for each: the bucket's prefixes, the jobs table's key, index and attribute names, the stack's
output names, the tags of its resources, and where a worker instance finds its description. The stack's
template (``gpu_transcribe/pipeline/stack.yaml``) spells the same names in YAML, since a template cannot
import Python; ``tests/test_pipeline_template.py`` checks that the two agree.

Layering: constants only, no imports. :mod:`gpu_transcribe.aws.pipeline` (the AWS calls) imports this
module, and :mod:`gpu_transcribe.pipeline` (the orchestration above it) does too; importing it loads only
``gpu_transcribe/pipeline/__init__.py``, which imports nothing, so ``aws`` never loads the orchestration and
no import cycle can form.
"""

from __future__ import annotations

# --- the bucket --------------------------------------------------------------------------------------------

#: Key prefix of audio to transcribe: ``incoming/<job-id>/<file name>`` (submit) or any key (other uploaders).
INCOMING_PREFIX = "incoming/"
#: Key prefix of outputs: ``results/<job-id>/<file name>.<format>``.
RESULTS_PREFIX = "results/"

# --- the jobs table ----------------------------------------------------------------------------------------

#: The jobs table's partition key (string).
TABLE_KEY = "job_id"
#: The global secondary index for ``jobs --status``: partition ``status``, sort ``created_at`` (ISO 8601).
STATUS_INDEX = "by-status"
#: The status attribute (string), the index's partition key.
STATUS_ATTRIBUTE = "status"
#: The creation time attribute (ISO 8601 UTC string), the index's sort key.
CREATED_ATTRIBUTE = "created_at"
#: The TTL attribute: a job row is deleted by DynamoDB after this time (Unix epoch seconds, a number).
TTL_ATTRIBUTE = "expires_at"

# --- the worker instances ----------------------------------------------------------------------------------

#: Where the user data writes the pipeline's names for the worker (JSON).
WORKER_CONFIG_PATH = "/etc/gpu-transcribe/pipeline.json"
#: The systemd unit that runs the worker on each instance.
WORKER_UNIT = "gpu-transcribe-worker.service"

# --- the stack: its name, its resources' tags, its outputs -------------------------------------------------

#: The stack of pipeline ``NAME`` is ``gpu-transcribe-pipeline-NAME``.
PIPELINE_STACK_PREFIX = "gpu-transcribe-pipeline-"
#: The pipeline's name, on its stack and every resource in it.
TAG_PIPELINE = "gpu-transcribe:pipeline"
#: Tag ``gpu-transcribe:role`` of a pipeline's resources (never carries a run id).
PIPELINE_ROLE = "pipeline"

OUTPUT_BUCKET = "BucketName"
OUTPUT_QUEUE_URL = "JobsQueueUrl"
OUTPUT_QUEUE_ARN = "JobsQueueArn"
OUTPUT_DLQ_URL = "DeadLetterQueueUrl"
OUTPUT_TABLE = "JobsTableName"
OUTPUT_GROUP = "WorkerGroupName"
OUTPUT_SCALER = "ScalerFunctionName"
#: ``"true"`` or ``"false"``.
OUTPUT_BUCKET_CREATED = "BucketCreatedByStack"
OUTPUT_RESULTS_QUEUE_URL = "ResultsQueueUrl"
OUTPUT_WEBHOOKS_QUEUE_URL = "WebhooksQueueUrl"
OUTPUT_WEBHOOKS_DLQ_URL = "WebhooksDeadLetterQueueUrl"
OUTPUT_WEBHOOK_SECRET = "WebhookSecretName"
OUTPUT_NOTIFIER = "NotifierFunctionName"
#: Every output the stack has (``PipelineOutputs`` reads them).
OUTPUTS = frozenset(
    {
        OUTPUT_BUCKET,
        OUTPUT_QUEUE_URL,
        OUTPUT_QUEUE_ARN,
        OUTPUT_DLQ_URL,
        OUTPUT_TABLE,
        OUTPUT_GROUP,
        OUTPUT_SCALER,
        OUTPUT_BUCKET_CREATED,
        OUTPUT_RESULTS_QUEUE_URL,
        OUTPUT_WEBHOOKS_QUEUE_URL,
        OUTPUT_WEBHOOKS_DLQ_URL,
        OUTPUT_WEBHOOK_SECRET,
        OUTPUT_NOTIFIER,
    }
)
