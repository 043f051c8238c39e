"""Where settings come from: flags, ``GPU_TRANSCRIBE_<NAME>`` environment variables, the TOML files, and
:func:`load_settings`, which takes each setting from the first source that sets it and validates it.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gpu_transcribe.errors import SettingsError
from gpu_transcribe.settings.schema import Settings
from gpu_transcribe.settings.validation import PARSERS, SETTING_NAMES

ENV_PREFIX = "GPU_TRANSCRIBE_"
LOCAL_CONFIG_NAME = "gpu-transcribe.toml"
USER_CONFIG_NAME = "config.toml"


def env_var(name: str) -> str:
    """The environment variable for setting ``name``: ``instance_types`` ->
    ``GPU_TRANSCRIBE_INSTANCE_TYPES``."""
    return ENV_PREFIX + name.upper()


#: ``GPU_TRANSCRIBE_*`` variables read by the code that are not settings: test and measurement seams.
OTHER_ENV_VARS: frozenset[str] = frozenset(
    {
        "GPU_TRANSCRIBE_DIAL_ADDRESS",  # aws/ec2/instances.py: dial this HOST:PORT instead of the instance
        "GPU_TRANSCRIBE_HEARTBEAT_PATH",  # instance/session.py: the heartbeat file's path
        "GPU_TRANSCRIBE_IMDS_ENDPOINT",  # instance/spot_watch.py: where the instance metadata service answers
        "GPU_TRANSCRIBE_PIPELINE_CONFIG",  # pipeline/jobs.py: the pipeline's description (JSON) off the fleet
        "GPU_TRANSCRIBE_WORKER_INSTANCE_ID",  # pipeline/worker.py: this machine's instance id, not IMDS's
        "GPU_TRANSCRIBE_STATE_DIR",  # warm/state.py: where server state files are kept
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
            values[name] = PARSERS[name](raw)
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
