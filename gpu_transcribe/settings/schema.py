"""The settings' schema: the frozen :class:`Settings` with every setting's default, and how a value is shown.

No parsing here (:mod:`gpu_transcribe.settings.validation`) and no reading of sources
(:mod:`gpu_transcribe.settings.sources`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from gpu_transcribe.errors import SettingsError

#: The source of a setting nobody set.
DEFAULT_SOURCE = "default"


@dataclass(frozen=True)
class Settings:
    """The effective settings. Immutable; build it with :func:`load_settings`.

    Attributes:
        region: AWS region, e.g. ``eu-north-1``.
        instance_types: EC2 instance types in order of preference, e.g. ``("g4dn.xlarge",)``.
        market: ``spot-then-on-demand`` (spot in every zone first, then on-demand), ``spot`` or ``on-demand``.
        max_spot_price_usd_per_hour: the most we pay per hour for spot; ``None`` means up to the on-demand
            price (EC2's own default for ``MaxPrice``).
        subnet_id: launch in this subnet only (and so in its zone only); ``None`` for the VPC's subnets.
        vpc_id: launch in this VPC, in a subnet per zone; ``None`` for the region's default VPC.
        ssh_cidr: the only source allowed to reach port 22, e.g. ``203.0.113.7/32``; ``auto`` (default)
            means this machine's public IPv4 address as seen by ``checkip.amazonaws.com``, as a ``/32``.
            Never ``0.0.0.0/0`` unless set so explicitly.
        s3_bucket: bucket for transcripts; required for upload, no default (``None``).
        s3_prefix: key prefix inside the bucket, without leading or trailing ``/``.
        max_lifetime_minutes: the instance powers itself off (and so terminates) after this many minutes.
        heartbeat_timeout_minutes: the instance powers itself off when the client's heartbeat is older.
        aws_profile: named profile from ``~/.aws/config``; ``None`` lets boto3 decide (``AWS_PROFILE``,
            environment credentials, instance role...).
        tags: extra ``(key, value)`` tags put on every resource, in the order given.
        s3_kms_key_id: KMS key id or ARN for server-side encryption of uploads (``aws:kms``); ``None`` for
            S3-managed keys (``AES256``).
        image_id: the AMI for ``run``; ``None`` (default) picks the newest image of ours for this version and
            model (``gpu-transcribe images``).
        login_user: the image's SSH user (``ubuntu`` on the Ubuntu Deep Learning AMIs our images are built
            from; ``ec2-user`` on Amazon Linux).
        remote_prefix: where the image keeps the engine on the instance: ``PREFIX/venv/bin/python`` runs it
            and ``PREFIX/manifest.json`` names the cached model (``ami/provision.py --prefix``).
        model: Whisper model for ``run`` (a Hugging Face id or a local directory).
        language: Whisper language code, or ``auto``.
        correct_model_id: the Bedrock model (or cross-region inference profile) id that corrects transcripts
            (``run --correct``); default Claude 3 Haiku, Anthropic's smallest Claude on Bedrock (model id as
            listed in the Bedrock user guide, "Supported foundation models").
        correct_region: the region of the Bedrock calls; ``None`` (default) means ``region``.
        correct_max_change_fraction: a corrected segment whose word edit distance from the raw one exceeds
            this fraction of its words is kept raw (:mod:`gpu_transcribe.correct.rail`).
        correct_concurrency: the most Converse calls in flight at once, per file.
        sources: ``(setting name, source)`` for every field: ``--region``, ``GPU_TRANSCRIBE_REGION``,
            a TOML file path, or ``default``.
    """

    region: str = "eu-north-1"
    instance_types: tuple[str, ...] = ("g4dn.xlarge",)
    market: str = "spot-then-on-demand"
    max_spot_price_usd_per_hour: float | None = None
    subnet_id: str | None = None
    vpc_id: str | None = None
    ssh_cidr: str = "auto"
    s3_bucket: str | None = None
    s3_prefix: str = "gpu-transcribe"
    max_lifetime_minutes: int = 60
    heartbeat_timeout_minutes: int = 5
    aws_profile: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    s3_kms_key_id: str | None = None
    image_id: str | None = None
    login_user: str = "ubuntu"
    remote_prefix: str = "/opt/gpu-transcribe"
    model: str = "KBLab/kb-whisper-small"
    language: str = "sv"
    correct_model_id: str = "anthropic.claude-3-haiku-20240307-v1:0"
    correct_region: str | None = None
    correct_max_change_fraction: float = 0.3
    correct_concurrency: int = 4
    sources: tuple[tuple[str, str], ...] = ()

    def source(self, name: str) -> str:
        """Where setting ``name`` came from (``default`` if it was never set)."""
        return dict(self.sources).get(name, DEFAULT_SOURCE)

    @property
    def markets(self) -> tuple[str, ...]:
        """The EC2 markets to try, in order: a subset of ``("spot", "on-demand")``."""
        return {"spot-then-on-demand": ("spot", "on-demand"), "spot": ("spot",), "on-demand": ("on-demand",)}[
            self.market
        ]

    def require_s3_bucket(self) -> str:
        """The S3 bucket, or a :class:`SettingsError` saying how to set one.

        Raises:
            SettingsError: no bucket is set anywhere.
        """
        if not self.s3_bucket:
            raise SettingsError(
                "s3_bucket",
                self.source("s3_bucket"),
                "s3_bucket: no S3 bucket is set (there is no default): set s3_bucket in gpu-transcribe.toml, "
                "GPU_TRANSCRIBE_S3_BUCKET or --s3-bucket, or skip the upload with --no-s3",
                "an existing S3 bucket name",
            )
        return self.s3_bucket

    def rows(self) -> list[tuple[str, str, str]]:
        """``(setting, value as text, source)`` for every setting, in declaration order (for display)."""
        out = []
        for f in fields(self):
            if f.name == "sources":
                continue
            out.append((f.name, format_value(getattr(self, f.name)), self.source(f.name)))
        return out


def format_value(value: object) -> str:
    """A setting's value as a user would type it in an environment variable (``a,b``, ``k=v``, ``-``)."""
    if value is None or value == ():
        return "-"
    if isinstance(value, tuple):
        if value and isinstance(value[0], tuple):
            return ",".join(f"{k}={v}" for k, v in value)
        return ",".join(str(v) for v in value)
    return str(value)
