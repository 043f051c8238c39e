"""The AWS commands as a user runs them: ``config show``, ``zones`` and ``cleanup`` through Typer's CliRunner
against moto, one ``zones`` and one ``cleanup`` as subprocesses reaching moto through AWS_ENDPOINT_URL, and
``--help`` without boto3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpu_transcribe.aws.clients import AwsContext
from gpu_transcribe.aws.ec2.launch import launch
from gpu_transcribe.aws.ec2.models import LaunchResult, LaunchSpec
from gpu_transcribe.aws.ec2.resources import find_resources
from gpu_transcribe.cli.main import app
from tests.fixtures.moto_aws import REGION, TEST_CIDR, MotoAws

# A hung AWS call must fail with a traceback, not stall the suite (the default timeout is 900 s).
pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parent.parent


def leave_a_run(aws: MotoAws) -> LaunchResult:
    spec = LaunchSpec(image_id=aws.image_id, instance_types=("g4dn.xlarge",), ssh_cidr=TEST_CIDR)
    return launch(AwsContext(REGION), spec, sleep=lambda s: None)


def test_config_show_prints_values_and_sources(cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    Path("gpu-transcribe.toml").write_text(
        'instance_types = ["g6.xlarge", "g4dn.xlarge"]\ns3_bucket = "b-1"\n'
    )
    monkeypatch.setenv("GPU_TRANSCRIBE_MARKET", "spot")
    result = cli.invoke(app, ["config", "show", "--region", "eu-west-1"])
    assert result.exit_code == 0, result.output
    # Not a terminal: one "name = value  (source)" line per setting.
    rows = {
        name: [value, source.removeprefix("(").removesuffix(")")]
        for name, _, rest in (line.partition(" = ") for line in result.stdout.splitlines())
        for value, _, source in [rest.rpartition("  ")]
        if rest
    }
    assert rows["region"] == ["eu-west-1", "--region"]
    assert rows["market"] == ["spot", "GPU_TRANSCRIBE_MARKET"]
    assert rows["instance_types"][0] == "g6.xlarge,g4dn.xlarge"
    assert rows["instance_types"][1].endswith("gpu-transcribe.toml")
    assert rows["ssh_cidr"] == ["auto", "default"]
    assert rows["s3_bucket"] == ["b-1", str(Path.cwd() / "gpu-transcribe.toml")]
    assert "config files, first wins:" in result.stdout


def test_a_bad_setting_is_one_line_on_stderr_and_exit_2(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPU_TRANSCRIBE_MAX_LIFETIME_MINUTES", "forever")
    result = cli.invoke(app, ["config", "show"])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        "error: max_lifetime_minutes (from GPU_TRANSCRIBE_MAX_LIFETIME_MINUTES): 'forever'"
    )
    assert "whole number of minutes from 10 to 1440" in lines[0]


def test_zones_lists_cheapest_first_with_on_demand_and_saving(aws: MotoAws, cli: CliRunner) -> None:
    result = cli.invoke(app, ["zones"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if "eu-north-1" in line and "│" in line]
    cells = [[c.strip() for c in row.split("│")[1:-1]] for row in rows]
    assert cells == [
        ["eu-north-1b", "g4dn.xlarge", "0.1881", "0.5580", "66%"],
        ["eu-north-1c", "g4dn.xlarge", "0.1932", "0.5580", "65%"],
        ["eu-north-1a", "g4dn.xlarge", "0.2004", "0.5580", "64%"],
    ]
    assert "on-demand prices: table:" in result.stdout and "2026-11-22" in result.stdout
    # The user is told where the table's prices come from, never about the project's development notes.
    assert "AWS Price List" in result.stdout
    assert "notes" not in result.stdout


def test_zones_json_for_scripts(aws: MotoAws, cli: CliRunner) -> None:
    result = cli.invoke(app, ["zones", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["region"] == REGION and data["instance_types"] == ["g4dn.xlarge"]
    assert [row["zone"] for row in data["rows"]] == ["eu-north-1b", "eu-north-1c", "eu-north-1a"]
    assert data["rows"][0]["spot_price_usd_per_hour"] == pytest.approx(0.1881)
    assert data["rows"][0]["on_demand"]["price_usd_per_hour"] == pytest.approx(0.558)


def test_zones_for_a_type_offered_in_two_zones_and_one_offered_nowhere(aws: MotoAws, cli: CliRunner) -> None:
    aws.set_spot_prices({("g5.xlarge", "eu-north-1c"): 0.31, ("g5.xlarge", "eu-north-1b"): 0.29})
    result = cli.invoke(app, ["zones", "-t", "g5.xlarge"])
    assert result.exit_code == 0, result.output
    zones = [line.split("│")[1].strip() for line in result.stdout.splitlines() if "g5.xlarge" in line]
    assert zones == ["eu-north-1b", "eu-north-1c"]
    result = cli.invoke(app, ["zones", "-t", "g4dn.nothing"])
    assert result.exit_code == 1
    assert "no zone in eu-north-1 offers g4dn.nothing" in result.stderr


def test_zones_with_rejected_credentials_says_how_to_fix(aws: MotoAws, cli: CliRunner) -> None:
    aws.fail(
        "DescribeInstanceTypeOfferings", "AuthFailure", status=401, message="AWS was not able to validate"
    )
    result = cli.invoke(app, ["zones"])
    assert result.exit_code == 1
    assert "rejected the credentials" in result.stderr and "aws configure" in result.stderr


def test_cleanup_table_and_dry_run(aws: MotoAws, cli: CliRunner) -> None:
    left = leave_a_run(aws)
    result = cli.invoke(app, ["cleanup", "--dry-run", "--older-than", "0"])
    assert result.exit_code == 0, result.output
    assert "dry run: nothing changed" in result.stdout
    for resource_id in (left.instance_id, left.key_name, left.security_group_id):
        assert resource_id in result.stdout
    assert result.stdout.count("would-remove") == 3
    assert len(find_resources(AwsContext(REGION))) == 3

    young = cli.invoke(app, ["cleanup"])
    assert young.exit_code == 0
    assert young.stdout.count("skipped") == 3
    assert len(find_resources(AwsContext(REGION))) == 3

    done = cli.invoke(app, ["cleanup", "--run-id", left.run_id])
    assert done.exit_code == 0, done.output
    assert "terminated" in done.stdout and done.stdout.count("deleted") == 2
    assert find_resources(AwsContext(REGION)) == ()
    assert "nothing of gpu-transcribe's found in eu-north-1" in cli.invoke(app, ["cleanup"]).stdout


def test_cleanup_dry_run_json_for_scripts(aws: MotoAws, cli: CliRunner) -> None:
    left = leave_a_run(aws)
    result = cli.invoke(app, ["cleanup", "--dry-run", "--older-than", "0", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["dry_run"] is True and data["region"] == REGION
    found = {o["resource"]["resource_id"]: o["action"] for o in data["outcomes"]}
    assert found == {r: "would-remove" for r in (left.instance_id, left.key_name, left.security_group_id)}
    assert len(find_resources(AwsContext(REGION))) == 3


def test_cleanup_exits_non_zero_with_the_reason_when_something_stays(aws: MotoAws, cli: CliRunner) -> None:
    left = leave_a_run(aws)
    aws.fail(
        "DeleteKeyPair", "UnauthorizedOperation", message="You are not authorized to perform this operation."
    )
    result = cli.invoke(app, ["cleanup", "--older-than", "0"])
    assert result.exit_code == 1
    assert "failed" in result.stdout
    assert f"key-pair {left.key_name}: UnauthorizedOperation" in result.stderr


def test_cleanup_bad_duration(aws: MotoAws, cli: CliRunner) -> None:
    result = cli.invoke(app, ["cleanup", "--older-than", "soon"])
    assert result.exit_code == 2
    assert "--older-than: 'soon' is not a duration" in result.stderr


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in env.items() if not k.startswith("GPU_TRANSCRIBE_")}
    full_env.update(PYTHONPATH=str(REPO), COLUMNS="200", NO_COLOR="1")
    return subprocess.run(
        [sys.executable, "-m", "gpu_transcribe", *args],
        env=full_env,
        cwd=env.get("HOME", str(REPO)),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_zones_and_cleanup_as_subprocesses_through_aws_endpoint_url(aws: MotoAws, tmp_path: Path) -> None:
    left = leave_a_run(aws)
    env = dict(os.environ, HOME=str(tmp_path))  # the aws fixture set AWS_ENDPOINT_URL and fake credentials
    zones = run_cli("zones", env=env)
    assert zones.returncode == 0, zones.stderr
    assert (
        zones.stdout.index("eu-north-1b")
        < zones.stdout.index("eu-north-1c")
        < zones.stdout.index("eu-north-1a")
    )
    cleanup = run_cli("cleanup", "--older-than", "0", env=env)
    assert cleanup.returncode == 0, cleanup.stderr
    assert left.instance_id in cleanup.stdout
    assert find_resources(AwsContext(REGION)) == ()


def test_help_does_not_import_boto3() -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from gpu_transcribe.cli.main import app\n"
        "commands = (['--help'], ['zones', '--help'], ['cleanup', '--help'], ['config', 'show', '--help'])\n"
        "for args in commands:\n"
        "    result = CliRunner().invoke(app, args)\n"
        "    assert result.exit_code == 0, result.output\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 'moto', 'torch')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("how", ["flag", "AWS_PROFILE"])
def test_a_profile_that_does_not_exist_is_one_line_and_exit_2(tmp_path: Path, how: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["HOME"] = str(tmp_path)  # no ~/.aws at all
    if how == "AWS_PROFILE":
        env["AWS_PROFILE"] = "nope"
    proc = run_cli("zones", *(["--aws-profile", "nope"] if how == "flag" else []), env=env)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    source = "--aws-profile" if how == "flag" else "AWS_PROFILE"
    assert f"AWS profile 'nope' (from {source})" in lines[0] and "aws configure --profile nope" in lines[0]


def test_a_mistyped_setting_variable_is_a_warning_naming_the_setting(tmp_path: Path) -> None:
    env = dict(os.environ, HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    env = {k: v for k, v in env.items() if not k.startswith("GPU_TRANSCRIBE_")}
    extra = {
        "GPU_TRANSCRIBE_REGIN": "eu-west-1",
        "GPU_TRANSCRIBE_DIAL_ADDRESS": "127.0.0.1:22",  # read by the code, not a setting: no warning
        "GPU_TRANSCRIBE_TEST_MODEL": "/models/whisper-base",
        "GPU_TRANSCRIBE_REGION": "eu-north-1",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "gpu_transcribe", "config", "show"],
        env={**env, **extra, "PYTHONPATH": str(REPO), "COLUMNS": "200", "NO_COLOR": "1"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr  # not fatal
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [
        "warning: GPU_TRANSCRIBE_REGIN is not a setting and is ignored; did you mean GPU_TRANSCRIBE_REGION?"
    ]
