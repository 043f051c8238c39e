"""Settings: precedence (flags > environment > ./gpu-transcribe.toml > user config > defaults), the source of
each value, and one clear error line per bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpu_transcribe.errors import SettingsError
from gpu_transcribe.settings import Settings, default_config_files, load_settings, parse_duration_s


def _files(tmp_path: Path, local: str | None = None, user: str | None = None) -> tuple[Path, Path]:
    local_path = tmp_path / "gpu-transcribe.toml"
    user_path = tmp_path / "user" / "config.toml"
    user_path.parent.mkdir(exist_ok=True)
    if local is not None:
        local_path.write_text(local, encoding="utf-8")
    if user is not None:
        user_path.write_text(user, encoding="utf-8")
    return local_path, user_path


def test_defaults_are_the_documented_ones(tmp_path: Path) -> None:
    settings = load_settings({}, env={}, config_files=_files(tmp_path))
    assert settings == Settings()
    assert settings.region == "eu-north-1"
    assert settings.instance_types == ("g4dn.xlarge",)
    assert settings.market == "spot-then-on-demand"
    assert settings.markets == ("spot", "on-demand")
    assert settings.ssh_cidr == "auto"  # never 0.0.0.0/0 by default
    assert settings.s3_bucket is None
    assert settings.max_lifetime_minutes == 60
    assert (settings.model, settings.language) == ("KBLab/kb-whisper-small", "sv")
    assert {source for _, _, source in settings.rows()} == {"default"}


def test_precedence_flag_over_env_over_local_file_over_user_file_over_default(tmp_path: Path) -> None:
    files = _files(
        tmp_path,
        local='region = "eu-west-1"\nmarket = "spot"\n',
        user=(
            'region = "us-east-1"\nmarket = "on-demand"\ns3_bucket = "user-bucket"\n'
            "max_lifetime_minutes = 45\n"
        ),
    )
    env = {"GPU_TRANSCRIBE_REGION": "eu-central-1", "GPU_TRANSCRIBE_MARKET": "on-demand"}
    settings = load_settings({"region": "eu-north-1", "market": None}, env=env, config_files=files)

    assert settings.region == "eu-north-1"
    assert settings.source("region") == "--region"
    assert settings.market == "on-demand"
    assert settings.source("market") == "GPU_TRANSCRIBE_MARKET"
    assert settings.s3_bucket == "user-bucket"
    assert settings.source("s3_bucket") == str(files[1])
    assert settings.max_lifetime_minutes == 45
    assert settings.source("instance_types") == "default"

    without_env = load_settings({}, env={}, config_files=files)
    assert without_env.region == "eu-west-1"
    assert without_env.source("region") == str(files[0])
    assert without_env.market == "spot"


def test_values_from_each_source_are_parsed_to_types(tmp_path: Path) -> None:
    files = _files(
        tmp_path,
        local=(
            'instance_types = ["g6.xlarge", "g4dn.xlarge"]\nmax_spot_price_usd_per_hour = 0.3\n'
            '[tags]\nproject = "minutes"\ncost-center = 42\n'
        ),
    )
    settings = load_settings({}, env={}, config_files=files)
    assert settings.instance_types == ("g6.xlarge", "g4dn.xlarge")
    assert settings.max_spot_price_usd_per_hour == 0.3
    assert settings.tags == (("project", "minutes"), ("cost-center", "42"))

    env = {
        "GPU_TRANSCRIBE_INSTANCE_TYPES": "g5.xlarge, g4dn.2xlarge",
        "GPU_TRANSCRIBE_TAGS": "team=speech,env=test",
        "GPU_TRANSCRIBE_SSH_CIDR": "198.51.100.0/24",
        "GPU_TRANSCRIBE_S3_BUCKET": "s3://my-bucket/",
        "GPU_TRANSCRIBE_S3_PREFIX": "/transcripts/team/",
        "GPU_TRANSCRIBE_LANGUAGE": "Swedish",
        "GPU_TRANSCRIBE_MAX_SPOT_PRICE_USD_PER_HOUR": "",  # empty counts as unset: the file's value stays
    }
    settings = load_settings({}, env=env, config_files=files)
    assert settings.instance_types == ("g5.xlarge", "g4dn.2xlarge")
    assert settings.tags == (("team", "speech"), ("env", "test"))
    assert settings.ssh_cidr == "198.51.100.0/24"
    assert settings.s3_bucket == "my-bucket"
    assert settings.s3_prefix == "transcripts/team"
    assert settings.language == "sv"
    assert settings.max_spot_price_usd_per_hour == 0.3
    assert settings.source("max_spot_price_usd_per_hour") == str(files[0])


@pytest.mark.parametrize(
    ("env_name", "value", "setting", "allowed_part"),
    [
        ("GPU_TRANSCRIBE_REGION", "Europe", "region", "eu-north-1"),
        ("GPU_TRANSCRIBE_INSTANCE_TYPES", "g4dn", "instance_types", "g4dn.xlarge"),
        ("GPU_TRANSCRIBE_MARKET", "cheap", "market", "spot-then-on-demand, spot, on-demand"),
        ("GPU_TRANSCRIBE_MAX_SPOT_PRICE_USD_PER_HOUR", "-1", "max_spot_price_usd_per_hour", "greater than 0"),
        ("GPU_TRANSCRIBE_SUBNET_ID", "sub-123", "subnet_id", "subnet-"),
        ("GPU_TRANSCRIBE_SSH_CIDR", "203.0.113.7/16", "ssh_cidr", "CIDR"),
        ("GPU_TRANSCRIBE_S3_BUCKET", "My_Bucket", "s3_bucket", "S3 bucket name"),
        ("GPU_TRANSCRIBE_MAX_LIFETIME_MINUTES", "3", "max_lifetime_minutes", "from 10 to 1440"),
        ("GPU_TRANSCRIBE_MAX_LIFETIME_MINUTES", "sixty", "max_lifetime_minutes", "whole number"),
        ("GPU_TRANSCRIBE_TAGS", "gpu-transcribe:run-id=x", "tags", "key=value"),
        ("GPU_TRANSCRIBE_LANGUAGE", "klingon", "language", "klingon"),
    ],
)
def test_a_bad_value_names_setting_source_and_what_is_allowed(
    tmp_path: Path, env_name: str, value: str, setting: str, allowed_part: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({}, env={env_name: value}, config_files=_files(tmp_path))
    error = caught.value
    assert error.setting == setting
    assert error.source == env_name
    message = str(error)
    assert "\n" not in message
    assert message.startswith(f"{setting} (from {env_name}): ")
    assert allowed_part in message


def test_a_bad_flag_and_a_bad_file_value_name_their_source(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^market \(from --market\): 'spotty' is not allowed"):
        load_settings({"market": "spotty"}, env={}, config_files=_files(tmp_path))
    files = _files(tmp_path, local="max_lifetime_minutes = 60.5\n")
    with pytest.raises(SettingsError) as caught:
        load_settings({}, env={}, config_files=files)
    assert caught.value.source == str(files[0])
    assert "max_lifetime_minutes" in str(caught.value)


def test_unknown_key_and_broken_syntax_in_a_file_are_errors(tmp_path: Path) -> None:
    files = _files(tmp_path, local='regoin = "eu-north-1"\n')
    with pytest.raises(SettingsError, match=r"regoin .*unknown setting; known settings: region"):
        load_settings({}, env={}, config_files=files)
    files = _files(tmp_path, local="region = \n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings({}, env={}, config_files=files)


def test_contradictions_are_errors(tmp_path: Path) -> None:
    env = {"GPU_TRANSCRIBE_SUBNET_ID": "subnet-0123456789abcdef0"}
    with pytest.raises(SettingsError, match=r"subnet_id .* and vpc_id .* are both set"):
        load_settings({"vpc_id": "vpc-0123456789abcdef0"}, env=env, config_files=_files(tmp_path))
    env = {"GPU_TRANSCRIBE_HEARTBEAT_TIMEOUT_MINUTES": "30", "GPU_TRANSCRIBE_MAX_LIFETIME_MINUTES": "20"}
    with pytest.raises(SettingsError, match=r"heartbeat_timeout_minutes .* must be shorter"):
        load_settings({}, env=env, config_files=_files(tmp_path))


def test_other_gpu_transcribe_variables_are_not_settings(tmp_path: Path) -> None:
    settings = load_settings(
        {}, env={"GPU_TRANSCRIBE_TEST_MODEL": "/models/x"}, config_files=_files(tmp_path)
    )
    assert settings == Settings()


def test_missing_bucket_is_a_clear_error_only_when_needed(tmp_path: Path) -> None:
    settings = load_settings({}, env={}, config_files=_files(tmp_path))
    with pytest.raises(SettingsError, match=r"no S3 bucket is set .*GPU_TRANSCRIBE_S3_BUCKET.*--no-s3"):
        settings.require_s3_bucket()
    assert load_settings({"s3_bucket": "b-1"}, env={}, config_files=()).require_s3_bucket() == "b-1"


def test_default_config_files_are_local_then_user_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    local, user = default_config_files(cwd=tmp_path)
    assert local == tmp_path / "gpu-transcribe.toml"
    assert user == tmp_path / "xdg" / "gpu-transcribe" / "config.toml"


@pytest.mark.parametrize(
    ("text", "seconds"), [("2h", 7200), ("90m", 5400), ("45s", 45), ("1d", 86400), ("0", 0)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


def test_bad_duration() -> None:
    with pytest.raises(SettingsError, match="--older-than: 'two hours' is not a duration"):
        parse_duration_s("two hours")


def test_unknown_env_vars_name_the_closest_setting_and_spare_the_known_others() -> None:
    from gpu_transcribe.settings import OTHER_ENV_VARS, unknown_env_vars

    env = {name: "1" for name in OTHER_ENV_VARS}
    env.update(
        GPU_TRANSCRIBE_REGION="eu-north-1", GPU_TRANSCRIBE_S3BUCKET="b", GPU_TRANSCRIBE_XYZZY="1", HOME="/"
    )
    assert unknown_env_vars(env) == (
        "GPU_TRANSCRIBE_S3BUCKET is not a setting and is ignored; did you mean GPU_TRANSCRIBE_S3_BUCKET?",
        "GPU_TRANSCRIBE_XYZZY is not a setting and is ignored; `gpu-transcribe config show` lists them",
    )


def _config_show(tmp_path: Path, *args: str) -> str:
    """``gpu-transcribe config show ARGS`` as a subprocess on an 80-column terminal's COLUMNS, through a pipe,
    with a bucket and tags from the environment and no config file."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_TRANSCRIBE_")}
    env |= {
        "PYTHONPATH": str(repo),
        "COLUMNS": "80",
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "GPU_TRANSCRIBE_S3_BUCKET": "team-transcripts-archive-eu-north-1",
        "GPU_TRANSCRIBE_TAGS": "project=interviews,cost-center=4711",
        "GPU_TRANSCRIBE_S3_PREFIX": "interviews/[b]2026",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "gpu_transcribe", "config", "show", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_config_show_through_a_pipe_prints_every_value(tmp_path: Path) -> None:
    lines = _config_show(tmp_path).splitlines()
    assert "s3_bucket = team-transcripts-archive-eu-north-1  (GPU_TRANSCRIBE_S3_BUCKET)" in lines
    assert "tags = project=interviews,cost-center=4711  (GPU_TRANSCRIBE_TAGS)" in lines
    assert "s3_prefix = interviews/[b]2026  (GPU_TRANSCRIBE_S3_PREFIX)" in lines
    assert "region = eu-north-1  (default)" in lines
    assert "model = KBLab/kb-whisper-small  (default)" in lines


def test_config_show_json_gives_value_and_source(tmp_path: Path) -> None:
    import json

    shown = json.loads(_config_show(tmp_path, "--json"))
    assert shown["s3_bucket"] == {
        "value": "team-transcripts-archive-eu-north-1",
        "source": "GPU_TRANSCRIBE_S3_BUCKET",
    }
    assert shown["tags"]["value"] == {"project": "interviews", "cost-center": "4711"}
    assert shown["instance_types"] == {"value": ["g4dn.xlarge"], "source": "default"}
    assert shown["subnet_id"] == {"value": None, "source": "default"}
    assert shown["max_lifetime_minutes"]["value"] == 60
