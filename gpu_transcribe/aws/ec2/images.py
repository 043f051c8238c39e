"""Our AMIs: list them by tag, choose the one a ``run`` uses, and remove old ones (``images prune``, and an
unfinished image of a failed build). Making one is :mod:`gpu_transcribe.aws.ec2.image_create`.

An image built by ``gpu-transcribe build-ami`` carries tags saying what is inside it: the project version
(``gpu-transcribe:version``), the model and its revision, when it was made and the base AMI. ``run`` takes the
newest *available* image whose version and model match this client; an image of an older version is used
only with ``--update-engine`` (the current wheel is installed on the instance before transcribing).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gpu_transcribe.aws.clients import (
    CREDENTIAL_CODES,
    AwsContext,
    aws_errors,
    cloud_error,
    ec2_client,
    error_code,
    error_message,
    is_aws_error,
)
from gpu_transcribe.aws.models import TAG_CREATED, TAG_VERSION
from gpu_transcribe.aws.retry import retrying
from gpu_transcribe.common import parse_iso_utc
from gpu_transcribe.errors import ImageNotFoundError

TAG_MODEL = "gpu-transcribe:model"
TAG_REVISION = "gpu-transcribe:revision"  # "" when the model's default branch was cached
TAG_BASE_AMI = "gpu-transcribe:base-ami"


@dataclass(frozen=True)
class OurImage:
    """One AMI made by ``build-ami``.

    Attributes:
        image_id: e.g. ``ami-0123456789abcdef0``.
        name: the AMI name.
        state: ``available``, ``pending`` or ``failed``.
        version: the gpu-transcribe version installed in it.
        model: the Whisper model cached in it (Hugging Face id).
        revision: the model revision cached, ``""`` for the default branch.
        created_at: from the ``gpu-transcribe:created`` tag (else EC2's ``CreationDate``), UTC; ``None`` if
            neither parses.
        size_gib: total size of its EBS snapshots' volumes, GiB.
        snapshot_ids: its EBS snapshots.
        base_image_id: the AMI it was built from (``""`` if not tagged).
        state_reason: EC2's reason for a ``failed`` state, else ``""``.
    """

    image_id: str
    name: str
    state: str
    version: str
    model: str
    revision: str
    created_at: datetime | None
    size_gib: int
    snapshot_ids: tuple[str, ...]
    base_image_id: str = ""
    state_reason: str = ""


def _version_key(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("."):
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def list_images(ctx: AwsContext) -> tuple[OurImage, ...]:
    """Our images in the region (owner ``self``, tagged with ``gpu-transcribe:version``), newest first.

    Raises:
        CredentialsError, CloudError: the describe call failed.
    """
    with aws_errors(ctx, "listing gpu-transcribe images"):
        raw = ec2_client(ctx).describe_images(
            Owners=["self"], Filters=[{"Name": "tag-key", "Values": [TAG_VERSION]}]
        )["Images"]
    return tuple(sorted((_our_image(image) for image in raw), key=_newest_first))


def _our_image(image: Mapping[str, Any]) -> OurImage:
    """An :class:`OurImage` from one ``DescribeImages`` image dict."""
    tags = {t["Key"]: t["Value"] for t in image.get("Tags", [])}
    snapshots = [m["Ebs"] for m in image.get("BlockDeviceMappings", []) if "Ebs" in m]
    created = parse_iso_utc(tags.get(TAG_CREATED, "")) or parse_iso_utc(
        str(image.get("CreationDate", "")).replace(".000Z", "Z")
    )
    return OurImage(
        image_id=image["ImageId"],
        name=image.get("Name", ""),
        state=image.get("State", "available"),
        version=tags.get(TAG_VERSION, ""),
        model=tags.get(TAG_MODEL, ""),
        revision=tags.get(TAG_REVISION, ""),
        created_at=created,
        size_gib=sum(int(s.get("VolumeSize", 0)) for s in snapshots),
        snapshot_ids=tuple(s["SnapshotId"] for s in snapshots if s.get("SnapshotId")),
        base_image_id=tags.get(TAG_BASE_AMI, ""),
        state_reason=str((image.get("StateReason") or {}).get("Message", "")),
    )


def _newest_first(image: OurImage) -> tuple[float, str]:
    return (-(image.created_at.timestamp() if image.created_at else 0.0), image.image_id)


def select_run_image(
    images: Sequence[OurImage],
    *,
    version: str,
    model: str,
    revision: str | None,
    region: str,
    allow_older_version: bool = False,
) -> OurImage:
    """The image a run should use: the newest available one for this version and model.

    Args:
        images: candidates, e.g. from :func:`list_images`.
        version: this client's version (``gpu_transcribe.__version__``).
        model: the model the run asks for; the image must have it cached (runs load it offline).
        revision: the model revision asked for, or ``None`` for any cached revision.
        region: for messages.
        allow_older_version: with ``--update-engine``: if no image has this version, take the newest image
            of the model whatever its version (the run installs the current wheel on it first).

    Raises:
        ImageNotFoundError: nothing fits; the message says what exists and what to do (``build-ami``, or
            ``--update-engine`` when an image of another version has the model).
    """
    usable = [
        i
        for i in images
        if i.state == "available" and i.model == model and (revision is None or i.revision == revision)
    ]
    usable.sort(key=_newest_first)
    exact = [i for i in usable if i.version == version]
    if exact:
        return exact[0]
    build = f"gpu-transcribe build-ami --model {model}" + (f" --revision {revision}" if revision else "")
    if usable:
        other = usable[0]
        if allow_older_version:
            return other
        newer = _version_key(other.version) > _version_key(version)
        return_hint = (
            "upgrade this client (pip install -U gpu-transcribe)"
            if newer
            else f"run `{build}` to build one, or add --update-engine to install {version} on it at start-up"
        )
        raise ImageNotFoundError(
            f"no image in {region} has gpu-transcribe {version} with {model}; the newest with that model is "
            f"{other.image_id} (version {other.version}): {return_hint}"
        )
    pending = [i for i in images if i.model == model and i.state == "pending"]
    if pending:
        raise ImageNotFoundError(
            f"the image for {model} in {region} ({pending[0].image_id}) is still being created; "
            "wait for it to become available (gpu-transcribe images)"
        )
    others = sorted({i.model for i in images if i.state == "available"})
    also = f" (images exist for: {', '.join(others)}; choose one with --model)" if others else ""
    raise ImageNotFoundError(
        f"no gpu-transcribe image in {region} has {model} cached{also}: run `{build}` first (it builds the "
        "GPU image once; later runs reuse it), or set image_id"
    )


# --- build-ami: the base image, imaging the builder, waiting ---------------------------------------------

#: Error codes of an image that does not exist (any more).
_IMAGE_GONE = ("InvalidAMIID.NotFound", "InvalidAMIID.Unavailable")


@dataclass(frozen=True)
class ImageRemoval:
    """What deleting one image did.

    Attributes:
        image_id: the AMI.
        deregistered: it was deregistered now (``False``: it was gone already).
        deleted_snapshots: snapshots deleted.
        failed: ``(snapshot or image id, reason)`` for what could not be removed.
    """

    image_id: str
    deregistered: bool
    deleted_snapshots: tuple[str, ...]
    failed: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class PruneDecision:
    """``images prune``'s verdict on one image.

    Attributes:
        image: the image.
        action: ``keep`` or ``remove``.
        reason: why (``newest 2 of the model``, ``in use by i-0abc``, ``older than the newest 2``...).
    """

    image: OurImage
    action: str
    reason: str


def describe_our_image(ctx: AwsContext, image_id: str) -> OurImage | None:
    """One image as :class:`OurImage` (whatever its tags), or ``None`` if EC2 does not know it.

    Raises:
        CredentialsError, CloudError: the call failed.
    """
    with aws_errors(ctx, f"describing image {image_id}"):
        try:
            raw = ec2_client(ctx).describe_images(ImageIds=[image_id])["Images"]
        except Exception as exc:
            if error_code(exc) in _IMAGE_GONE:
                return None
            raise
    return _our_image(raw[0]) if raw else None


def _delete_snapshot(
    ec2: Any, snapshot_id: str, clock: Callable[[], float], sleep: Callable[[float], None]
) -> bool:
    """Delete one snapshot; ``False`` if it was gone already. Retries ``InvalidSnapshot.InUse`` for a while:
    EC2 may still count a just-deregistered image as using it."""
    try:
        for attempt in retrying(
            retry_on=lambda exc: error_code(exc) == "InvalidSnapshot.InUse",
            attempts=None,
            timeout_s=120.0,
            base_s=2.0,
            cap_s=15.0,
            clock=clock,
            sleep=sleep,
        ):
            with attempt:
                ec2.delete_snapshot(SnapshotId=snapshot_id)
    except Exception as exc:
        if error_code(exc) == "InvalidSnapshot.NotFound":
            return False
        raise
    return True


def delete_image(
    ctx: AwsContext,
    image_id: str,
    *,
    snapshot_ids: Sequence[str] = (),
    run_id: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ImageRemoval:
    """Deregister an image and delete its snapshots. Idempotent: a second call finds nothing and says so.

    The snapshots are the image's own (from describe, if it still exists), ``snapshot_ids`` (known from
    earlier), snapshots tagged with ``run_id`` (those :func:`wait_image_available` tagged), and those EC2
    describes as made for it (``Created by CreateImage(...) for <image id>``). ``DeregisterImage`` does not
    delete snapshots by itself.

    Returns:
        What was done; ``failed`` lists what could not be removed (never raises for one snapshot).

    Raises:
        CredentialsError: the credentials were rejected.
        CloudError: the image could not be described or deregistered.
    """
    from gpu_transcribe.aws.models import TAG_RUN_ID

    ec2 = ec2_client(ctx)
    image = describe_our_image(ctx, image_id)
    snapshots = dict.fromkeys([*(image.snapshot_ids if image else ()), *snapshot_ids])
    # EC2 describes them as "Created by CreateImage(i-...) for ami-..." (some with " from vol-..." after it);
    # no trailing "*" right after the id, so that an 8-digit id cannot match a longer one.
    described = [f"*for {image_id}", f"*for {image_id} *"]
    filters: list[list[Any]] = [[{"Name": "description", "Values": described}]]
    if run_id:
        filters.append([{"Name": f"tag:{TAG_RUN_ID}", "Values": [run_id]}])
    for extra in filters:
        try:
            found = ec2.describe_snapshots(OwnerIds=["self"], Filters=extra)["Snapshots"]
        except Exception as exc:
            if not is_aws_error(exc):
                raise
            if error_code(exc) in CREDENTIAL_CODES:
                raise cloud_error(ctx, exc, f"listing the snapshots of {image_id}") from exc
            continue  # best effort: the image's own snapshots are already known
        snapshots.update(dict.fromkeys(s["SnapshotId"] for s in found))
    deregistered = False
    if image is not None:
        with aws_errors(ctx, f"deregistering image {image_id}"):
            try:
                ec2.deregister_image(ImageId=image_id)
                deregistered = True
            except Exception as exc:
                if error_code(exc) not in _IMAGE_GONE:
                    raise
    deleted: list[str] = []
    failed: list[tuple[str, str]] = []
    for snapshot_id in snapshots:
        try:
            if _delete_snapshot(ec2, snapshot_id, clock, sleep):
                deleted.append(snapshot_id)
        except Exception as exc:
            if not is_aws_error(exc):
                raise
            if error_code(exc) in CREDENTIAL_CODES:
                raise cloud_error(ctx, exc, f"deleting snapshot {snapshot_id}") from exc
            failed.append((snapshot_id, f"{error_code(exc)}: {error_message(exc)}"))
    return ImageRemoval(image_id, deregistered, tuple(deleted), tuple(failed))


def images_in_use(ctx: AwsContext) -> dict[str, tuple[str, ...]]:
    """Images that live instances of ours were launched from: ``{image id: (instance ids)}``.

    "Ours": tagged ``gpu-transcribe:run-id``; "live": any state but ``terminated`` (a stopped or
    stopping instance still needs its image to start again; ``shutting-down`` is counted until it is gone).

    Raises:
        CredentialsError, CloudError: the describe call failed.
    """
    from gpu_transcribe.aws.ec2.models import LIVE_STATES
    from gpu_transcribe.aws.models import TAG_RUN_ID

    used: dict[str, list[str]] = {}
    with aws_errors(ctx, "listing the instances of gpu-transcribe"):
        pages = (
            ec2_client(ctx)
            .get_paginator("describe_instances")
            .paginate(
                Filters=[
                    {"Name": "tag-key", "Values": [TAG_RUN_ID]},
                    {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
                ]
            )
        )
        for page in pages:
            for reservation in page.get("Reservations", []):
                for raw in reservation.get("Instances", []):
                    if raw.get("State", {}).get("Name") in LIVE_STATES and raw.get("ImageId"):
                        used.setdefault(raw["ImageId"], []).append(raw["InstanceId"])
    return {image_id: tuple(sorted(ids)) for image_id, ids in used.items()}


def plan_prune(
    images: Sequence[OurImage], keep: int, in_use: Mapping[str, Sequence[str]]
) -> tuple[PruneDecision, ...]:
    """Which images ``images prune --keep N`` removes.

    Per model and revision, the ``keep`` newest *available* images stay; older available images and
    ``failed`` ones go. An image in use by a live instance always stays, and so does a ``pending`` one
    (a build may still be making it). Grouping by model keeps the only image of a second model from being
    pruned by the newer images of the first.

    Returns:
        One decision per image, newest first.

    Raises:
        ValueError: ``keep`` is negative.
    """
    if keep < 0:
        raise ValueError(f"keep must be 0 or more, not {keep}")
    decisions: list[PruneDecision] = []
    kept_per_model: dict[tuple[str, str], int] = {}
    for image in sorted(images, key=_newest_first):
        group = (image.model, image.revision)
        users = tuple(in_use.get(image.image_id, ()))
        if image.state == "available":
            rank = kept_per_model.get(group, 0)
            kept_per_model[group] = rank + 1
            if rank < keep:
                decisions.append(PruneDecision(image, "keep", f"newest {keep} of {image.model}"))
                continue
        if users:
            decisions.append(PruneDecision(image, "keep", f"in use by {', '.join(users)}"))
        elif image.state == "pending":
            decisions.append(PruneDecision(image, "keep", "still being created"))
        elif image.state == "available":
            decisions.append(PruneDecision(image, "remove", f"older than the newest {keep} of {image.model}"))
        else:
            decisions.append(PruneDecision(image, "remove", f"{image.state}: unusable"))
    return tuple(decisions)
