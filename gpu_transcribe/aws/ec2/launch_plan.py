"""What a launch will try, decided before anything is created: the image, the network, the zones ranked by
live spot price, the options in fallback order and the tags (``run --dry-run`` and ``build-ami --dry-run``
print it; :func:`gpu_transcribe.aws.ec2.launch.launch` follows it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from gpu_transcribe.aws.clients import AwsContext, aws_errors, ec2_client, error_code
from gpu_transcribe.aws.ec2.models import LaunchSpec, QuotaCheck, ZonePrice
from gpu_transcribe.aws.ec2.preflight import preflight
from gpu_transcribe.aws.ec2.prices import rank_zones
from gpu_transcribe.aws.ec2.resources import run_tags
from gpu_transcribe.aws.models import CallerIdentity, Market
from gpu_transcribe.common import ProgressCallback, ProgressEvent, no_progress, utc_now
from gpu_transcribe.errors import CapacityError, CloudError, ImageNotFoundError, LaunchAttempt

#: Our own code in a :class:`LaunchAttempt` for a zone not tried because its spot price is above the maximum.
SKIPPED_ABOVE_MAX_PRICE = "SpotPriceAboveMax"
ROOT_VOLUME_TYPE = "gp3"


@dataclass(frozen=True)
class ImageInfo:
    """What launching needs to know about an AMI.

    Attributes:
        image_id: the AMI id.
        root_device_name: e.g. ``/dev/sda1``.
        root_volume_size_gib: size of the root snapshot.
        name: the AMI's name.
    """

    image_id: str
    root_device_name: str
    root_volume_size_gib: int
    name: str


#: Error codes of an image id that names no usable image.
_IMAGE_GONE = ("InvalidAMIID.NotFound", "InvalidAMIID.Malformed", "InvalidAMIID.Unavailable")


def describe_image(ctx: AwsContext, image_id: str) -> ImageInfo:
    """The AMI's root device and size.

    Raises:
        ImageNotFoundError: no such image in the region, or it is not ``available``.
        CredentialsError, CloudError: the call failed.
    """
    with aws_errors(ctx, f"describing image {image_id}"):
        try:
            images = ec2_client(ctx).describe_images(ImageIds=[image_id]).get("Images", [])
        except Exception as exc:
            if error_code(exc) not in _IMAGE_GONE:
                raise
            images = []
    if not images:
        raise ImageNotFoundError(
            f"image {image_id} does not exist in {ctx.region} (or is not shared with you)"
        )
    image = images[0]
    if image.get("State", "available") != "available":
        raise ImageNotFoundError(f"image {image_id} is {image.get('State')}, not available")
    root = image.get("RootDeviceName") or "/dev/sda1"
    size = 8
    for mapping in image.get("BlockDeviceMappings", []):
        if mapping.get("DeviceName") == root and "Ebs" in mapping:
            size = int(mapping["Ebs"].get("VolumeSize", size))
    return ImageInfo(
        image_id=image_id, root_device_name=root, root_volume_size_gib=size, name=image.get("Name", "")
    )


def subnets_by_zone(
    ctx: AwsContext, *, subnet_id: str | None, vpc_id: str | None
) -> tuple[str, dict[str, str]]:
    """The VPC to use and one subnet per zone.

    ``subnet_id`` alone pins one zone; ``vpc_id`` (or the region's default VPC) gives a subnet per zone,
    preferring default-for-zone subnets, then subnets that map public IPs, then the most free addresses.

    Returns:
        ``(vpc id, {zone: subnet id})``.

    Raises:
        CloudError: no such subnet or VPC, or no default VPC (set ``subnet_id`` or ``vpc_id`` then).
    """
    ec2 = ec2_client(ctx)
    with aws_errors(ctx, f"looking up subnet {subnet_id or ''} / VPC {vpc_id or 'default'}"):
        if subnet_id:
            subnets = ec2.describe_subnets(SubnetIds=[subnet_id]).get("Subnets", [])
        else:
            if not vpc_id:
                vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}]).get("Vpcs", [])
                if not vpcs:
                    raise CloudError(
                        f"{ctx.region} has no default VPC; set subnet_id or vpc_id (gpu-transcribe.toml or "
                        "GPU_TRANSCRIBE_SUBNET_ID / GPU_TRANSCRIBE_VPC_ID)"
                    )
                vpc_id = vpcs[0]["VpcId"]
            subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}]).get(
                "Subnets", []
            )
    subnets = [s for s in subnets if s.get("State", "available") == "available"]
    if not subnets:
        raise CloudError(f"no available subnet in {subnet_id or vpc_id} ({ctx.region})")
    subnets.sort(
        key=lambda s: (
            not s.get("DefaultForAz", False),
            not s.get("MapPublicIpOnLaunch", False),
            -int(s.get("AvailableIpAddressCount", 0)),
            s["SubnetId"],
        )
    )
    chosen: dict[str, str] = {}
    for subnet in subnets:
        chosen.setdefault(subnet["AvailabilityZone"], subnet["SubnetId"])
    return subnets[0]["VpcId"], chosen


@dataclass(frozen=True)
class LaunchOption:
    """One (market, instance type, zone) to try, in the order of the plan.

    Attributes:
        market: ``spot`` or ``on-demand``.
        instance_type: e.g. ``g4dn.xlarge``.
        zone: the zone with its current spot price.
        subnet_id: the subnet used in that zone.
    """

    market: Market
    instance_type: str
    zone: ZonePrice
    subnet_id: str


@dataclass(frozen=True)
class LaunchPlan:
    """Everything :func:`launch` decides before creating anything (``run --dry-run`` prints it).

    Attributes:
        spec: what to launch.
        identity: the caller (owner tag).
        quota_checks: each (market, type) quota compared with one instance.
        image: the AMI's root device and size.
        vpc_id: the VPC of the security group.
        options: the tries in order.
        skipped: zones not tried because their spot price is above the maximum (``SpotPriceAboveMax``).
        tags: the tags every resource will carry.
        created_at: the ``gpu-transcribe:created`` time (UTC).
    """

    spec: LaunchSpec
    identity: CallerIdentity
    quota_checks: tuple[QuotaCheck, ...]
    image: ImageInfo
    vpc_id: str
    options: tuple[LaunchOption, ...]
    skipped: tuple[LaunchAttempt, ...]
    tags: tuple[tuple[str, str], ...]
    created_at: datetime

    def trying_last(self, market: str, zone: str, instance_type: str) -> LaunchPlan:
        """This plan with every option of ``(market, zone, instance_type)`` moved to the end, the others in
        their order: after a spot interruption the zone that lost the instance is tried last."""
        last = [
            o
            for o in self.options
            if (o.market, o.zone.zone, o.instance_type) == (market, zone, instance_type)
        ]
        first = [o for o in self.options if o not in last]
        return replace(self, options=tuple(first + last))


def plan_options(
    spec: LaunchSpec,
    usable: tuple[tuple[Market, str], ...],
    rankings: dict[str, tuple[ZonePrice, ...]],
    subnets: dict[str, str],
) -> tuple[list[LaunchOption], list[LaunchAttempt]]:
    """The options to try in order, and the zones skipped for their spot price (as attempts with 0 s)."""
    options: list[LaunchOption] = []
    skipped: list[LaunchAttempt] = []
    for market in spec.markets:
        for instance_type in spec.instance_types:
            if (market, instance_type) not in usable:
                continue
            for zone in rankings.get(instance_type, ()):
                if zone.zone not in subnets:
                    continue
                price = zone.spot_price_usd_per_hour
                if (
                    market == "spot"
                    and spec.max_spot_price_usd_per_hour is not None
                    and price is not None
                    and price > spec.max_spot_price_usd_per_hour
                ):
                    skipped.append(
                        LaunchAttempt(zone.zone, market, instance_type, SKIPPED_ABOVE_MAX_PRICE, 0.0)
                    )
                    continue
                options.append(LaunchOption(market, instance_type, zone, subnets[zone.zone]))
    return options, skipped


def describe_attempts(attempts: list[LaunchAttempt]) -> str:
    """The attempts in one line: ``spot g4dn.xlarge in eu-north-1a: InsufficientInstanceCapacity (0.4 s)``."""
    return "; ".join(
        f"{a.market} {a.instance_type} in {a.zone}: {a.error_code or 'OK'} ({a.seconds:.1f} s)"
        for a in attempts
    )


def plan_launch(
    ctx: AwsContext,
    spec: LaunchSpec,
    *,
    on_progress: ProgressCallback = no_progress,
    now: datetime | None = None,
) -> LaunchPlan:
    """Decide what :func:`launch` will try, creating nothing: preflight (credentials, then quotas), the image,
    the network, the zones ranked by spot price, the options in order and the tags.

    Raises:
        CredentialsError: credentials missing or rejected.
        QuotaError: every market's vCPU quota is too small for one instance.
        ImageNotFoundError: ``spec.image_id`` does not exist or is not available.
        CapacityError: no option is left (no zone with a subnet offers the types, or every spot price is above
            the maximum and on-demand is not allowed).
        CloudError: AWS refused a call (permissions, a missing subnet or VPC).
    """
    created_at = now or utc_now()
    pre = preflight(ctx, spec.instance_types, spec.markets, on_progress=on_progress)
    image = describe_image(ctx, spec.image_id)
    vpc_id, subnets = subnets_by_zone(ctx, subnet_id=spec.subnet_id, vpc_id=spec.vpc_id)
    rankings: dict[str, tuple[ZonePrice, ...]] = {}
    for instance_type in spec.instance_types:
        rankings[instance_type] = rank_zones(ctx, instance_type, now=created_at)
        order = ", ".join(
            f"{z.zone} "
            + (f"${z.spot_price_usd_per_hour:.4f}/h" if z.spot_price_usd_per_hour is not None else "no price")
            for z in rankings[instance_type]
        )
        on_progress(
            ProgressEvent("zones", f"{instance_type} spot prices, cheapest first: {order or 'no zone'}")
        )
    options, skipped = plan_options(spec, pre.usable, rankings, subnets)
    if not options:
        raise CapacityError(
            f"nothing to try in {ctx.region}: no zone with a subnet offers {', '.join(spec.instance_types)} "
            f"within the limits ({describe_attempts(skipped) or 'markets: ' + spec.market}); "
            "change instance_types, max_spot_price_usd_per_hour, subnet_id/vpc_id or region",
            skipped,
        )
    tags = run_tags(
        run_id=spec.run_id,
        owner_arn=pre.identity.arn,
        created_at=created_at,
        role=spec.role,
        name=spec.name,
        extra=spec.extra_tags,
    )
    return LaunchPlan(
        spec=spec,
        identity=pre.identity,
        quota_checks=pre.quota_checks,
        image=image,
        vpc_id=vpc_id,
        options=tuple(options),
        skipped=tuple(skipped),
        tags=tuple(tags),
        created_at=created_at,
    )
