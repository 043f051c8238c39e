"""What a region offers us and what we keep there: zones and prices per instance type, our images, pruning.

Orchestration behind ``gpu-transcribe zones``, ``images`` and ``images prune``: each function takes the
:class:`~gpu_transcribe.settings.Settings` (region, profile), calls the AWS layer and returns a frozen result;
nothing here prints. boto3 is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpu_transcribe.errors import CloudError

if TYPE_CHECKING:
    from gpu_transcribe.aws.ec2.images import ImageRemoval, OurImage, PruneDecision
    from gpu_transcribe.aws.ec2.models import ZonePrice
    from gpu_transcribe.settings import Settings


@dataclass(frozen=True)
class ZonePrices:
    """The zones offering each instance type, with spot and on-demand prices.

    Attributes:
        region: the region searched.
        instance_types: the types asked for, in order.
        rows: one row per (type, zone); the types in the order asked, each type's zones cheapest spot first,
            every row with the type's on-demand price.
    """

    region: str
    instance_types: tuple[str, ...]
    rows: tuple[ZonePrice, ...]

    @property
    def missing(self) -> tuple[str, ...]:
        """The types no zone of the region offers."""
        offered = {row.instance_type for row in self.rows}
        return tuple(t for t in self.instance_types if t not in offered)

    @property
    def on_demand_sources(self) -> tuple[str, ...]:
        """Where the on-demand prices came from (Pricing API, or the packaged table and its date), sorted."""
        return tuple(sorted({row.on_demand.source for row in self.rows if row.on_demand}))

    @property
    def error(self) -> CloudError | None:
        """The error to report when a type is offered nowhere (a typo, or a region without it), else None."""
        if not self.missing:
            return None
        return CloudError(f"no zone in {self.region} offers {', '.join(self.missing)}; check instance_types")


def zone_prices(settings: Settings) -> ZonePrices:
    """The zones and prices of each of ``settings.instance_types`` in ``settings.region``.

    Raises:
        CredentialsError, CloudError: an AWS call failed (a type offered nowhere is not an error here; see
            :attr:`ZonePrices.error`).
    """
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.ec2 import prices

    ctx = AwsContext.from_settings(settings)
    rows = [row for name in settings.instance_types for row in prices.zone_prices(ctx, name)]
    return ZonePrices(settings.region, tuple(settings.instance_types), tuple(rows))


@dataclass(frozen=True)
class ImageUse:
    """One image of ours and the live instances of ours launched from it.

    Attributes:
        image: the image.
        used_by: instance ids, sorted; empty when no live instance uses it.
    """

    image: OurImage
    used_by: tuple[str, ...]


@dataclass(frozen=True)
class ImageList:
    """Our images in a region.

    Attributes:
        region: the region searched.
        images: newest first.
    """

    region: str
    images: tuple[ImageUse, ...]


def list_images(settings: Settings) -> ImageList:
    """Our images (made by ``build-ami``) in ``settings.region``, newest first, and the instances using them.

    Raises:
        CredentialsError, CloudError: an AWS call failed.
    """
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.ec2 import images

    ctx = AwsContext.from_settings(settings)
    found = images.list_images(ctx)
    in_use = images.images_in_use(ctx)
    return ImageList(
        settings.region, tuple(ImageUse(image, in_use.get(image.image_id, ())) for image in found)
    )


@dataclass(frozen=True)
class PruneOutcome:
    """What ``images prune`` decided for one image, and what removing it did.

    Attributes:
        decision: keep or remove, and why.
        removal: what deregistering it and deleting its snapshots did; ``None`` when it was kept, or on a
            dry run.
    """

    decision: PruneDecision
    removal: ImageRemoval | None = None


@dataclass(frozen=True)
class PruneReport:
    """The result of ``images prune``.

    Attributes:
        region: the region pruned.
        keep: images kept per model and revision (the newest available ones).
        dry_run: nothing was changed.
        outcomes: one per image of ours, newest first.
    """

    region: str
    keep: int
    dry_run: bool
    outcomes: tuple[PruneOutcome, ...]

    @property
    def failed(self) -> tuple[tuple[str, str], ...]:
        """``(snapshot or image id, reason)`` for what could not be removed."""
        return tuple(item for o in self.outcomes if o.removal for item in o.removal.failed)

    @property
    def error(self) -> CloudError | None:
        """The error to report when some snapshot could not be deleted, else None."""
        if not self.failed:
            return None
        return CloudError(
            f"{len(self.failed)} snapshot(s) could not be deleted: "
            + "; ".join(f"{what}: {why}" for what, why in self.failed)
        )


def prune_images(settings: Settings, *, keep: int, dry_run: bool = False) -> PruneReport:
    """Deregister our images older than the newest ``keep`` of each model and delete their snapshots.

    Images in use by a live instance, and images still being created, are kept
    (:func:`gpu_transcribe.aws.ec2.images.plan_prune`). A snapshot that cannot be deleted does not stop the
    others; it is listed in :attr:`PruneReport.failed`.

    Args:
        keep: images to keep per model and revision, 0 or more.
        dry_run: decide, but change nothing.

    Raises:
        CredentialsError, CloudError: listing, or deregistering an image, failed.
        ValueError: ``keep`` is negative.
    """
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.ec2 import images

    ctx = AwsContext.from_settings(settings)
    decisions = images.plan_prune(images.list_images(ctx), keep, images.images_in_use(ctx))
    outcomes = []
    for decision in decisions:
        removal = None
        if decision.action == "remove" and not dry_run:
            image = decision.image
            removal = images.delete_image(ctx, image.image_id, snapshot_ids=image.snapshot_ids)
        outcomes.append(PruneOutcome(decision, removal))
    return PruneReport(settings.region, keep, dry_run, tuple(outcomes))
