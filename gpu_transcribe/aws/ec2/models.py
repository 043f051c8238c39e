"""Frozen data classes of the EC2 lifecycle: prices and quotas, what to launch and what launched, the
instances EC2 describes, and the resources teardown and cleanup remove.

Nothing here imports boto3. The tag names and the shared types (:data:`~gpu_transcribe.aws.models.Market`,
:data:`~gpu_transcribe.aws.models.Role`) are in :mod:`gpu_transcribe.aws.models`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from ipaddress import ip_network
from typing import Literal

from gpu_transcribe.aws.models import ROLES, Market, Role, resource_name
from gpu_transcribe.common import new_run_id
from gpu_transcribe.errors import LaunchAttempt
from gpu_transcribe.ssh.keys import SshKeyPair

MARKETS_BY_SETTING: dict[str, tuple[Market, ...]] = {
    "spot-then-on-demand": ("spot", "on-demand"),
    "spot": ("spot",),
    "on-demand": ("on-demand",),
}
# Instance states in which an instance still costs money or holds its security group.
LIVE_STATES: tuple[str, ...] = ("pending", "running", "stopping", "stopped", "shutting-down")
SPOT_INTERRUPTION_REASON = "Server.SpotInstanceTermination"


# --- prices, quotas ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OnDemandPrice:
    """The Linux on-demand price of one instance type in one region.

    Attributes:
        instance_type: e.g. ``g4dn.xlarge``.
        region: e.g. ``eu-north-1``.
        price_usd_per_hour: USD per instance-hour, or ``None`` if no source knows it.
        source: ``AWS Pricing API``, or the packaged table's source and date, or ``unknown``.
    """

    instance_type: str
    region: str
    price_usd_per_hour: float | None
    source: str


@dataclass(frozen=True)
class ZonePrice:
    """One zone of the region for one instance type, with its prices.

    Attributes:
        zone: e.g. ``eu-north-1a``.
        instance_type: e.g. ``g4dn.xlarge``.
        spot_price_usd_per_hour: the newest Linux/UNIX spot price in this zone, or ``None`` if EC2 gave none.
        spot_price_at: when that price took effect (UTC), or ``None``.
        on_demand: the region's on-demand price for the type (the same in every zone).
    """

    zone: str
    instance_type: str
    spot_price_usd_per_hour: float | None
    spot_price_at: datetime | None
    on_demand: OnDemandPrice | None = None

    @property
    def saving_fraction(self) -> float | None:
        """``1 - spot / on-demand`` (0.66 means spot costs 66 % less), or ``None`` if a price is unknown."""
        od = self.on_demand.price_usd_per_hour if self.on_demand else None
        if self.spot_price_usd_per_hour is None or not od:
            return None
        return 1.0 - self.spot_price_usd_per_hour / od


@dataclass(frozen=True)
class QuotaCheck:
    """One Service Quotas value compared with what one instance needs.

    Attributes:
        market: ``spot`` or ``on-demand``.
        instance_type: the type checked.
        quota_code: e.g. ``L-3819A6DF``; ``""`` when no quota code is known for the type's family.
        quota_name: the quota's name in the Service Quotas console.
        needed_vcpus: vCPUs of one instance of the type.
        quota_vcpus: the quota's value in vCPUs, or ``None`` if it could not be read.
        note: why the value is unknown (``AccessDeniedException``...), else ``""``.
    """

    market: Market
    instance_type: str
    quota_code: str
    quota_name: str
    needed_vcpus: int
    quota_vcpus: float | None
    note: str = ""

    @property
    def ok(self) -> bool | None:
        """True if the quota fits one instance, False if it does not, ``None`` if unknown."""
        if self.quota_vcpus is None:
            return None
        return self.quota_vcpus >= self.needed_vcpus


# --- launch ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchSpec:
    """What to launch. General enough for a ``run`` instance and for ``build-ami``'s builder.

    Attributes:
        image_id: AMI id, e.g. ``ami-0123456789abcdef0``.
        instance_types: in order of preference; each is tried in every zone before the next.
        ssh_cidr: the only source allowed to port 22, a CIDR block (``auto`` already resolved, see
            :func:`gpu_transcribe.aws.ec2.checkip.resolve_ssh_cidr`).
        run_id: tags and names every resource; make it with :func:`new_run_id` before launching so that a
            launch interrupted half-way can still be torn down by run id.
        role: ``run``, ``builder`` or ``server`` (tag ``gpu-transcribe:role``, part of the ``Name``).
        market: ``spot-then-on-demand``, ``spot`` or ``on-demand`` (the setting's values).
        max_spot_price_usd_per_hour: spot ``MaxPrice``; ``None`` for EC2's default (the on-demand price).
            Zones whose current spot price is above it are not tried.
        subnet_id: one subnet (so one zone); ``None`` for a subnet per zone of ``vpc_id`` or the default VPC.
        vpc_id: the VPC; ``None`` for the region's default VPC (unless ``subnet_id`` is set).
        max_lifetime_minutes: the dead-man switch powers the instance off after this many minutes.
        heartbeat_timeout_minutes: ... or when the client's heartbeat is this many minutes old.
        root_volume_size_gib: root volume size; ``None`` for the AMI's own size.
        extra_tags: ``(key, value)`` tags added to every resource.
        login_user: the AMI's SSH user (``ubuntu`` for Ubuntu and the Deep Learning AMIs on Ubuntu).
        iam_instance_profile: instance profile name to attach, or ``None`` (runs need none).
        associate_public_ip: give the instance a public IPv4 address (needed to reach it from outside the
            VPC).
    """

    image_id: str
    instance_types: tuple[str, ...]
    ssh_cidr: str
    run_id: str = field(default_factory=new_run_id)
    role: Role = "run"
    market: str = "spot-then-on-demand"
    max_spot_price_usd_per_hour: float | None = None
    subnet_id: str | None = None
    vpc_id: str | None = None
    max_lifetime_minutes: int = 60
    heartbeat_timeout_minutes: int = 5
    root_volume_size_gib: int | None = None
    extra_tags: tuple[tuple[str, str], ...] = ()
    login_user: str = "ubuntu"
    iam_instance_profile: str | None = None
    associate_public_ip: bool = True

    def __post_init__(self) -> None:
        if not self.instance_types:
            raise ValueError("LaunchSpec.instance_types is empty")
        if self.market not in MARKETS_BY_SETTING:
            raise ValueError(
                f"LaunchSpec.market: {self.market!r} is not one of {', '.join(MARKETS_BY_SETTING)}"
            )
        if self.role not in ROLES:
            raise ValueError(f"LaunchSpec.role: {self.role!r} is not one of {', '.join(ROLES)}")
        try:
            ip_network(self.ssh_cidr, strict=True)
        except ValueError:
            raise ValueError(
                f"LaunchSpec.ssh_cidr {self.ssh_cidr!r} is not a CIDR block such as 203.0.113.7/32"
                " (resolve 'auto' with gpu_transcribe.aws.ec2.checkip.resolve_ssh_cidr first)"
            ) from None
        if "/" not in self.ssh_cidr:
            raise ValueError(f"LaunchSpec.ssh_cidr {self.ssh_cidr!r} needs a prefix length, e.g. /32")

    @property
    def markets(self) -> tuple[Market, ...]:
        """The markets to try, in order."""
        return MARKETS_BY_SETTING[self.market]

    @property
    def name(self) -> str:
        """The ``Name`` tag and the key pair and security group name."""
        return resource_name(self.run_id, self.role)


@dataclass(frozen=True)
class InstanceInfo:
    """What EC2 says about one instance now.

    Attributes:
        instance_id: e.g. ``i-0123456789abcdef0``.
        instance_type: e.g. ``g4dn.xlarge``.
        zone: availability zone.
        state: ``pending``, ``running``, ``shutting-down``, ``terminated``, ``stopping`` or ``stopped``.
        state_reason_code: e.g. ``Server.SpotInstanceTermination``, ``Client.UserInitiatedShutdown``, or
            ``""``.
        state_reason_message: EC2's text for it, or ``""``.
        market: ``spot`` or ``on-demand``.
        public_ip: public IPv4 address, or ``None`` (not yet assigned, or none).
        private_ip: private IPv4 address, or ``None``.
        image_id: the AMI.
        launch_time: when EC2 launched it (UTC), or ``None``.
        tags: ``(key, value)`` pairs sorted by key.
    """

    instance_id: str
    instance_type: str
    zone: str
    state: str
    state_reason_code: str
    state_reason_message: str
    market: Market
    public_ip: str | None
    private_ip: str | None
    image_id: str
    launch_time: datetime | None
    tags: tuple[tuple[str, str], ...] = ()

    @property
    def alive(self) -> bool:
        """True while ``pending`` or ``running``."""
        return self.state in ("pending", "running")

    @property
    def gone(self) -> bool:
        """True once ``shutting-down`` or ``terminated``: it will not come back."""
        return self.state in ("shutting-down", "terminated")

    @property
    def spot_interrupted(self) -> bool:
        """True if EC2 reclaimed this spot instance (gone, reason ``Server.SpotInstanceTermination``)."""
        return self.gone and self.state_reason_code == SPOT_INTERRUPTION_REASON

    def tag(self, key: str) -> str | None:
        """The value of tag ``key``, or ``None``."""
        return dict(self.tags).get(key)


@dataclass(frozen=True)
class LaunchResult:
    """A launched instance and everything the run needs to reach it and to tear it down.

    Attributes:
        run_id: the run's id (tag ``gpu-transcribe:run-id``).
        role: ``run`` or ``builder``.
        region: e.g. ``eu-north-1``.
        instance_id: e.g. ``i-0123456789abcdef0``.
        instance_type: the type that launched.
        zone: the zone it launched in.
        market: ``spot`` or ``on-demand``.
        price_usd_per_hour: the spot price in that zone when ranked, or the on-demand price; ``None`` if
            unknown.
        price_source: where the price came from (``describe_spot_price_history``, ``AWS Pricing API``, a
            table).
        public_ip: public IPv4, or ``None`` until EC2 assigns it (refresh with :meth:`with_instance`).
        private_ip: private IPv4, or ``None``.
        image_id: the AMI.
        key_name: the EC2 key pair holding ``client_key``'s public half.
        security_group_id: the run's security group.
        client_key: the run's SSH client key pair; the private key lives only in this object (not in
            ``repr``).
        host_public_key: the host key the instance will present, ``ssh-ed25519 AAAA... comment``: verify the
            server against exactly this.
        login_user: the SSH user of the AMI.
        owner_arn: the caller's ARN (tag ``gpu-transcribe:owner``).
        created_at: when the launch began (UTC; tag ``gpu-transcribe:created``).
        attempts: every try in order, the successful one last.
    """

    run_id: str
    role: str
    region: str
    instance_id: str
    instance_type: str
    zone: str
    market: Market
    price_usd_per_hour: float | None
    price_source: str
    public_ip: str | None
    private_ip: str | None
    image_id: str
    key_name: str
    security_group_id: str
    client_key: SshKeyPair = field(repr=False)
    host_public_key: str
    login_user: str
    owner_arn: str
    created_at: datetime
    attempts: tuple[LaunchAttempt, ...]

    @property
    def resources(self) -> RunResources:
        """What :func:`gpu_transcribe.aws.ec2.resources.teardown` must remove."""
        return RunResources(
            run_id=self.run_id,
            instance_ids=(self.instance_id,),
            key_name=self.key_name,
            security_group_id=self.security_group_id,
        )

    def with_instance(self, info: InstanceInfo) -> LaunchResult:
        """A copy with the addresses from a fresh :class:`InstanceInfo` of the same instance."""
        if info.instance_id != self.instance_id:
            raise ValueError(f"{info.instance_id} is not {self.instance_id}")
        return replace(self, public_ip=info.public_ip, private_ip=info.private_ip)


@dataclass(frozen=True)
class RunResources:
    """What a run created, as far as the caller knows; teardown also finds the rest by the run-id tag.

    Attributes:
        run_id: the run's id.
        instance_ids: instances known from ``RunInstances`` replies (they may lag in describe calls).
        key_name: the key pair name, or ``None``.
        security_group_id: the security group id, or ``None``.
    """

    run_id: str
    instance_ids: tuple[str, ...] = ()
    key_name: str | None = None
    security_group_id: str | None = None


# --- cleanup -----------------------------------------------------------------------------------------------

ResourceKind = Literal["instance", "volume", "key-pair", "security-group", "assets-bucket"]


@dataclass(frozen=True)
class TaggedResource:
    """One of our resources found by its ``gpu-transcribe:run-id`` tag.

    Attributes:
        kind: ``instance``, ``volume``, ``key-pair``, ``security-group`` or ``assets-bucket`` (the region's
            assets bucket of the pipelines, found by its role tag; ``run_id`` ``""``).
        resource_id: ``i-...``, ``vol-...``, the key pair name, ``sg-...``.
        run_id: the run it belongs to.
        owner_arn: tag ``gpu-transcribe:owner``, or ``""`` if missing.
        role: tag ``gpu-transcribe:role``, or ``""``.
        created_at: tag ``gpu-transcribe:created`` (else EC2's launch or create time), or ``None``.
        state: instance or volume state; ``""`` for key pairs and security groups.
        name: the ``Name`` tag or EC2 name.
        max_lifetime_minutes: tag ``gpu-transcribe:max-lifetime-minutes`` (servers), or ``None``.
    """

    kind: ResourceKind
    resource_id: str
    run_id: str
    owner_arn: str
    role: str
    created_at: datetime | None
    state: str = ""
    name: str = ""
    max_lifetime_minutes: int | None = None

    def age_s(self, now: datetime) -> float | None:
        """Seconds since ``created_at``, or ``None`` if unknown."""
        return None if self.created_at is None else (now - self.created_at).total_seconds()


RemovalAction = Literal["terminated", "deleted", "already-gone", "failed", "would-remove", "skipped"]


@dataclass(frozen=True)
class RemovalOutcome:
    """What happened to one resource during teardown or cleanup.

    Attributes:
        resource: the resource.
        action: ``terminated`` / ``deleted`` (done), ``already-gone``, ``failed`` (see ``reason``),
            ``would-remove`` (dry run) or ``skipped`` (filtered out; see ``reason``).
        reason: why it failed or was skipped, else ``""``.
    """

    resource: TaggedResource
    action: RemovalAction
    reason: str = ""

    @property
    def failed(self) -> bool:
        """True if the resource could not be removed."""
        return self.action == "failed"
