"""``gpu-transcribe run`` on a new instance or on ``--host``: the request and result types
(:mod:`~gpu_transcribe.run.request`), the work on a connected host (:mod:`~gpu_transcribe.run.host`), the
cloud flow with its relaunch after a spot interruption (:mod:`~gpu_transcribe.run.cloud`) and the S3 upload
(:mod:`~gpu_transcribe.run.upload`). Orchestration only: no printing, progress through callbacks.
"""

from gpu_transcribe.instance.session import InstanceUsage
from gpu_transcribe.run.cloud import choose_image, plan_run, run_cloud
from gpu_transcribe.run.host import parse_host, run_on_host
from gpu_transcribe.run.request import (
    PHASES,
    CloudRunRequest,
    CloudRunResult,
    DryRunPlan,
    FileResult,
    RunCallbacks,
)

__all__ = [
    "PHASES",
    "CloudRunRequest",
    "CloudRunResult",
    "DryRunPlan",
    "FileResult",
    "InstanceUsage",
    "RunCallbacks",
    "choose_image",
    "parse_host",
    "plan_run",
    "run_cloud",
    "run_on_host",
]
