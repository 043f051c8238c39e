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
from dataclasses import replace
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
from gpu_transcribe.aws.ec2.instances import instance_info
from gpu_transcribe.aws.ec2.launch_plan import (
    ROOT_VOLUME_TYPE,
    ImageInfo,
    LaunchOption,
    LaunchPlan,
    describe_attempts,
    plan_launch,
)
from gpu_transcribe.aws.ec2.models import InstanceInfo, LaunchResult, LaunchSpec, QuotaCheck, RunResources
from gpu_transcribe.aws.ec2.prices import SPOT_SOURCE, on_demand_price
from gpu_transcribe.aws.ec2.resources import tag_specifications, teardown
from gpu_transcribe.aws.ec2.userdata import render_user_data
from gpu_transcribe.aws.models import Market
from gpu_transcribe.aws.retry import TRANSIENT_ATTEMPTS, retrying
from gpu_transcribe.common import ProgressCallback, ProgressEvent, no_progress
from gpu_transcribe.errors import (
    CapacityError,
    CloudError,
    GpuTranscribeError,
    LaunchAttempt,
    QuotaError,
)
from gpu_transcribe.ssh.keys import SshKeyPair, generate_ed25519


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
        :func:`gpu_transcribe.aws.ec2.instances.wait_until_ready`).

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
        login_user=spec.login_user,
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


def move_ssh_rule(ctx: AwsContext, group_id: str, old_cidr: str, new_cidr: str) -> None:
    """Let ``new_cidr`` reach port 22 through ``group_id`` instead of ``old_cidr`` (the caller's address
    changed while a server runs): the new rule first, then the old one revoked; a rule already there or
    already gone counts as done.

    Raises:
        CredentialsError, CloudError: EC2 refused.
    """
    ec2 = ec2_client(ctx)

    def permission(cidr: str) -> Any:
        description = "SSH from the gpu-transcribe client"
        if ip_network(cidr).version == 6:
            ranges: dict[str, Any] = {"Ipv6Ranges": [{"CidrIpv6": cidr, "Description": description}]}
        else:
            ranges = {"IpRanges": [{"CidrIp": cidr, "Description": description}]}
        return {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, **ranges}

    with aws_errors(ctx, f"opening port 22 to {new_cidr} in {group_id}"):
        try:
            ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[permission(new_cidr)])
        except Exception as exc:
            if error_code(exc) != "InvalidPermission.Duplicate":
                raise
    if old_cidr and old_cidr != new_cidr:
        with aws_errors(ctx, f"closing port 22 to {old_cidr} in {group_id}"):
            try:
                ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=[permission(old_cidr)])
            except Exception as exc:
                if error_code(exc) != "InvalidPermission.NotFound":
                    raise


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
            tried = describe_attempts(attempts)
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

    summary = describe_attempts(attempts)
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
