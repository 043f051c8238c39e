"""The :class:`~gpu_transcribe.aws.ec2.models.LaunchSpec` a command's settings ask for: what ``run``,
``build-ami`` and ``server up`` hand to :class:`~gpu_transcribe.instance.session.InstanceSession`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gpu_transcribe.aws.ec2.models import LaunchSpec
    from gpu_transcribe.aws.models import Role
    from gpu_transcribe.settings import Settings


def launch_spec(
    settings: Settings,
    *,
    image_id: str,
    ssh_cidr: str,
    role: Role = "run",
    run_id: str | None = None,
    **overrides: object,
) -> LaunchSpec:
    """The :class:`~gpu_transcribe.aws.ec2.models.LaunchSpec` the user's settings ask for (instance types,
    market, maximum spot price, network, lifetime, heartbeat timeout, tags, login user); ``overrides`` set
    other fields (``root_volume_size_gib``...)."""
    from gpu_transcribe.aws.ec2.models import LaunchSpec

    values: dict[str, object] = {
        "image_id": image_id,
        "instance_types": settings.instance_types,
        "ssh_cidr": ssh_cidr,
        "role": role,
        "market": settings.market,
        "max_spot_price_usd_per_hour": settings.max_spot_price_usd_per_hour,
        "subnet_id": settings.subnet_id,
        "vpc_id": settings.vpc_id,
        "max_lifetime_minutes": settings.max_lifetime_minutes,
        "heartbeat_timeout_minutes": settings.heartbeat_timeout_minutes,
        "extra_tags": settings.tags,
        "login_user": settings.login_user,
    }
    if run_id is not None:
        values["run_id"] = run_id
    values.update(overrides)
    return LaunchSpec(**values)  # type: ignore[arg-type]
