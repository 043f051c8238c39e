"""Making one of our AMIs: the base image from AWS's SSM parameter, the name and tags, ``CreateImage``, and
the wait until it is available with its snapshots tagged (``build-ami`` drives it).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from gpu_transcribe.aws.clients import (
    AwsContext,
    aws_errors,
    ec2_client,
    error_code,
)
from gpu_transcribe.aws.ec2.images import TAG_BASE_AMI, TAG_MODEL, TAG_REVISION, OurImage, describe_our_image
from gpu_transcribe.aws.models import TAG_VERSION
from gpu_transcribe.common import ProgressCallback, ProgressEvent, no_progress
from gpu_transcribe.errors import CloudError, ImageNotFoundError

#: SSM public parameter holding the newest AWS Deep Learning Base OSS Nvidia Driver GPU AMI for Ubuntu 22.04
#: (x86_64): NVIDIA driver and CUDA installed, published in every commercial region
#: (docs.aws.amazon.com/dlami/latest/devguide/find-dlami-id.html, "Query the AMI-ID with AWS CLI").
DLAMI_BASE_PARAMETER = (
    "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
)
#: Seconds to wait for an image to become available: EC2 snapshots the whole root volume, 10-30 minutes for
#: 60-100 GiB of which ~20 GiB are used (AWS: "can take several minutes" per GiB changed); an hour bounds it.
IMAGE_TIMEOUT_S = 3600.0
IMAGE_POLL_S = 15.0
#: Image names: 3-128 characters of letters, digits, ``()[] ./-'@_`` (EC2 CreateImage, parameter Name).
_IMAGE_NAME_BAD = re.compile(r"[^A-Za-z0-9()\[\] ./'@_-]")


def resolve_base_image(ctx: AwsContext, parameter: str = DLAMI_BASE_PARAMETER) -> str:
    """The AMI id an SSM public parameter names: by default the newest Deep Learning Base GPU AMI.

    Raises:
        ImageNotFoundError: the parameter does not exist in the region; the message says to give
            ``--base-ami``.
        CredentialsError, CloudError: the call failed (``ssm:GetParameter`` not allowed...).
    """
    from gpu_transcribe.aws.clients import ssm_client

    with aws_errors(ctx, f"reading the base image from SSM parameter {parameter}"):
        try:
            value = ssm_client(ctx).get_parameter(Name=parameter)["Parameter"]["Value"]
        except Exception as exc:
            if error_code(exc) in ("ParameterNotFound", "ParameterVersionNotFound"):
                raise ImageNotFoundError(
                    f"the base image parameter {parameter} does not exist in {ctx.region}; "
                    "choose a base AMI (Ubuntu 22.04 with an NVIDIA driver) with --base-ami ami-..."
                ) from None
            raise
    value = str(value).strip()
    if not re.fullmatch(r"ami-[0-9a-f]{8,17}", value):
        raise ImageNotFoundError(
            f"SSM parameter {parameter} in {ctx.region} holds {value!r}, not an AMI id; "
            "use --base-ami ami-..."
        )
    return value


def image_name(version: str, model: str, created_at: datetime) -> str:
    """The AMI name: ``gpu-transcribe-<version>-<model>-<UTC time>``, in EC2's allowed characters.

    Example: ``gpu-transcribe-0.1.0-KBLab_kb-whisper-small-20261122T042641Z``.
    """
    stamp = created_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    raw = f"gpu-transcribe-{version}-{model.replace('/', '_')}-{stamp}"
    name = _IMAGE_NAME_BAD.sub("_", raw)
    return name if len(name) <= 128 else name[:110] + "-" + stamp


def image_tags(
    *,
    version: str,
    model: str,
    revision: str | None,
    base_image_id: str,
    name: str,
    run_tags: Sequence[tuple[str, str]],
) -> list[tuple[str, str]]:
    """The tags of a built image and its snapshots.

    ``run_tags`` are the builder's own (run id, owner, created, role, version, the user's extra tags, Name);
    the image adds model, revision (``""`` for the default branch) and base AMI, and takes ``name`` as its
    ``Name``.
    """
    tags = dict(run_tags)
    tags.update(
        {
            TAG_VERSION: version,
            TAG_MODEL: model,
            TAG_REVISION: revision or "",
            TAG_BASE_AMI: base_image_id,
            "Name": name,
        }
    )
    return sorted(tags.items())


def _ec2_tags(tags: Sequence[tuple[str, str]]) -> list[Any]:
    return [{"Key": k, "Value": v} for k, v in tags]


def create_image(
    ctx: AwsContext,
    instance_id: str,
    *,
    name: str,
    description: str,
    tags: Sequence[tuple[str, str]],
    reboot: bool,
) -> str:
    """``CreateImage`` from the builder, the image tagged at creation; returns the new AMI id.

    Snapshots are tagged separately (:func:`tag_image_snapshots`): their ids are known only once EC2 starts
    them (and moto rejects a ``snapshot`` tag specification).

    Args:
        reboot: let EC2 shut the instance down for the snapshot and boot it again (``NoReboot=False``): for a
            running builder (a one-time spot instance cannot be stopped). ``False`` for a stopped builder.

    Raises:
        CredentialsError, CloudError: the call failed.
    """
    with aws_errors(ctx, f"creating an image of builder {instance_id}"):
        reply = ec2_client(ctx).create_image(
            InstanceId=instance_id,
            Name=name,
            Description=description[:255],
            NoReboot=not reboot,
            TagSpecifications=[{"ResourceType": "image", "Tags": _ec2_tags(tags)}],
        )
    return str(reply["ImageId"])


def tag_image_snapshots(ctx: AwsContext, image: OurImage, tags: Sequence[tuple[str, str]]) -> None:
    """Put ``tags`` on the image's snapshots (so leftovers can be found and cost attributed).

    Raises:
        CredentialsError, CloudError: the call failed.
    """
    if not image.snapshot_ids:
        return
    with aws_errors(ctx, f"tagging the snapshots of {image.image_id}"):
        ec2_client(ctx).create_tags(Resources=list(image.snapshot_ids), Tags=_ec2_tags(tags))


def wait_image_available(
    ctx: AwsContext,
    image_id: str,
    *,
    snapshot_tags: Sequence[tuple[str, str]] = (),
    timeout_s: float = IMAGE_TIMEOUT_S,
    poll_s: float = IMAGE_POLL_S,
    on_progress: ProgressCallback = no_progress,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> OurImage:
    """Poll until the image is ``available``, tagging its snapshots with ``snapshot_tags`` as soon as they
    appear (so a build interrupted while waiting leaves no untagged snapshot).

    Returns:
        The available image.

    Raises:
        CloudError: the image ``failed`` (EC2's reason in the message), vanished, or is not available after
            ``timeout_s``.
    """
    start = clock()
    tagged: set[str] = set()
    last = ""
    while True:
        image = describe_our_image(ctx, image_id)
        if image is None:
            # A new image can be missing from describe calls for a moment.
            if clock() - start >= min(timeout_s, 60.0):
                raise CloudError(f"image {image_id} does not exist any more in {ctx.region}")
        else:
            untagged = [s for s in image.snapshot_ids if s not in tagged]
            if snapshot_tags and untagged:
                tag_image_snapshots(ctx, replace(image, snapshot_ids=tuple(untagged)), snapshot_tags)
                tagged.update(untagged)
                on_progress(ProgressEvent("image", f"tagged snapshot(s) {', '.join(untagged)}"))
            if image.state != last:
                on_progress(
                    ProgressEvent("image", f"{image_id}: {image.state} after {clock() - start:.0f} s")
                )
                last = image.state
            if image.state == "available":
                return image
            if image.state in ("failed", "deregistered", "error", "invalid"):
                raise CloudError(
                    f"image {image_id} is {image.state}"
                    + (f": {image.state_reason}" if image.state_reason else "")
                )
        if clock() - start >= timeout_s:
            raise CloudError(f"image {image_id} is still {last or 'unknown'} after {timeout_s:.0f} s")
        sleep(poll_s)
