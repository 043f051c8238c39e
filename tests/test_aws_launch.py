"""Launch against moto: what the instance carries (tags, security group rule, IMDSv2, encrypted volume,
shutdown behaviour, user data), the spot -> next zone -> on-demand fallback under injected capacity errors,
transient retries, and preflight stops (quota 0, bad or missing credentials) before anything is created."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from gpu_transcribe import __version__
from gpu_transcribe.aws.clients import AwsContext
from gpu_transcribe.aws.ec2.launch import launch
from gpu_transcribe.aws.ec2.launch_plan import SKIPPED_ABOVE_MAX_PRICE, plan_launch
from gpu_transcribe.aws.ec2.models import LaunchResult, LaunchSpec
from gpu_transcribe.aws.ec2.resources import find_resources
from gpu_transcribe.aws.ec2.userdata import DEADMAN_PATH, HEARTBEAT_PATH, deadman_script
from gpu_transcribe.common import ProgressEvent
from gpu_transcribe.errors import (
    CapacityError,
    CloudError,
    CredentialsError,
    ImageNotFoundError,
    QuotaError,
)
from gpu_transcribe.instance.spec import launch_spec
from gpu_transcribe.settings import load_settings
from tests.fixtures.moto_aws import CALLER_ARN, ON_DEMAND_QUOTA, REGION, SPOT_QUOTA, TEST_CIDR, MotoAws

# A hung AWS call must fail with a traceback, not stall the suite (the default timeout is 900 s).
pytestmark = pytest.mark.timeout(120)

# Default prices (fixture): eu-north-1b 0.1881 < eu-north-1c 0.1932 < eu-north-1a 0.2004.
ZONE_ORDER = ["eu-north-1b", "eu-north-1c", "eu-north-1a"]


def spec(aws: MotoAws, **overrides: object) -> LaunchSpec:
    values: dict[str, object] = {
        "image_id": aws.image_id,
        "instance_types": ("g4dn.xlarge",),
        "ssh_cidr": TEST_CIDR,
        "extra_tags": (("project", "minutes"),),
    }
    values.update(overrides)
    return LaunchSpec(**values)  # type: ignore[arg-type]


def do_launch(aws: MotoAws, sleeps: list[float] | None = None, **overrides: object) -> LaunchResult:
    return launch(
        AwsContext(REGION), spec(aws, **overrides), sleep=(sleeps if sleeps is not None else []).append
    )


def tags_of(items: list[dict]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items}


def assert_nothing_of_ours_left(aws: MotoAws) -> None:
    assert find_resources(AwsContext(REGION)) == ()
    ec2 = aws.ec2()
    live = ec2.describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
    )["Reservations"]
    assert live == []


def test_launched_instance_carries_the_safety_settings(aws: MotoAws) -> None:
    events: list[ProgressEvent] = []
    before = datetime.now(UTC).replace(microsecond=0)
    result = launch(AwsContext(REGION), spec(aws), on_progress=events.append, sleep=lambda s: None)
    ec2 = aws.ec2()

    # The result.
    assert (result.market, result.zone, result.instance_type) == ("spot", "eu-north-1b", "g4dn.xlarge")
    assert result.price_usd_per_hour == pytest.approx(0.1881)
    assert result.owner_arn == CALLER_ARN
    assert [(a.zone, a.market, a.error_code) for a in result.attempts] == [("eu-north-1b", "spot", "")]
    assert result.public_ip  # moto assigns one at once
    assert "PRIVATE" not in repr(result)

    instance = ec2.describe_instances(InstanceIds=[result.instance_id])["Reservations"][0]["Instances"][0]
    assert instance["InstanceLifecycle"] == "spot"
    assert instance["KeyName"] == result.key_name
    # Tags on the instance.
    tags = tags_of(instance["Tags"])
    assert tags["gpu-transcribe:run-id"] == result.run_id
    assert tags["gpu-transcribe:owner"] == CALLER_ARN
    assert tags["gpu-transcribe:version"] == __version__
    assert tags["gpu-transcribe:role"] == "run"
    assert tags["Name"] == f"gpu-transcribe-run-{result.run_id}"
    assert tags["project"] == "minutes"
    created = datetime.strptime(tags["gpu-transcribe:created"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= created <= datetime.now(UTC)
    # IMDSv2 required.
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    assert instance["MetadataOptions"]["HttpEndpoint"] == "enabled"
    # Shutdown from inside terminates.
    behaviour = ec2.describe_instance_attribute(
        InstanceId=result.instance_id, Attribute="instanceInitiatedShutdownBehavior"
    )
    assert behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    # Encrypted root volume, deleted on termination, tagged.
    assert instance["BlockDeviceMappings"][0]["Ebs"]["DeleteOnTermination"] is True
    volumes = ec2.describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": [result.instance_id]}]
    )
    (volume,) = volumes["Volumes"]
    assert volume["Encrypted"] is True
    (image,) = ec2.describe_images(ImageIds=[aws.image_id])["Images"]
    assert volume["Size"] == image["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"]  # the AMI's own size
    assert volume["VolumeType"] == "gp3"
    assert tags_of(volume["Tags"])["gpu-transcribe:run-id"] == result.run_id
    # Security group: port 22 only, from the allowed CIDR only; tagged.
    groups = [g["GroupId"] for ni in instance["NetworkInterfaces"] for g in ni["Groups"]]
    assert groups == [result.security_group_id]
    (group,) = ec2.describe_security_groups(GroupIds=[result.security_group_id])["SecurityGroups"]
    assert [(p["IpProtocol"], p["FromPort"], p["ToPort"]) for p in group["IpPermissions"]] == [
        ("tcp", 22, 22)
    ]
    assert [r["CidrIp"] for r in group["IpPermissions"][0]["IpRanges"]] == [TEST_CIDR]
    assert group["IpPermissions"][0]["Ipv6Ranges"] == []
    assert tags_of(group["Tags"])["gpu-transcribe:owner"] == CALLER_ARN
    # Key pair: the run's client key, tagged.
    (key,) = ec2.describe_key_pairs(KeyNames=[result.key_name])["KeyPairs"]
    assert key["KeyType"] == "ed25519"
    assert tags_of(key["Tags"])["gpu-transcribe:run-id"] == result.run_id

    # User data: the host key the client will expect, and the dead-man switch with our limits.
    raw = ec2.describe_instance_attribute(InstanceId=result.instance_id, Attribute="userData")["UserData"][
        "Value"
    ]
    text = base64.b64decode(raw).decode()
    assert text.startswith("#cloud-config\n")
    config = yaml.safe_load(text)  # as cloud-init reads it
    assert config["ssh_keys"]["ed25519_public"] == result.host_public_key
    assert config["ssh_keys"]["ed25519_private"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert config["ssh_deletekeys"] is True
    assert result.host_public_key.split()[0] == "ssh-ed25519"
    assert result.host_public_key != result.client_key.public_key_openssh
    files = {f["path"]: f for f in config["write_files"]}
    assert files[DEADMAN_PATH]["content"] == deadman_script()
    # Only the login user may write the heartbeat; written once that user exists, before the switch starts.
    heartbeat = files[HEARTBEAT_PATH]
    assert (heartbeat["owner"], heartbeat["permissions"], heartbeat["defer"]) == ("ubuntu:root", "0644", True)
    assert not int(heartbeat["permissions"], 8) & 0o022
    start = " ".join(config["runcmd"][0])
    assert "MAX_LIFETIME_S=3600" in start
    assert "HEARTBEAT_TIMEOUT_S=300" in start
    assert f"HEARTBEAT_FILE={HEARTBEAT_PATH}" in start
    assert config["runcmd"][1] == ["shutdown", "-P", "+62"]

    stages = [e.stage for e in events]
    assert (
        stages.index("preflight")
        < stages.index("key-pair")
        < stages.index("attempt")
        < stages.index("launched")
    )


def test_run_instances_requires_imdsv2_with_hop_limit_one(aws: MotoAws) -> None:
    """IMDSv2 only, and its token cannot travel past the instance itself (hop limit 1: no container on it
    can fetch the instance role's credentials)."""
    launch(AwsContext(REGION), spec(aws), sleep=lambda s: None)
    (call,) = aws.calls("RunInstances")
    assert call["MetadataOptions.HttpTokens"] == "required"
    assert call["MetadataOptions.HttpPutResponseHopLimit"] == "1"
    assert call["MetadataOptions.HttpEndpoint"] == "enabled"


def test_spec_from_settings_and_its_user_data(aws: MotoAws) -> None:
    settings = load_settings(
        {"max_lifetime_minutes": 30, "heartbeat_timeout_minutes": 3, "market": "on-demand"},
        env={"GPU_TRANSCRIBE_TAGS": "team=speech"},
        config_files=(),
    )
    spec = launch_spec(
        settings,
        image_id=aws.image_id,
        ssh_cidr="2001:db8::7/128",
        role="builder",
        root_volume_size_gib=60,
    )
    result = launch(AwsContext(REGION), spec, sleep=lambda s: None)
    ec2 = aws.ec2()
    instance = ec2.describe_instances(InstanceIds=[result.instance_id])["Reservations"][0]["Instances"][0]
    assert "InstanceLifecycle" not in instance
    assert result.market == "on-demand" and result.price_usd_per_hour == 0.558
    tags = tags_of(instance["Tags"])
    assert tags["gpu-transcribe:role"] == "builder" and tags["team"] == "speech"
    assert tags["Name"] == f"gpu-transcribe-builder-{result.run_id}"
    (group,) = ec2.describe_security_groups(GroupIds=[result.security_group_id])["SecurityGroups"]
    assert [r["CidrIpv6"] for r in group["IpPermissions"][0]["Ipv6Ranges"]] == ["2001:db8::7/128"]
    assert group["IpPermissions"][0]["IpRanges"] == []
    raw = ec2.describe_instance_attribute(InstanceId=result.instance_id, Attribute="userData")["UserData"][
        "Value"
    ]
    config = yaml.safe_load(base64.b64decode(raw))
    assert "--setenv=MAX_LIFETIME_S=1800" in config["runcmd"][0]
    assert "--setenv=HEARTBEAT_TIMEOUT_S=180" in config["runcmd"][0]
    assert config["runcmd"][1:] == [["shutdown", "-P", "+32"]]  # the lifetime setting, plus 2 minutes
    volumes = ec2.describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": [result.instance_id]}]
    )
    assert volumes["Volumes"][0]["Size"] == 60


def test_capacity_error_in_cheapest_zone_moves_to_the_next(aws: MotoAws) -> None:
    aws.fail("RunInstances", "InsufficientInstanceCapacity", status=500, zone="eu-north-1b", market="spot")
    result = do_launch(aws)
    assert (result.market, result.zone) == ("spot", "eu-north-1c")
    assert [(a.zone, a.market, a.error_code) for a in result.attempts] == [
        ("eu-north-1b", "spot", "InsufficientInstanceCapacity"),
        ("eu-north-1c", "spot", ""),
    ]
    # Capacity errors are not retried: exactly one call per zone (botocore's retries are off for this call).
    assert [c["zone"] for c in aws.calls("RunInstances")] == ["eu-north-1b", "eu-north-1c"]


def test_all_spot_fails_then_on_demand_in_zone_order(aws: MotoAws) -> None:
    aws.fail("RunInstances", "InsufficientInstanceCapacity", status=500, zone="eu-north-1b")
    aws.fail("RunInstances", "SpotMaxPriceTooLow", market="spot", zone="eu-north-1c")
    aws.fail("RunInstances", "MaxSpotInstanceCountExceeded", market="spot", zone="eu-north-1a")
    result = do_launch(aws)
    assert (result.market, result.zone) == ("on-demand", "eu-north-1c")
    assert result.price_usd_per_hour == 0.558 and "table" in result.price_source
    assert [(a.zone, a.market, a.error_code) for a in result.attempts] == [
        ("eu-north-1b", "spot", "InsufficientInstanceCapacity"),
        ("eu-north-1c", "spot", "SpotMaxPriceTooLow"),
        ("eu-north-1a", "spot", "MaxSpotInstanceCountExceeded"),
        ("eu-north-1b", "on-demand", "InsufficientInstanceCapacity"),
        ("eu-north-1c", "on-demand", ""),
    ]
    instance = aws.ec2().describe_instances(InstanceIds=[result.instance_id])["Reservations"][0]["Instances"][
        0
    ]
    assert "InstanceLifecycle" not in instance


def test_everything_fails_lists_every_attempt_and_leaves_nothing(aws: MotoAws) -> None:
    aws.fail("RunInstances", "InsufficientInstanceCapacity", status=500)
    with pytest.raises(CapacityError) as caught:
        do_launch(aws)
    attempts = caught.value.attempts
    assert [(a.zone, a.market) for a in attempts] == [(z, "spot") for z in ZONE_ORDER] + [
        (z, "on-demand") for z in ZONE_ORDER
    ]
    assert all(a.error_code == "InsufficientInstanceCapacity" and a.seconds >= 0 for a in attempts)
    message = str(caught.value)
    for zone in ZONE_ORDER:
        assert f"spot g4dn.xlarge in {zone}: InsufficientInstanceCapacity" in message
        assert f"on-demand g4dn.xlarge in {zone}: InsufficientInstanceCapacity" in message
    assert_nothing_of_ours_left(aws)


def test_market_spot_never_falls_back_to_on_demand(aws: MotoAws) -> None:
    aws.fail("RunInstances", "InsufficientInstanceCapacity", status=500)
    with pytest.raises(CapacityError) as caught:
        do_launch(aws, market="spot")
    assert {a.market for a in caught.value.attempts} == {"spot"}
    assert len(caught.value.attempts) == 3


def test_second_instance_type_is_tried_after_the_first_in_every_zone(aws: MotoAws) -> None:
    aws.set_spot_prices(
        {
            ("g4dn.xlarge", "eu-north-1a"): 0.20,
            ("g4dn.xlarge", "eu-north-1b"): 0.19,
            ("g4dn.xlarge", "eu-north-1c"): 0.21,
            ("g5.xlarge", "eu-north-1b"): 0.40,
            ("g5.xlarge", "eu-north-1c"): 0.30,
        }
    )
    aws.fail("RunInstances", "InsufficientInstanceCapacity", status=500, instance_type="g4dn.xlarge")
    result = do_launch(aws, instance_types=("g4dn.xlarge", "g5.xlarge"), market="spot")
    assert (result.instance_type, result.zone) == ("g5.xlarge", "eu-north-1c")
    assert [(a.instance_type, a.zone) for a in result.attempts] == [
        ("g4dn.xlarge", "eu-north-1b"),
        ("g4dn.xlarge", "eu-north-1a"),
        ("g4dn.xlarge", "eu-north-1c"),
        ("g5.xlarge", "eu-north-1c"),
    ]


def test_transient_errors_are_retried_with_capped_jittered_backoff(aws: MotoAws) -> None:
    aws.fail("RunInstances", "RequestLimitExceeded", status=503, times=2)
    sleeps: list[float] = []
    result = do_launch(aws, sleeps=sleeps)
    assert (result.market, result.zone) == ("spot", "eu-north-1b")  # same option, not the next zone
    assert [a.error_code for a in result.attempts] == ["RequestLimitExceeded", "RequestLimitExceeded", ""]
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= 1.0 and 0 <= sleeps[1] <= 2.0  # full jitter under 1 s * 2**n
    calls = aws.calls("RunInstances")
    assert len(calls) == 3
    assert len({c["ClientToken"] for c in calls}) == 1  # a retry can never start a second instance


def test_persistent_transient_errors_give_up_on_that_option_and_move_on(aws: MotoAws) -> None:
    aws.fail("RunInstances", "InternalError", status=500, zone="eu-north-1b", market="spot")
    sleeps: list[float] = []
    result = do_launch(aws, sleeps=sleeps)
    assert result.zone == "eu-north-1c"
    assert [a.error_code for a in result.attempts] == ["InternalError"] * 4 + [""]
    assert len(sleeps) == 3 and max(sleeps) <= 20


def test_spot_price_above_the_maximum_skips_the_zone(aws: MotoAws) -> None:
    result = do_launch(aws, max_spot_price_usd_per_hour=0.19)
    assert result.zone == "eu-north-1b"
    assert aws.calls("RunInstances")[0]["InstanceMarketOptions.SpotOptions.MaxPrice"] == "0.1900"
    aws.fail("RunInstances", "InsufficientInstanceCapacity", status=500, zone="eu-north-1b", market="spot")
    result = do_launch(aws, max_spot_price_usd_per_hour=0.19)
    assert [(a.zone, a.market, a.error_code) for a in result.attempts] == [
        ("eu-north-1c", "spot", SKIPPED_ABOVE_MAX_PRICE),
        ("eu-north-1a", "spot", SKIPPED_ABOVE_MAX_PRICE),
        ("eu-north-1b", "spot", "InsufficientInstanceCapacity"),
        ("eu-north-1b", "on-demand", ""),
    ]


def test_zero_spot_quota_stops_before_any_launch(aws: MotoAws) -> None:
    aws.set_quota(SPOT_QUOTA, 0)
    events: list[ProgressEvent] = []
    with pytest.raises(QuotaError) as caught:
        launch(AwsContext(REGION), spec(aws, market="spot"), on_progress=events.append, sleep=lambda s: None)
    error = caught.value
    assert (error.quota_code, error.quota_vcpus, error.needed_vcpus) == (SPOT_QUOTA, 0, 4)
    message = str(error)
    assert "L-3819A6DF (All G and VT Spot Instance Requests) is 0 vCPUs in eu-north-1" in message
    assert "g4dn.xlarge needs 4" in message
    assert (
        "request-service-quota-increase --service-code ec2 --quota-code L-3819A6DF --desired-value 4"
        in message
    )
    assert aws.calls("RunInstances") == []
    assert aws.calls("ImportKeyPair") == [] and aws.calls("CreateSecurityGroup") == []
    assert_nothing_of_ours_left(aws)


def test_zero_quota_in_both_markets_names_both(aws: MotoAws) -> None:
    aws.set_quota(SPOT_QUOTA, 0)
    aws.set_quota(ON_DEMAND_QUOTA, 0)
    with pytest.raises(
        QuotaError, match=r"spot quota L-3819A6DF .*; also on-demand quota L-DB2E81BA is 0 vCPUs"
    ):
        do_launch(aws)
    assert aws.calls("RunInstances") == []


def test_zero_spot_quota_goes_straight_to_on_demand(aws: MotoAws) -> None:
    aws.set_quota(SPOT_QUOTA, 2)  # less than one g4dn.xlarge (4 vCPUs)
    result = do_launch(aws)
    assert result.market == "on-demand"
    assert {c["market"] for c in aws.calls("RunInstances")} == {"on-demand"}


def test_unreadable_quota_is_said_and_the_launch_goes_on(aws: MotoAws) -> None:
    aws.set_quota(SPOT_QUOTA, None)  # moto answers NoSuchResourceException, as for an unknown quota
    events: list[ProgressEvent] = []
    result = launch(AwsContext(REGION), spec(aws), on_progress=events.append, sleep=lambda s: None)
    assert result.market == "spot"
    notes = [e.message for e in events if e.stage == "quota"]
    assert any("could not read the spot quota L-3819A6DF" in n and "going on" in n for n in notes)


def test_vcpu_limit_exceeded_ends_the_market(aws: MotoAws) -> None:
    aws.fail("RunInstances", "VcpuLimitExceeded", market="spot")
    result = do_launch(aws)
    assert [(a.zone, a.market, a.error_code) for a in result.attempts] == [
        ("eu-north-1b", "spot", "VcpuLimitExceeded"),
        ("eu-north-1b", "on-demand", ""),
    ]
    aws.fail("RunInstances", "VcpuLimitExceeded", market="on-demand")
    with pytest.raises(QuotaError, match=r"on-demand vCPU quota L-DB2E81BA .* is used up") as caught:
        do_launch(aws)
    assert (caught.value.quota_code, caught.value.quota_vcpus, caught.value.needed_vcpus) == (
        ON_DEMAND_QUOTA,
        64,
        4,
    )
    assert_nothing_of_ours_left_but(aws, result.run_id)


def assert_nothing_of_ours_left_but(aws: MotoAws, run_id: str) -> None:
    assert {r.run_id for r in find_resources(AwsContext(REGION))} == {run_id}


def test_bad_credentials_stop_before_anything(aws: MotoAws) -> None:
    aws.fail(
        "GetCallerIdentity", "InvalidClientTokenId", status=403, message="The security token is invalid."
    )
    ctx = AwsContext(REGION, profile=None)
    with pytest.raises(CredentialsError) as caught:
        launch(ctx, spec(aws), sleep=lambda s: None)
    message = str(caught.value)
    assert "rejected the credentials" in message and "InvalidClientTokenId" in message
    assert "region eu-north-1" in message
    assert "aws configure" in message and "AWS_ACCESS_KEY_ID" in message
    assert aws.calls("RunInstances") == [] and aws.calls("ImportKeyPair") == []


def test_missing_credentials_name_the_profile_and_how_to_configure(
    aws: MotoAws, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-role lookup on this machine
    with pytest.raises(
        CredentialsError, match=r"no usable AWS credentials found for the default credential chain"
    ):
        launch(AwsContext(REGION), spec(aws), sleep=lambda s: None)
    with pytest.raises(
        CredentialsError, match=r"AWS profile 'nobody' \(from --aws-profile\) is not in ~/.aws/config"
    ):
        launch(AwsContext(REGION, "nobody", "--aws-profile"), spec(aws), sleep=lambda s: None)
    assert aws.calls("RunInstances") == []


def test_auth_failure_during_launch_stops_at_once_and_cleans_up(aws: MotoAws) -> None:
    aws.fail("RunInstances", "AuthFailure", status=401, zone="eu-north-1b")
    with pytest.raises(CredentialsError):
        do_launch(aws)
    assert len(aws.calls("RunInstances")) == 1
    assert_nothing_of_ours_left(aws)


def test_other_errors_stop_without_fallback_and_clean_up(aws: MotoAws) -> None:
    aws.fail("RunInstances", "InvalidParameterValue", message="Value (x) for parameter y is invalid")
    with pytest.raises(
        CloudError, match=r"launching spot g4dn.xlarge in eu-north-1b failed \(InvalidParameterValue\)"
    ):
        do_launch(aws)
    assert len(aws.calls("RunInstances")) == 1
    assert_nothing_of_ours_left(aws)


def test_missing_image_is_reported_before_creating_anything(aws: MotoAws) -> None:
    with pytest.raises(ImageNotFoundError, match="image ami-0123456789abcdef0 does not exist in eu-north-1"):
        do_launch(aws, image_id="ami-0123456789abcdef0")
    assert aws.calls("ImportKeyPair") == []


def test_subnet_setting_pins_the_zone(aws: MotoAws) -> None:
    subnets = aws.ec2().describe_subnets()["Subnets"]
    subnet = next(s for s in subnets if s["AvailabilityZone"] == "eu-north-1a")
    result = do_launch(aws, subnet_id=subnet["SubnetId"])
    assert result.zone == "eu-north-1a"
    assert [c["NetworkInterface.1.SubnetId"] for c in aws.calls("RunInstances")] == [subnet["SubnetId"]]


def test_launch_interrupted_after_run_instances_removes_the_instance(aws: MotoAws) -> None:
    """A KeyboardInterrupt after RunInstances answered (here: during the progress report) still tears down."""

    def interrupt(event: ProgressEvent) -> None:
        if event.stage == "launched":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        launch(AwsContext(REGION), spec(aws), on_progress=interrupt, sleep=lambda s: None)
    assert len(aws.calls("RunInstances")) == 1
    assert_nothing_of_ours_left(aws)
    states = {
        i["State"]["Name"] for r in aws.ec2().describe_instances()["Reservations"] for i in r["Instances"]
    }
    assert states == {"terminated"}


def test_user_data_is_valid_yaml_and_json(aws: MotoAws) -> None:
    result = do_launch(aws)
    raw = aws.ec2().describe_instance_attribute(InstanceId=result.instance_id, Attribute="userData")
    text = base64.b64decode(raw["UserData"]["Value"]).decode()
    assert yaml.safe_load(text) == json.loads(text.split("\n", 1)[1])
    assert len(text.encode()) < 16 * 1024


def test_plan_creates_nothing_and_launch_follows_it(aws: MotoAws) -> None:
    """``run --dry-run`` shows a plan; the launch that follows tries exactly its options."""
    launch_spec = spec(aws, max_spot_price_usd_per_hour=0.195)
    plan = plan_launch(AwsContext(REGION), launch_spec)
    assert [(o.market, o.zone.zone) for o in plan.options] == [
        ("spot", "eu-north-1b"),
        ("spot", "eu-north-1c"),
        ("on-demand", "eu-north-1b"),
        ("on-demand", "eu-north-1c"),
        ("on-demand", "eu-north-1a"),
    ]
    assert [(a.zone, a.error_code) for a in plan.skipped] == [("eu-north-1a", SKIPPED_ABOVE_MAX_PRICE)]
    assert dict(plan.tags)["gpu-transcribe:run-id"] == launch_spec.run_id
    assert dict(plan.tags)["gpu-transcribe:owner"] == CALLER_ARN
    assert plan.image.root_device_name == "/dev/sda1"
    assert {c.quota_code: c.ok for c in plan.quota_checks} == {SPOT_QUOTA: True, ON_DEMAND_QUOTA: True}
    assert find_resources(AwsContext(REGION)) == ()
    assert aws.calls("ImportKeyPair") == [] and aws.calls("RunInstances") == []

    result = launch(AwsContext(REGION), launch_spec, plan=plan, sleep=lambda s: None)
    assert result.created_at == plan.created_at and result.zone == "eu-north-1b"
    with pytest.raises(ValueError, match="another spec"):
        launch(AwsContext(REGION), spec(aws), plan=plan)


def test_an_unknown_instance_type_is_reported_before_creating_anything(aws: MotoAws) -> None:
    with pytest.raises(CloudError, match=r"looking up instance types g4dn\.huge .*InvalidInstanceType"):
        do_launch(aws, instance_types=("g4dn.huge",))
    assert aws.calls("ImportKeyPair") == [] and aws.calls("RunInstances") == []


@pytest.mark.parametrize("cidr", ["auto", "0.0.0.0", "203.0.113.7/16", "not-an-address"])
def test_a_spec_needs_a_resolved_cidr(aws: MotoAws, cidr: str) -> None:
    with pytest.raises(ValueError, match="ssh_cidr"):
        spec(aws, ssh_cidr=cidr)


@pytest.mark.skipif(shutil.which("cloud-init") is None, reason="needs cloud-init (Debian package cloud-init)")
def test_user_data_passes_cloud_inits_own_schema_check(aws: MotoAws, tmp_path: Path) -> None:
    result = do_launch(aws)
    raw = aws.ec2().describe_instance_attribute(InstanceId=result.instance_id, Attribute="userData")
    path = tmp_path / "user-data"
    path.write_bytes(base64.b64decode(raw["UserData"]["Value"]))
    check = subprocess.run(
        ["cloud-init", "schema", "--config-file", str(path)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "Valid cloud-config" in check.stdout
