"""Preflight: credentials first (STS), then the vCPU quotas of each market, before anything is created.

Quotas are Service Quotas values in vCPUs per family and market (docs.aws.amazon.com/ec2/latest/instancetypes/
ec2-instance-quotas.html): for G and VT instances ``L-3819A6DF`` "All G and VT Spot Instance Requests" and
``L-DB2E81BA`` "Running On-Demand G and VT instances". New accounts often have 0, which no zone can fix, so a
quota smaller than one instance is reported before launching. If the quota cannot be read (no permission, the
API unreachable) that is said and the launch goes on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gpu_transcribe.aws.clients import (
    CREDENTIAL_CODES,
    AwsContext,
    aws_errors,
    credentials_error,
    ec2_client,
    error_code,
    error_message,
    is_aws_error,
    quotas_client,
    sts_client,
)
from gpu_transcribe.aws.ec2.models import QuotaCheck
from gpu_transcribe.aws.models import CallerIdentity, Market
from gpu_transcribe.common import ProgressCallback, ProgressEvent, no_progress
from gpu_transcribe.errors import CloudError, QuotaError

# family class -> market -> (quota code, quota name as in the Service Quotas console)
QUOTAS: dict[str, dict[Market, tuple[str, str]]] = {
    "G and VT": {
        "spot": ("L-3819A6DF", "All G and VT Spot Instance Requests"),
        "on-demand": ("L-DB2E81BA", "Running On-Demand G and VT instances"),
    },
    "P": {
        "spot": ("L-7212CCBC", "All P Spot Instance Requests"),
        "on-demand": ("L-417A185B", "Running On-Demand P instances"),
    },
    "Standard": {
        "spot": ("L-34B43A08", "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests"),
        "on-demand": ("L-1216C47A", "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"),
    },
}
# Families whose first letter looks standard but which have quotas of their own (Inferentia, Trainium, DL,
# HPC).
_OWN_QUOTA_PREFIXES = ("inf", "trn", "dl", "hpc", "mac", "u-", "f", "x", "vt")


def quota_family(instance_type: str) -> str | None:
    """The quota family class of ``instance_type`` (``G and VT``, ``P``, ``Standard``), or ``None`` if
    unknown."""
    family = instance_type.split(".", 1)[0].lower()
    if family.startswith("vt") or family.startswith("g"):
        return "G and VT"
    if family.startswith("p"):
        return "P"
    if not family.startswith(_OWN_QUOTA_PREFIXES) and family[:1] in set("acdhimrtz"):
        return "Standard"
    return None


def caller_identity(ctx: AwsContext) -> CallerIdentity:
    """Check the credentials: who is calling (``sts get-caller-identity``).

    Raises:
        CredentialsError: none found, rejected or expired, or the profile does not exist; the message names
            the profile and region and says how to configure credentials.
        CloudError: STS could not be reached.
    """
    with aws_errors(ctx, "checking the AWS credentials (sts get-caller-identity)"):
        reply = sts_client(ctx).get_caller_identity()
    return CallerIdentity(account_id=reply["Account"], arn=reply["Arn"], user_id=reply["UserId"])


def instance_vcpus(ctx: AwsContext, instance_types: Sequence[str]) -> dict[str, int]:
    """Default vCPUs of each type (``DescribeInstanceTypes``).

    Raises:
        CloudError: a type does not exist in the region (``InvalidInstanceType``), or the call failed.
    """
    with aws_errors(ctx, f"looking up instance types {', '.join(instance_types)}"):
        reply = ec2_client(ctx).describe_instance_types(InstanceTypes=list(instance_types))  # type: ignore[arg-type]
    found: dict[str, int] = {
        t["InstanceType"]: int(t["VCpuInfo"]["DefaultVCpus"]) for t in reply.get("InstanceTypes", [])
    }
    missing = [t for t in instance_types if t not in found]
    if missing:
        raise CloudError(f"instance type {missing[0]} does not exist in {ctx.region}; check instance_types")
    return found


def _read_quota(ctx: AwsContext, code: str) -> tuple[float | None, str]:
    """``(value in vCPUs, "")``, or ``(None, why it could not be read)``."""
    client = quotas_client(ctx)
    try:
        return float(client.get_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"]), ""
    except Exception as exc:
        if not is_aws_error(exc):
            raise
        first = error_code(exc) or type(exc).__name__
        if first in CREDENTIAL_CODES:
            raise credentials_error(ctx, first, error_message(exc)) from None
    # A quota never changed may have no applied value: its default is the value then.
    try:
        return float(
            client.get_aws_default_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"]
        ), ""
    except Exception as exc:
        if not is_aws_error(exc):
            raise
        return None, f"{first}, then {error_code(exc) or type(exc).__name__}: {error_message(exc)}"


def check_quotas(
    ctx: AwsContext, instance_types: Sequence[str], markets: Sequence[Market]
) -> tuple[QuotaCheck, ...]:
    """Compare each market's vCPU quota with one instance of each type.

    Returns:
        One :class:`QuotaCheck` per (market, type), markets in the order given. Types of a family without a
        known quota code get ``quota_vcpus=None`` and a note.

    Raises:
        CredentialsError: the credentials were rejected.
        CloudError: an instance type does not exist in the region.
    """
    vcpus = instance_vcpus(ctx, instance_types)
    values: dict[str, tuple[float | None, str]] = {}
    checks = []
    for market in markets:
        for instance_type in instance_types:
            family = quota_family(instance_type)
            if family is None:
                checks.append(
                    QuotaCheck(
                        market, instance_type, "", "", vcpus[instance_type], None, "no known quota code"
                    )
                )
                continue
            code, name = QUOTAS[family][market]
            if code not in values:
                values[code] = _read_quota(ctx, code)
            value, note = values[code]
            checks.append(QuotaCheck(market, instance_type, code, name, vcpus[instance_type], value, note))
    return tuple(checks)


def quota_message(check: QuotaCheck, region: str) -> str:
    """One line: which quota is too small, by how much, and how to ask for more."""
    value = f"{check.quota_vcpus:g}" if check.quota_vcpus is not None else "unknown"
    return (
        f"{check.market} quota {check.quota_code} ({check.quota_name}) is {value} vCPUs in {region} "
        f"but one {check.instance_type} needs {check.needed_vcpus}: request more in the Service Quotas "
        f"console (Amazon EC2 > {check.quota_name}) or with `aws service-quotas "
        f"request-service-quota-increase --service-code ec2 --quota-code {check.quota_code} "
        f"--desired-value {check.needed_vcpus} --region {region}`"
    )


@dataclass(frozen=True)
class PreflightResult:
    """What preflight found.

    Attributes:
        identity: the caller.
        quota_checks: every (market, type) check.
        usable: ``(market, instance type)`` pairs worth trying, in the order to try them (quota not too
            small).
    """

    identity: CallerIdentity
    quota_checks: tuple[QuotaCheck, ...]
    usable: tuple[tuple[Market, str], ...]


def preflight(
    ctx: AwsContext,
    instance_types: Sequence[str],
    markets: Sequence[Market],
    *,
    on_progress: ProgressCallback = no_progress,
) -> PreflightResult:
    """Check credentials, then quotas; nothing is created.

    Raises:
        CredentialsError: as :func:`caller_identity`.
        QuotaError: no (market, type) has a quota that fits one instance; names the first quota and how to
            request more.
        CloudError: an instance type does not exist in the region, or AWS could not be reached.
    """
    identity = caller_identity(ctx)
    on_progress(ProgressEvent("preflight", f"credentials OK: {identity.arn} (account {identity.account_id})"))
    checks = check_quotas(ctx, instance_types, markets)
    usable: list[tuple[Market, str]] = []
    for check in checks:
        if check.ok is False:
            on_progress(ProgressEvent("quota", quota_message(check, ctx.region)))
        else:
            if check.ok is None:
                on_progress(
                    ProgressEvent(
                        "quota",
                        f"could not read the {check.market} quota {check.quota_code or '(unknown code)'} "
                        f"for {check.instance_type} ({check.note}); going on",
                    )
                )
            usable.append((check.market, check.instance_type))
    if not usable:
        first = next(c for c in checks if c.ok is False)
        others = [c for c in checks if c.ok is False and c is not first]
        message = quota_message(first, ctx.region)
        if others:
            message += "; also " + "; ".join(
                f"{c.market} quota {c.quota_code} is {c.quota_vcpus:g} vCPUs" for c in others
            )
        raise QuotaError(message, first.quota_code, first.quota_vcpus or 0.0, first.needed_vcpus)
    return PreflightResult(identity=identity, quota_checks=checks, usable=tuple(usable))
