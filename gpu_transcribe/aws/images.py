"""Our AMIs: list them by tag and choose the one a ``run`` uses.

An image built by ``gpu-transcribe build-ami`` carries tags saying what is inside it: the project version
(``gpu-transcribe:version``), the model and its revision, when it was made and the base AMI. ``run`` takes the
newest *available* image whose version and model match this client; an image of an older version is used
only with ``--update-engine`` (the current wheel is installed on the instance before transcribing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from gpu_transcribe.aws.clients import AwsContext, ec2_client, is_aws_error, raise_for
from gpu_transcribe.aws.models import TAG_CREATED, TAG_VERSION, parse_iso_utc
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
    try:
        raw = ec2_client(ctx).describe_images(
            Owners=["self"], Filters=[{"Name": "tag-key", "Values": [TAG_VERSION]}]
        )["Images"]
    except Exception as exc:
        if is_aws_error(exc):
            raise raise_for(ctx, exc, "listing gpu-transcribe images") from exc
        raise
    images = []
    for image in raw:
        tags = {t["Key"]: t["Value"] for t in image.get("Tags", [])}
        snapshots = [m["Ebs"] for m in image.get("BlockDeviceMappings", []) if "Ebs" in m]
        created = parse_iso_utc(tags.get(TAG_CREATED, "")) or parse_iso_utc(
            str(image.get("CreationDate", "")).replace(".000Z", "Z")
        )
        images.append(
            OurImage(
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
            )
        )
    return tuple(sorted(images, key=_newest_first))


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
