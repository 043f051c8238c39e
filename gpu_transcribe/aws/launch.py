"""Launch one instance safely: preflight, per-run keys, a locked-down security group, and the fallback order.

Order of tries (as the market setting allows; SkyPilot's failover, sky/provision/aws/instance.py):
for each market (spot, then on-demand), for each instance type in order of preference, each zone that offers
it, cheapest spot price first (on-demand uses the same zone order). A capacity error moves to the next option
at once (``RunInstances`` goes through a client with botocore's retries off); a transient error retries the
same option with capped, jittered backoff and the same ``ClientToken``; credential and permission errors stop
at once; a vCPU quota error (``VcpuLimitExceeded``) ends that market (quotas are regional) and stops at once
if it was the last one. Every try is a :class:`~gpu_transcribe.errors.LaunchAttempt` in the result, or in the
error.

Every instance gets: the run's key pair (ed25519, made here, private half kept in memory), the run's host key
through cloud-init (so the client verifies it strictly), a security group opening only port 22 and only to the
allowed CIDR, IMDSv2 required (``HttpTokens=required``, hop limit 1), an encrypted gp3 root volume deleted on
termination, ``InstanceInitiatedShutdownBehavior=terminate`` and the dead-man switch, and our tags on the
instance, its volume and network interface (and spot request), the key pair and the security group.

If the launch fails or is interrupted after creating something, what it created is torn down before the error
propagates; the run flow's own teardown by run id is still safe to call afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from ipaddress import ip_network
from typing import Any

from gpu_transcribe.aws.clients import (
    CAPACITY_CODES,
    CREDENTIAL_CODES,
    PERMISSION_CODES,
    QUOTA_CODES,
    TRANSIENT_CODES,
    AwsContext,
    aws_errors,
    cloud_error,
    credentials_error,
    ec2_client,
    error_code,
    error_message,
)
from gpu_transcribe.aws.instances import instance_info
from gpu_transcribe.aws.models import (
    CallerIdentity,
    InstanceInfo,
    LaunchResult,
    LaunchSpec,
    Market,
    QuotaCheck,
    RunResources,
    ZonePrice,
)
from gpu_transcribe.aws.preflight import preflight
from gpu_transcribe.aws.prices import SPOT_SOURCE, on_demand_price, rank_zones
from gpu_transcribe.aws.resources import run_tags, tag_specifications, teardown
from gpu_transcribe.aws.retry import TRANSIENT_ATTEMPTS, retrying
from gpu_transcribe.aws.userdata import render_user_data
from gpu_transcribe.common import ProgressCallback, ProgressEvent, no_progress, utc_now
from gpu_transcribe.errors import (
    CapacityError,
    CloudError,
    GpuTranscribeError,
    ImageNotFoundError,
    LaunchAttempt,
    QuotaError,
)
from gpu_transcribe.keys import SshKeyPair, generate_ed25519

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


def _run_instances_params(
    spec: LaunchSpec,
    option: LaunchOption,
    *,
    image: ImageInfo,
    key_name: str,
    security_group_id: str,
    user_data: str,
    tags: list[tuple[str, str]],
    client_token: str,
) -> dict[str, Any]:
    resource_types = ["instance", "volume", "network-interface"]
    if option.market == "spot":
        resource_types.append("spot-instances-request")
    params: dict[str, Any] = {
        "ImageId": spec.image_id,
        "InstanceType": option.instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "KeyName": key_name,
        "ClientToken": client_token,
        "NetworkInterfaces": [
            {
                "DeviceIndex": 0,
                "SubnetId": option.subnet_id,
                "Groups": [security_group_id],
                "AssociatePublicIpAddress": spec.associate_public_ip,
                "DeleteOnTermination": True,
            }
        ],
        "MetadataOptions": {
            "HttpTokens": "required",
            "HttpEndpoint": "enabled",
            "HttpPutResponseHopLimit": 1,
        },
        "BlockDeviceMappings": [
            {
                "DeviceName": image.root_device_name,
                "Ebs": {
                    "Encrypted": True,
                    "DeleteOnTermination": True,
                    "VolumeType": ROOT_VOLUME_TYPE,
                    "VolumeSize": max(spec.root_volume_size_gib or 0, image.root_volume_size_gib),
                },
            }
        ],
        "InstanceInitiatedShutdownBehavior": "terminate",
        "UserData": user_data,
        "TagSpecifications": tag_specifications(resource_types, tags),
    }
    if option.market == "spot":
        spot: dict[str, Any] = {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}
        if spec.max_spot_price_usd_per_hour is not None:
            spot["MaxPrice"] = f"{spec.max_spot_price_usd_per_hour:.4f}"
        params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": spot}
    if spec.iam_instance_profile:
        key = "Arn" if spec.iam_instance_profile.startswith("arn:") else "Name"
        params["IamInstanceProfile"] = {key: spec.iam_instance_profile}
    return params


def _run_once(
    ec2: Any,
    params: dict[str, Any],
    option: LaunchOption,
    attempts: list[LaunchAttempt],
    clock: Callable[[], float],
    on_progress: ProgressCallback,
) -> dict[str, Any]:
    """One ``RunInstances`` call, recorded as a :class:`LaunchAttempt` whatever its outcome."""
    started = clock()
    try:
        reply = ec2.run_instances(**params)
    except Exception as exc:
        code = error_code(exc) or type(exc).__name__
        attempts.append(
            LaunchAttempt(option.zone.zone, option.market, option.instance_type, code, clock() - started)
        )
        on_progress(
            ProgressEvent("attempt", f"{option.market} {option.instance_type} in {option.zone.zone}: {code}")
        )
        raise
    attempts.append(
        LaunchAttempt(option.zone.zone, option.market, option.instance_type, "", clock() - started)
    )
    return dict(reply)


def _describe_attempts(attempts: list[LaunchAttempt]) -> str:
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
            f"within the limits ({_describe_attempts(skipped) or 'markets: ' + spec.market}); "
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


def launch(
    ctx: AwsContext,
    spec: LaunchSpec,
    *,
    on_progress: ProgressCallback = no_progress,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    now: datetime | None = None,
    use_pricing_api: bool = True,
    plan: LaunchPlan | None = None,
) -> LaunchResult:
    """Launch one instance for ``spec``; nothing is left behind if it fails.

    Steps: preflight (credentials, quotas), the image, the network, zone ranking, a fresh client key pair and
    host key, the key pair and security group, then the tries in fallback order.

    Args:
        ctx: region, profile, endpoint.
        spec: what to launch; ``spec.run_id`` names and tags everything.
        on_progress: receives a :class:`ProgressEvent` per step and per try.
        clock: monotonic seconds, for attempt durations and backoff deadlines (injectable).
        sleep: how to wait between transient retries (injectable: tests never sleep).
        now: the wall-clock time for the ``created`` tag and the spot price query (default: now).
        use_pricing_api: ask the Pricing API for the on-demand price if on-demand launches (else the table).
        plan: a plan from :func:`plan_launch` for this spec (e.g. one shown to the user); else made here.

    Returns:
        The :class:`LaunchResult`; its ``public_ip`` may still be ``None`` (wait with
        :func:`gpu_transcribe.aws.instances.wait_until_ready`).

    Raises:
        CredentialsError: credentials missing or rejected (before anything is created, or at any step).
        QuotaError: every market's vCPU quota is too small for one instance, or exhausted.
        ImageNotFoundError: ``spec.image_id`` does not exist or is not available.
        CapacityError: every option failed; ``attempts`` lists them all.
        CloudError: anything else AWS refused (permissions, bad parameters), with the code and message.
    """
    plan = plan_launch(ctx, spec, on_progress=on_progress, now=now) if plan is None else plan
    if plan.spec != spec:
        raise ValueError("launch(): the plan was made for another spec")
    attempts = list(plan.skipped)
    options = list(plan.options)
    tags = list(plan.tags)
    created_at = plan.created_at
    client_key = generate_ed25519(f"gpu-transcribe-client-{spec.run_id}")
    host_key = generate_ed25519(f"gpu-transcribe-host-{spec.run_id}")
    user_data = render_user_data(
        host_private_key_openssh=host_key.private_key_openssh,
        host_public_key_openssh=host_key.public_key_openssh,
        max_lifetime_minutes=spec.max_lifetime_minutes,
        heartbeat_timeout_minutes=spec.heartbeat_timeout_minutes,
    )
    created = RunResources(run_id=spec.run_id)
    instance_ids: list[str] = []  # every instance a RunInstances reply named, for the undo
    try:
        key_name = _import_key_pair(ctx, spec, client_key, tags, on_progress)
        created = replace(created, key_name=key_name)
        group_id = _create_security_group(ctx, spec, plan.vpc_id, tags)
        created = replace(created, security_group_id=group_id)
        _allow_ssh(ctx, spec, group_id, on_progress)
        result = _try_options(
            ctx,
            spec,
            options,
            attempts,
            image=plan.image,
            key_name=key_name,
            security_group_id=group_id,
            user_data=user_data,
            tags=tags,
            on_progress=on_progress,
            clock=clock,
            sleep=sleep,
            instance_ids=instance_ids,
            use_pricing_api=use_pricing_api,
            quota_checks=plan.quota_checks,
        )
        instance, option, price_source, price = result
        on_progress(
            ProgressEvent(
                "launched",
                f"{instance.instance_id}: {option.market} {option.instance_type} in {option.zone.zone}"
                + (f" at ${price:.4f}/h" if price is not None else ""),
            )
        )
        launched = LaunchResult(
            run_id=spec.run_id,
            role=spec.role,
            region=ctx.region,
            instance_id=instance.instance_id,
            instance_type=option.instance_type,
            zone=instance.zone or option.zone.zone,
            market=option.market,
            price_usd_per_hour=price,
            price_source=price_source,
            public_ip=instance.public_ip,
            private_ip=instance.private_ip,
            image_id=spec.image_id,
            key_name=key_name,
            security_group_id=group_id,
            client_key=client_key,
            host_public_key=host_key.public_key_openssh,
            login_user=spec.login_user,
            owner_arn=plan.identity.arn,
            created_at=created_at,
            attempts=tuple(attempts),
        )
    except BaseException as exc:
        _undo(
            ctx,
            replace(created, instance_ids=tuple(instance_ids)),
            exc,
            on_progress=on_progress,
            clock=clock,
            sleep=sleep,
        )
        raise
    return launched


def _import_key_pair(
    ctx: AwsContext,
    spec: LaunchSpec,
    client_key: SshKeyPair,
    tags: list[tuple[str, str]],
    on_progress: ProgressCallback,
) -> str:
    """Import the client's public key as the run's key pair; returns its name."""
    with aws_errors(ctx, f"importing key pair {spec.name}"):
        ec2_client(ctx).import_key_pair(
            KeyName=spec.name,
            PublicKeyMaterial=client_key.public_key_openssh.encode("ascii"),
            TagSpecifications=tag_specifications(["key-pair"], tags),
        )
    on_progress(ProgressEvent("key-pair", f"key pair {spec.name} ({client_key.fingerprint_sha256})"))
    return spec.name


def _create_security_group(
    ctx: AwsContext, spec: LaunchSpec, vpc_id: str, tags: list[tuple[str, str]]
) -> str:
    """Create the run's security group (no ingress yet; EC2's default egress); returns its id."""
    with aws_errors(ctx, f"creating security group {spec.name}"):
        return ec2_client(ctx).create_security_group(
            GroupName=spec.name,
            Description=f"gpu-transcribe {spec.role} {spec.run_id}: SSH from {spec.ssh_cidr} only",
            VpcId=vpc_id,
            TagSpecifications=tag_specifications(["security-group"], tags),
        )["GroupId"]


def _allow_ssh(ctx: AwsContext, spec: LaunchSpec, group_id: str, on_progress: ProgressCallback) -> None:
    """Open TCP port 22 in ``group_id`` to ``spec.ssh_cidr`` only (IPv4 or IPv6)."""
    description = "SSH from the gpu-transcribe client"
    if ip_network(spec.ssh_cidr).version == 6:
        ranges: dict[str, Any] = {"Ipv6Ranges": [{"CidrIpv6": spec.ssh_cidr, "Description": description}]}
    else:
        ranges = {"IpRanges": [{"CidrIp": spec.ssh_cidr, "Description": description}]}
    permission: Any = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, **ranges}
    with aws_errors(ctx, f"opening port 22 to {spec.ssh_cidr} in {group_id}"):
        ec2_client(ctx).authorize_security_group_ingress(GroupId=group_id, IpPermissions=[permission])
    on_progress(
        ProgressEvent("security-group", f"security group {group_id}: port 22 from {spec.ssh_cidr} only")
    )


def _try_options(
    ctx: AwsContext,
    spec: LaunchSpec,
    options: list[LaunchOption],
    attempts: list[LaunchAttempt],
    *,
    image: ImageInfo,
    key_name: str,
    security_group_id: str,
    user_data: str,
    tags: list[tuple[str, str]],
    on_progress: ProgressCallback,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    instance_ids: list[str],
    use_pricing_api: bool,
    quota_checks: tuple[QuotaCheck, ...] = (),
) -> tuple[InstanceInfo, LaunchOption, str, float | None]:
    """Try each option in order; the first success as ``(InstanceInfo, option, price source, price)``."""
    ec2 = ec2_client(ctx, fail_fast=True)
    exhausted: set[Market] = set()
    quota_failure: tuple[str, str] | None = None  # (market, message)
    for number, option in enumerate(options, start=1):
        if option.market in exhausted:
            continue
        where = f"{option.market} {option.instance_type} in {option.zone.zone}"
        params = _run_instances_params(
            spec,
            option,
            image=image,
            key_name=key_name,
            security_group_id=security_group_id,
            user_data=user_data,
            tags=tags,
            client_token=f"{spec.run_id}-{number}",
        )

        on_progress(ProgressEvent("attempt", f"trying {where}"))
        try:
            reply = retrying(
                retry_on=lambda exc: error_code(exc) in TRANSIENT_CODES,
                attempts=TRANSIENT_ATTEMPTS,
                clock=clock,
                sleep=sleep,
            )(_run_once, ec2, params, option, attempts, clock, on_progress)
        except Exception as exc:
            code = error_code(exc)
            if not code:
                raise
            if code in CAPACITY_CODES or code in TRANSIENT_CODES:
                continue
            if code in QUOTA_CODES:
                exhausted.add(option.market)
                quota_failure = (option.market, f"{code}: {error_message(exc)}")
                if all(o.market in exhausted for o in options[number:]):
                    break
                on_progress(
                    ProgressEvent("attempt", f"{option.market} vCPU quota exhausted ({code}); next market")
                )
                continue
            if code in CREDENTIAL_CODES:
                raise credentials_error(ctx, code, error_message(exc)) from exc
            if code in PERMISSION_CODES:
                raise cloud_error(ctx, exc, f"launching {where}") from exc
            tried = _describe_attempts(attempts)
            raise CloudError(
                f"launching {where} failed ({code}): {error_message(exc)}; tried: {tried}"
            ) from exc
        instances = reply.get("Instances", [])
        if not instances:
            raise CloudError(f"launching {where}: RunInstances returned no instance")
        instance = instance_info(instances[0])
        instance_ids.append(instance.instance_id)
        if option.market == "spot":
            return instance, option, SPOT_SOURCE, option.zone.spot_price_usd_per_hour
        od = on_demand_price(ctx, option.instance_type, use_pricing_api=use_pricing_api)
        return instance, option, od.source, od.price_usd_per_hour

    summary = _describe_attempts(attempts)
    if quota_failure is not None and all(o.market in exhausted for o in options):
        market, detail = quota_failure
        check = next((c for c in quota_checks if c.market == market and c.quota_code), None)
        quota = f" {check.quota_code} ({check.quota_name})" if check else ""
        raise QuotaError(
            f"the {market} vCPU quota{quota} for {', '.join(spec.instance_types)} in {ctx.region} is used up "
            f"by other instances ({detail}); stop some, or request more in the Service Quotas console; "
            f"tried: {summary}",
            quota_code=check.quota_code if check else "",
            quota_vcpus=check.quota_vcpus or 0.0 if check else 0.0,
            needed_vcpus=check.needed_vcpus if check else 0,
        )
    raise CapacityError(
        f"no capacity for {', '.join(spec.instance_types)} in {ctx.region} after {len(attempts)} attempt(s): "
        f"{summary}; try again later, or set other instance_types, market or region",
        attempts,
    )


def _undo(
    ctx: AwsContext,
    created: RunResources,
    error: BaseException,
    *,
    on_progress: ProgressCallback,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> None:
    """Tear down what a failed launch created (by run id, so an instance we never heard of is found too)."""
    on_progress(
        ProgressEvent("terminate", f"launch failed ({type(error).__name__}); removing run {created.run_id}")
    )
    try:
        teardown(ctx, created, on_progress=on_progress, clock=clock, sleep=sleep)
    except GpuTranscribeError as exc:
        on_progress(ProgressEvent("note", f"could not remove everything of run {created.run_id}: {exc}"))
