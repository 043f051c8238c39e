"""FastAPI dependencies of the routers (``Depends``): the shared state and the async job service.

A route declares ``state: StateDep`` or ``jobs: JobsDep`` instead of reading ``request.app.state``.
The bearer key and the upload size are not dependencies: :class:`~gpu_transcribe_api.guard.Guard` checks
them before any of the body is read (FastAPI reads a form body before it runs a route's dependencies).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gpu_transcribe_api.api_errors import ApiError
from gpu_transcribe_api.job_service import JobService
from gpu_transcribe_api.state import ServerState, server_state


def job_service(request: Request) -> JobService:
    """The application's :class:`~gpu_transcribe_api.job_service.JobService` (``app.state.jobs``).

    Raises:
        ApiError: 503 ``jobs_not_ready`` before the service is open (the application is starting).
    """
    service: JobService | None = getattr(request.app.state, "jobs", None)
    if service is None or service.store is None:
        raise ApiError(503, "async jobs are not ready yet; retry in a few seconds", code="jobs_not_ready")
    return service


StateDep = Annotated[ServerState, Depends(server_state)]
"""The application's :class:`~gpu_transcribe_api.state.ServerState`."""
JobsDep = Annotated[JobService, Depends(job_service)]
"""The application's open :class:`~gpu_transcribe_api.job_service.JobService`."""
