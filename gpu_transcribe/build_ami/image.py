"""The image of a provisioned builder: stop it (or reboot a spot builder), ``CreateImage`` with our tags,
wait until available; an image of a build that did not finish is deregistered with its snapshots."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from gpu_transcribe import __version__
from gpu_transcribe.build_ami.plan import BuildRequest
from gpu_transcribe.common import ProgressCallback, ProgressEvent, no_progress, utc_now
from gpu_transcribe.errors import GpuTranscribeError, TeardownError
from gpu_transcribe.instance.session import CleanupStep, InstanceSession

if TYPE_CHECKING:
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.ec2.images import OurImage
    from gpu_transcribe.aws.ec2.models import LaunchResult
    from gpu_transcribe.settings import Settings
    from gpu_transcribe.ssh import SSHSession


def image_builder(
    ctx: AwsContext,
    launched: LaunchResult,
    *,
    model: str,
    revision: str | None,
    base_image_id: str,
    extra_tags: Sequence[tuple[str, str]] = (),
    on_image_created: Callable[[str], None] = lambda image_id: None,
    on_stopped: Callable[[], None] = lambda: None,
    phase_done: Callable[[str], None] = lambda name: None,
    on_progress: ProgressCallback = no_progress,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    poll_s: float | None = None,
) -> OurImage:
    """Make the image of a provisioned builder: stop it (on-demand), ``CreateImage`` with our tags, tag the
    snapshots, wait until ``available``.

    An on-demand builder is stopped first, so the snapshot is of cleanly unmounted file systems. A one-time
    spot instance cannot be stopped (EC2 refuses ``StopInstances`` for it): EC2 reboots it for the snapshot
    instead (``NoReboot=False``), which also flushes the file systems.

    Tags of the image and its snapshots: ``gpu-transcribe:version``, ``:model``, ``:revision``, ``:created``
    (now), ``:base-ami``, ``:run-id`` and ``:owner`` (the build's), the user's ``tags`` setting, and ``Name``
    (the image name).

    Args:
        on_image_created: called with the new image id as soon as EC2 returns it (so that a teardown can
            deregister an unfinished image).
        on_stopped: called once the builder is stopped (its billed time ends).
        phase_done: called with ``stop`` and then ``image`` as each phase ends.
        poll_s: seconds between image polls (default
        :data:`gpu_transcribe.aws.ec2.image_create.IMAGE_POLL_S`).

    Returns:
        The available image.

    Raises:
        InstanceLostError: the builder terminated while stopping.
        CloudError: a call failed, the image failed, or a wait timed out.
    """
    from gpu_transcribe.aws.ec2.image_create import (
        IMAGE_POLL_S,
        create_image,
        image_name,
        image_tags,
        wait_image_available,
    )
    from gpu_transcribe.aws.ec2.instances import stop_instance
    from gpu_transcribe.aws.ec2.resources import run_tags
    from gpu_transcribe.aws.models import TAG_ROLE

    reboot = launched.market == "spot"
    if reboot:
        on_progress(
            ProgressEvent("stop", "a spot builder cannot be stopped: EC2 reboots it for the snapshot")
        )
    else:
        stop_instance(ctx, launched.instance_id, on_progress=on_progress, clock=clock, sleep=sleep)
        on_stopped()
    phase_done("stop")
    created_at = utc_now()
    name = image_name(__version__, model, created_at)
    base_tags = run_tags(
        run_id=launched.run_id,
        owner_arn=launched.owner_arn,
        created_at=created_at,
        role="builder",
        name=name,
        extra=extra_tags,
    )
    tags = [
        (key, value)
        for key, value in image_tags(
            version=__version__,
            model=model,
            revision=revision,
            base_image_id=base_image_id,
            name=name,
            run_tags=base_tags,
        )
        if key != TAG_ROLE  # an image is not a builder
    ]
    description = f"gpu-transcribe {__version__}, {model}" + (f"@{revision}" if revision else "")
    image_id = create_image(
        ctx, launched.instance_id, name=name, description=description, tags=tags, reboot=reboot
    )
    on_image_created(image_id)
    on_progress(ProgressEvent("image", f"creating image {image_id} ({name})"))
    image = wait_image_available(
        ctx,
        image_id,
        snapshot_tags=tags,
        poll_s=IMAGE_POLL_S if poll_s is None else poll_s,
        on_progress=on_progress,
        clock=clock,
        sleep=sleep,
    )
    phase_done("image")
    return image


def delete_unfinished_image(
    ctx: AwsContext,
    image_id: str,
    run_id: str,
    on_progress: ProgressCallback,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> None:
    """Deregister an image of a build that did not finish, and delete its snapshots.

    Raises:
        TeardownError: something of it could not be removed (``gpu-transcribe images prune`` can retry).
    """
    from gpu_transcribe.aws.ec2.images import delete_image

    on_progress(ProgressEvent("delete", f"the build did not finish: deregistering image {image_id}"))
    try:
        removal = delete_image(ctx, image_id, run_id=run_id, clock=clock, sleep=sleep)
    except GpuTranscribeError as exc:
        raise TeardownError(
            f"{exc} (retry with `gpu-transcribe images prune`)", [(f"image {image_id}", str(exc))]
        ) from exc
    for snapshot_id in removal.deleted_snapshots:
        on_progress(ProgressEvent("delete", f"deleted snapshot {snapshot_id}"))
    if removal.failed:
        raise TeardownError(
            f"image {image_id}: some of it could not be removed (retry with `gpu-transcribe images prune`)",
            list(removal.failed),
        )


def image_of_builder(
    session: InstanceSession,
    settings: Settings,
    request: BuildRequest,
    *,
    base_image_id: str,
    phase_done: Callable[[str], None],
    on_progress: ProgressCallback,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    image_poll_s: float | None,
) -> OurImage:
    """Stop the provisioned builder and make its image (:func:`image_builder`); until the image is available,
    the session's teardown deregisters it and deletes its snapshots, so a failed build leaves no image.

    Raises:
        InstanceLostError, CloudError: as :func:`image_builder`.
    """
    launched = session.launched

    # Stop the builder and make the image; an image not yet available is deregistered by the teardown.
    def deregister(image_id: str) -> Callable[[SSHSession | None], None]:
        def run(_: SSHSession | None) -> None:
            delete_unfinished_image(session.ctx, image_id, session.run_id, on_progress, clock, sleep)

        return run

    unfinished: list[CleanupStep] = []

    def image_created(image_id: str) -> None:
        unfinished.append(CleanupStep(f"image {image_id}", deregister(image_id)))
        session.add_cleanup(unfinished[-1])

    image = image_builder(
        session.ctx,
        launched,
        model=request.model,
        revision=request.revision,
        base_image_id=base_image_id,
        extra_tags=settings.tags,
        on_image_created=image_created,
        on_stopped=session.billing_ended,
        phase_done=phase_done,
        on_progress=on_progress,
        clock=clock,
        sleep=sleep,
        poll_s=image_poll_s,
    )
    for step in unfinished:
        session.remove_cleanup(step)
    return image
