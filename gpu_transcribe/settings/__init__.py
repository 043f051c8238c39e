"""Settings: one frozen :class:`Settings` built from flags, environment, TOML files and defaults.

Precedence, highest first (each value remembers where it came from, for ``gpu-transcribe config show``):

1. command-line flags (the CLI passes only the flags the user gave);
2. environment variables ``GPU_TRANSCRIBE_<NAME>`` (``GPU_TRANSCRIBE_REGION``,
   ``GPU_TRANSCRIBE_INSTANCE_TYPES``...);
3. TOML files: ``./gpu-transcribe.toml``, then ``<user config dir>/gpu-transcribe/config.toml``
   (``~/.config/gpu-transcribe/config.toml`` on Linux, via platformdirs); a key in the first file wins over
   the same key in the second; parsed with the standard library's ``tomllib``;
4. the defaults (:mod:`~gpu_transcribe.settings.schema`).

A bad value raises :class:`~gpu_transcribe.errors.SettingsError` whose one-line message names the setting,
its source and what is allowed. An unknown key in a TOML file is an error too (a typo must not be ignored).

This package imports neither boto3 nor anything heavy; the CLI imports it at start-up.

Modules:

- :mod:`~gpu_transcribe.settings.schema`: :class:`Settings`, every setting with its default;
- :mod:`~gpu_transcribe.settings.validation`: each setting's parser, durations, the ``ssh_cidr`` warning;
- :mod:`~gpu_transcribe.settings.sources`: flags, environment variables, TOML files, :func:`load_settings`.

The names callers use are importable from the package itself (``from gpu_transcribe.settings import
Settings, load_settings``).
"""

from gpu_transcribe.settings.schema import DEFAULT_SOURCE, Settings, format_value
from gpu_transcribe.settings.sources import (
    ENV_PREFIX,
    LOCAL_CONFIG_NAME,
    OTHER_ENV_VARS,
    USER_CONFIG_NAME,
    default_config_files,
    env_var,
    flag,
    load_settings,
    unknown_env_vars,
)
from gpu_transcribe.settings.validation import (
    MARKETS,
    MAX_USER_TAGS,
    RESERVED_TAG_PREFIXES,
    SETTING_NAMES,
    parse_duration_s,
    ssh_cidr_warning,
)

__all__ = [
    "DEFAULT_SOURCE",
    "ENV_PREFIX",
    "LOCAL_CONFIG_NAME",
    "MARKETS",
    "MAX_USER_TAGS",
    "OTHER_ENV_VARS",
    "RESERVED_TAG_PREFIXES",
    "SETTING_NAMES",
    "USER_CONFIG_NAME",
    "Settings",
    "default_config_files",
    "env_var",
    "flag",
    "format_value",
    "load_settings",
    "parse_duration_s",
    "ssh_cidr_warning",
    "unknown_env_vars",
]
