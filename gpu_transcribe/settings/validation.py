"""Parsing and validation of each setting's value, and the checks of durations and of ``ssh_cidr``.

Each parser takes a value from any source (a string from a flag or the environment, or a typed TOML value)
and returns the typed value, or raises ValueError whose message says what is allowed. :data:`PARSERS` maps
each setting to its parser, in :class:`~gpu_transcribe.settings.schema.Settings`' order.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from gpu_transcribe.errors import SettingsError
from gpu_transcribe_engine.languages import LANGUAGE_CHOICES, normalize_language

if TYPE_CHECKING:
    from gpu_transcribe.settings.schema import Settings

MARKETS: tuple[str, ...] = ("spot-then-on-demand", "spot", "on-demand")
# Tag keys we set ourselves (``gpu_transcribe.aws``); user tags must not collide with them.
RESERVED_TAG_PREFIXES: tuple[str, ...] = ("aws:", "gpu-transcribe:")
# EC2 allows 50 tags per resource; we set 6 ourselves (run-id, owner, created, version, role, Name).
MAX_USER_TAGS = 40

_REGION_RE = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d$")
_INSTANCE_TYPE_RE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$")
_SUBNET_RE = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_VPC_RE = re.compile(r"^vpc-[0-9a-f]{8,17}$")
# S3 bucket naming rules (docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html), simplified.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_DURATION_UNITS_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _text(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("a string")
    return str(value).strip()


def _optional(parse: Callable[[object], Any]) -> Callable[[object], Any]:
    def parse_optional(value: object) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "-")):
            return None
        return parse(value)

    return parse_optional


def _region(value: object) -> str:
    text = _text(value)
    if not _REGION_RE.match(text):
        raise ValueError("an AWS region name such as eu-north-1")
    return text


def _instance_types(value: object) -> tuple[str, ...]:
    allowed = "one or more EC2 instance types, comma-separated or a TOML list, such as g4dn.xlarge,g6.xlarge"
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, list | tuple):
        items = []
        for v in value:
            if not isinstance(v, str):
                raise ValueError(allowed)
            items.append(v.strip())
    else:
        raise ValueError(allowed)
    if not items or any(not _INSTANCE_TYPE_RE.match(v) for v in items) or len(set(items)) != len(items):
        raise ValueError(allowed + " (no repeats)")
    return tuple(items)


def _market(value: object) -> str:
    text = _text(value).lower()
    if text not in MARKETS:
        raise ValueError("one of " + ", ".join(MARKETS))
    return text


def _price(value: object) -> float:
    allowed = "a price in USD per hour greater than 0, such as 0.30"
    if isinstance(value, bool):
        raise ValueError(allowed)
    try:
        price = float(value) if isinstance(value, int | float) else float(_text(value))
    except ValueError:
        raise ValueError(allowed) from None
    if not 0 < price < 1000:
        raise ValueError(allowed)
    return price


def _subnet(value: object) -> str:
    text = _text(value)
    if not _SUBNET_RE.match(text):
        raise ValueError("a subnet id such as subnet-0123456789abcdef0")
    return text


def _vpc(value: object) -> str:
    text = _text(value)
    if not _VPC_RE.match(text):
        raise ValueError("a VPC id such as vpc-0123456789abcdef0")
    return text


def _cidr(value: object) -> str:
    text = _text(value)
    if text.lower() == "auto":
        return "auto"
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError:
        raise ValueError(
            "auto (this machine's public IP, detected at run time) or a CIDR block such as 203.0.113.7/32"
        ) from None
    return str(network)


def _bucket(value: object) -> str:
    text = _text(value)
    if text.startswith("s3://"):
        text = text[len("s3://") :].rstrip("/")
    if not _BUCKET_RE.match(text) or ".." in text:
        raise ValueError("an S3 bucket name: 3-63 lower-case letters, digits, dots and hyphens")
    return text


def _prefix(value: object) -> str:
    text = _text(value).strip("/")
    if len(text) > 512 or any(c in text for c in "\\\n\r\t") or "//" in text:
        raise ValueError("an S3 key prefix such as transcripts/team-a (at most 512 characters, no //)")
    return text


def _int_range(low: int, high: int, unit: str) -> Callable[[object], int]:
    def parse_int(value: object) -> int:
        allowed = f"a whole number of {unit} from {low} to {high}"
        if isinstance(value, bool | float):
            raise ValueError(allowed)
        try:
            number = value if isinstance(value, int) else int(_text(value))
        except ValueError:
            raise ValueError(allowed) from None
        if not low <= number <= high:
            raise ValueError(allowed)
        return number

    return parse_int


def _profile(value: object) -> str:
    text = _text(value)
    if not text or any(c.isspace() for c in text):
        raise ValueError("an AWS profile name from ~/.aws/config, without spaces")
    return text


def _tags(value: object) -> tuple[tuple[str, str], ...]:
    allowed = (
        "tags as key=value pairs, comma-separated (or a TOML table); keys of 1-128 and values of at most "
        f"256 characters, at most {MAX_USER_TAGS} tags, keys not starting with "
        + " or ".join(RESERVED_TAG_PREFIXES)
    )
    pairs: list[tuple[str, str]] = []
    if isinstance(value, str):
        for item in value.split(","):
            if not item.strip():
                continue
            key, sep, val = item.partition("=")
            if not sep:
                raise ValueError(allowed)
            pairs.append((key.strip(), val.strip()))
    elif isinstance(value, Mapping):
        for key, val in value.items():
            if not isinstance(val, str | int | float) or isinstance(val, bool):
                raise ValueError(allowed)
            pairs.append((str(key).strip(), str(val)))
    else:
        raise ValueError(allowed)
    keys = [k for k, _ in pairs]
    if len(pairs) > MAX_USER_TAGS or len(set(keys)) != len(keys):
        raise ValueError(allowed)
    for key, val in pairs:
        if not 1 <= len(key) <= 128 or len(val) > 256 or key.lower().startswith(RESERVED_TAG_PREFIXES):
            raise ValueError(allowed)
        if key == "Name":
            raise ValueError(allowed + " (Name is set by gpu-transcribe)")
    return tuple(pairs)


def _kms_key(value: object) -> str:
    text = _text(value)
    if not text or any(c.isspace() for c in text) or len(text) > 2048:
        raise ValueError("a KMS key id, alias (alias/name) or ARN, without spaces")
    return text


def _image_id(value: object) -> str:
    text = _text(value)
    if not re.fullmatch(r"ami-[0-9a-f]{8,17}", text):
        raise ValueError("an AMI id such as ami-0123456789abcdef0")
    return text


def _login_user(value: object) -> str:
    text = _text(value)
    if not re.fullmatch(r"[a-z_][a-z0-9_.-]{0,31}", text):
        raise ValueError("a Unix user name such as ubuntu or ec2-user")
    return text


def _remote_prefix(value: object) -> str:
    text = _text(value).rstrip("/")
    if not text.startswith("/") or any(c.isspace() or c in "'\"$`;" for c in text):
        raise ValueError(
            "an absolute path on the instance without spaces or quotes, e.g. /opt/gpu-transcribe"
        )
    return text


def _model(value: object) -> str:
    text = _text(value)
    if not text:
        raise ValueError("a Hugging Face model id such as KBLab/kb-whisper-small, or a local directory")
    return text


def _language(value: object) -> str:
    try:
        return normalize_language(_text(value))
    except ValueError:
        raise ValueError(LANGUAGE_CHOICES) from None


def _bedrock_model_id(value: object) -> str:
    text = _text(value)
    if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9._:/-]{2,2047}", text):
        raise ValueError(
            "a Bedrock model id or inference profile id such as anthropic.claude-3-haiku-20240307-v1:0"
        )
    return text


def _fraction(value: object) -> float:
    allowed = "a fraction greater than 0 and at most 1, such as 0.3"
    if isinstance(value, bool):
        raise ValueError(allowed)
    try:
        number = float(value) if isinstance(value, int | float) else float(_text(value))
    except ValueError:
        raise ValueError(allowed) from None
    if not 0 < number <= 1:
        raise ValueError(allowed)
    return number


#: Each setting's parser, in the order of the fields of :class:`~gpu_transcribe.settings.schema.Settings`.
PARSERS: dict[str, Callable[[object], Any]] = {
    "region": _region,
    "instance_types": _instance_types,
    "market": _market,
    "max_spot_price_usd_per_hour": _optional(_price),
    "subnet_id": _optional(_subnet),
    "vpc_id": _optional(_vpc),
    "ssh_cidr": _cidr,
    "s3_bucket": _optional(_bucket),
    "s3_prefix": _prefix,
    # 10 minutes leaves time to boot and transcribe a short file; 24 hours bounds a forgotten instance.
    "max_lifetime_minutes": _int_range(10, 1440, "minutes"),
    # 2 minutes tolerates a slow network between two heartbeats (the client touches it every 30 s).
    "heartbeat_timeout_minutes": _int_range(2, 120, "minutes"),
    "aws_profile": _optional(_profile),
    "tags": _tags,
    "s3_kms_key_id": _optional(_kms_key),
    "image_id": _optional(_image_id),
    "login_user": _login_user,
    "remote_prefix": _remote_prefix,
    "model": _model,
    "language": _language,
    "correct_model_id": _bedrock_model_id,
    "correct_region": _optional(_region),
    "correct_max_change_fraction": _fraction,
    # 16: Bedrock's on-demand quotas are requests per minute per account; more threads only throttle.
    "correct_concurrency": _int_range(1, 16, "calls"),
}

SETTING_NAMES: tuple[str, ...] = tuple(PARSERS)


def parse_duration_s(text: str, *, name: str = "--older-than") -> float:
    """Parse a duration such as ``2h``, ``90m``, ``45s``, ``1d`` or ``0`` into seconds.

    Raises:
        SettingsError: not a non-negative number with an optional unit ``s``, ``m``, ``h`` or ``d``.
    """
    match = _DURATION_RE.match(text.lower())
    if not match:
        raise SettingsError(
            name,
            name,
            f"{name}: {text!r} is not a duration; use a number with s, m, h or d, such as 2h or 90m",
        )
    return float(match.group(1)) * _DURATION_UNITS_S[match.group(2)]


def ssh_cidr_warning(settings: Settings) -> str | None:
    """A warning when the ``ssh_cidr`` setting opens port 22 to more than one address, naming the value and
    where it came from (a ``./gpu-transcribe.toml`` in a folder the user did not write counts); ``None`` for
    ``auto`` (this machine's address only, as a /32 or /128) or a single address."""
    if settings.ssh_cidr == "auto":
        return None
    network = ipaddress.ip_network(settings.ssh_cidr, strict=False)
    bits = network.max_prefixlen - network.prefixlen
    if bits == 0:
        return None
    count = f"{network.num_addresses:,}" if bits <= 32 else f"2^{bits}"
    return (
        f"ssh_cidr {network} (from {settings.source('ssh_cidr')}) opens port 22 of every instance to {count} "
        "addresses; set ssh_cidr to auto (your address only) or one address (/32, /128) unless you mean it"
    )
