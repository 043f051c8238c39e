"""Settings: one frozen :class:`Settings` built from flags, environment, TOML files and defaults.

Precedence, highest first (each value remembers where it came from, for ``gpu-transcribe config show``):

1. command-line flags (the CLI passes only the flags the user gave);
2. environment variables ``GPU_TRANSCRIBE_<NAME>`` (``GPU_TRANSCRIBE_REGION``,
   ``GPU_TRANSCRIBE_INSTANCE_TYPES``...);
3. TOML files: ``./gpu-transcribe.toml``, then ``<user config dir>/gpu-transcribe/config.toml``
   (``~/.config/gpu-transcribe/config.toml`` on Linux, via platformdirs); a key in the first file wins over
   the same key in the second; parsed with the standard library's ``tomllib``;
4. the defaults below.

A bad value raises :class:`~gpu_transcribe.errors.SettingsError` whose one-line message names the setting,
its source and what is allowed. An unknown key in a TOML file is an error too (a typo must not be ignored).

This module imports neither boto3 nor anything heavy; the CLI imports it at start-up.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from gpu_transcribe.errors import SettingsError
from gpu_transcribe_engine.languages import LANGUAGE_CHOICES, normalize_language

ENV_PREFIX = "GPU_TRANSCRIBE_"
LOCAL_CONFIG_NAME = "gpu-transcribe.toml"
USER_CONFIG_NAME = "config.toml"
DEFAULT_SOURCE = "default"

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
            this fraction of its words is kept raw (:mod:`gpu_transcribe.correct.correct`).
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


# --- parsing and validation of each setting ------------------------------------------------------------
# Each parser takes a value from any source (a string from a flag or the environment, or a typed TOML value)
# and returns the typed value, or raises ValueError whose message says what is allowed.


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


_PARSERS: dict[str, Callable[[object], Any]] = {
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

SETTING_NAMES: tuple[str, ...] = tuple(_PARSERS)


def env_var(name: str) -> str:
    """The environment variable for setting ``name``: ``instance_types`` ->
    ``GPU_TRANSCRIBE_INSTANCE_TYPES``."""
    return ENV_PREFIX + name.upper()


#: ``GPU_TRANSCRIBE_*`` variables read by the code that are not settings: test and measurement seams.
OTHER_ENV_VARS: frozenset[str] = frozenset(
    {
        "GPU_TRANSCRIBE_DIAL_ADDRESS",  # aws/instances.py: dial this HOST:PORT instead of the instance
        "GPU_TRANSCRIBE_HEARTBEAT_PATH",  # instance_session.py: the heartbeat file's path
        "GPU_TRANSCRIBE_IMDS_ENDPOINT",  # spot_watch.py: where the instance metadata service answers
        "GPU_TRANSCRIBE_PIPELINE_CONFIG",  # pipeline/jobs.py: the pipeline's description (JSON) off the fleet
        "GPU_TRANSCRIBE_WORKER_INSTANCE_ID",  # pipeline/worker.py: this machine's instance id, not IMDS's
        "GPU_TRANSCRIBE_STATE_DIR",  # server/state.py: where server state files are kept
        "GPU_TRANSCRIBE_TEST_MODEL",  # tests: the offline Whisper model
        "GPU_TRANSCRIBE_TEST_PREFIX",  # tests/fixtures/provision.py: a provisioned prefix to reuse
        "GPU_TRANSCRIBE_API_KEY",  # gpu_transcribe_api/config.py: serve's bearer key
        "GPU_TRANSCRIBE_POWEROFF_COMMAND",  # gpu_transcribe_api/config.py: serve's power-off command (tests)
    }
)


def unknown_env_vars(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """One warning per ``GPU_TRANSCRIBE_*`` variable that is neither a setting nor in :data:`OTHER_ENV_VARS`
    (a mistyped setting is otherwise ignored silently), naming the closest setting's variable.

    Args:
        env: the environment (``os.environ`` if ``None``).
    """
    env = os.environ if env is None else env
    known = {env_var(setting) for setting in SETTING_NAMES}
    # Compared without the prefix, which every candidate shares and which would make anything look close.
    suffixes = [setting.upper() for setting in SETTING_NAMES]
    warnings = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in known or name in OTHER_ENV_VARS:
            continue
        close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), suffixes, n=1, cutoff=0.6)
        hint = f"did you mean {ENV_PREFIX}{close[0]}?" if close else "`gpu-transcribe config show` lists them"
        warnings.append(f"{name} is not a setting and is ignored; {hint}")
    return tuple(warnings)


def flag(name: str) -> str:
    """The command-line flag for setting ``name``: ``instance_types`` -> ``--instance-types``."""
    return "--" + name.replace("_", "-")


def default_config_files(cwd: Path | None = None) -> tuple[Path, ...]:
    """The TOML files read, highest precedence first: ``./gpu-transcribe.toml``, then the user's config
    file."""
    from platformdirs import user_config_dir

    return (
        (cwd or Path.cwd()) / LOCAL_CONFIG_NAME,
        Path(user_config_dir("gpu-transcribe", appauthor=False)) / USER_CONFIG_NAME,
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError("config file", str(path), f"{path}: not valid TOML ({exc})", "TOML") from None
    except OSError as exc:
        raise SettingsError("config file", str(path), f"{path}: cannot be read ({exc.strerror})") from None
    unknown = sorted(set(data) - set(SETTING_NAMES))
    if unknown:
        raise SettingsError(
            unknown[0],
            str(path),
            f"{unknown[0]} (in {path}): unknown setting; known settings: {', '.join(SETTING_NAMES)}",
            ", ".join(SETTING_NAMES),
        )
    return data


def load_settings(
    flags: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    config_files: Sequence[Path] | None = None,
) -> Settings:
    """Build the effective settings.

    Args:
        flags: values from command-line flags, keyed by setting name (``instance_types``); ``None`` values
            mean the flag was not given. Keys that are not settings are an error (a programming mistake).
        env: the environment (``os.environ`` if ``None``); only ``GPU_TRANSCRIBE_<NAME>`` for known settings
            are read, other ``GPU_TRANSCRIBE_*`` variables (``GPU_TRANSCRIBE_TEST_MODEL``...) are left alone.
            An empty variable counts as unset.
        config_files: TOML files, highest precedence first (:func:`default_config_files` if ``None``);
            missing files are skipped.

    Returns:
        The frozen :class:`Settings`, with the source of each value in ``sources``.

    Raises:
        SettingsError: a bad value (named with its source and what is allowed), an unknown key or broken
            syntax in a TOML file, or a contradiction (``subnet_id`` and ``vpc_id`` both set).
    """
    flags = dict(flags or {})
    env = os.environ if env is None else env
    files = default_config_files() if config_files is None else tuple(config_files)
    unknown = set(flags) - set(SETTING_NAMES)
    if unknown:
        raise ValueError(f"not settings: {sorted(unknown)}")

    layers: list[tuple[str, dict[str, Any]]] = []  # (source, values), highest precedence first
    for path in files:
        data = _read_toml(path)
        if data:
            layers.append((str(path), data))

    values: dict[str, Any] = {}
    sources: list[tuple[str, str]] = []
    for name in SETTING_NAMES:
        candidates: list[tuple[str, object]] = []
        if flags.get(name) is not None:
            candidates.append((flag(name), flags[name]))
        raw_env = env.get(env_var(name))
        if raw_env is not None and raw_env.strip() != "":
            candidates.append((env_var(name), raw_env))
        candidates.extend((source, data[name]) for source, data in layers if name in data)
        if not candidates:
            continue
        source, raw = candidates[0]
        try:
            values[name] = _PARSERS[name](raw)
        except ValueError as exc:
            raise SettingsError(
                name, source, f"{name} (from {source}): {raw!r} is not allowed; expected {exc}", str(exc)
            ) from None
        sources.append((name, source))

    settings = Settings(**values, sources=tuple(sources))
    if settings.subnet_id and settings.vpc_id:
        raise SettingsError(
            "subnet_id",
            settings.source("subnet_id"),
            f"subnet_id (from {settings.source('subnet_id')}) and vpc_id (from {settings.source('vpc_id')}) "
            "are both set; set one: a subnet (one zone) or a VPC (a subnet per zone)",
            "subnet_id or vpc_id, not both",
        )
    if settings.heartbeat_timeout_minutes >= settings.max_lifetime_minutes:
        raise SettingsError(
            "heartbeat_timeout_minutes",
            settings.source("heartbeat_timeout_minutes"),
            f"heartbeat_timeout_minutes (from {settings.source('heartbeat_timeout_minutes')}): "
            f"{settings.heartbeat_timeout_minutes} must be shorter than max_lifetime_minutes "
            f"({settings.max_lifetime_minutes}, from {settings.source('max_lifetime_minutes')})",
            "fewer minutes than max_lifetime_minutes",
        )
    return settings


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
