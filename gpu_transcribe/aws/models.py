"""The tag names and values we put on every resource, and the types that every part of the AWS layer shares.

Nothing here imports boto3: orchestration and the CLI may import these freely. Functions of the AWS layer take
and return frozen data classes, never boto3 dicts: this module's, and those of the EC2 lifecycle
(:mod:`gpu_transcribe.aws.ec2.models`) and of the pipeline's services
(:mod:`gpu_transcribe.aws.pipeline.models`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gpu_transcribe.pipeline.contract import PIPELINE_ROLE as PIPELINE_ROLE
from gpu_transcribe.pipeline.contract import TAG_PIPELINE as TAG_PIPELINE

# --- tags --------------------------------------------------------------------------------------------------
TAG_RUN_ID = "gpu-transcribe:run-id"
TAG_OWNER = "gpu-transcribe:owner"  # the caller's ARN (sts get-caller-identity)
TAG_CREATED = "gpu-transcribe:created"  # UTC ISO 8601, e.g. 2026-11-22T04:26:41Z
TAG_VERSION = "gpu-transcribe:version"
TAG_ROLE = "gpu-transcribe:role"  # run | builder | server | pipeline
# On a server's resources (``gpu-transcribe server up``): the server's name, and the minutes after launch at
# which it powers itself off at the latest (cleanup removes it after that even if its state file exists).
TAG_SERVER_NAME = "gpu-transcribe:server-name"
TAG_MAX_LIFETIME = "gpu-transcribe:max-lifetime-minutes"
NAME_PREFIX = "gpu-transcribe"

Role = Literal["run", "builder", "server"]
Market = Literal["spot", "on-demand"]
ROLES: tuple[str, ...] = ("run", "builder", "server")


def resource_name(run_id: str, role: str = "run") -> str:
    """The ``Name`` tag, key pair name and security group name of a run: ``gpu-transcribe-run-<run id>``."""
    return f"{NAME_PREFIX}-{role}-{run_id}"


# --- identity ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallerIdentity:
    """Who the credentials belong to (``sts get-caller-identity``).

    Attributes:
        account_id: 12-digit AWS account id.
        arn: the caller's ARN; it becomes the ``gpu-transcribe:owner`` tag.
        user_id: the unique id of the user or role session.
    """

    account_id: str
    arn: str
    user_id: str
