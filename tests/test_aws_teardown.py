"""Teardown against moto: instance terminated, key pair and security group deleted; idempotent; safe on a
half-created run; retries a lagging new instance and a security group still in use, bounded."""

from __future__ import annotations

import pytest

from gpu_transcribe.aws.clients import AwsContext
from gpu_transcribe.aws.ec2.launch import launch
from gpu_transcribe.aws.ec2.models import LaunchResult, LaunchSpec, RunResources
from gpu_transcribe.aws.ec2.resources import find_resources, teardown
from gpu_transcribe.aws.models import TAG_RUN_ID
from gpu_transcribe.common import new_run_id
from gpu_transcribe.errors import TeardownError
from tests.fixtures.moto_aws import REGION, TEST_CIDR, MotoAws
from tests.test_aws_instances import FakeTime

# A hung AWS call must fail with a traceback, not stall the suite (the default timeout is 900 s).
pytestmark = pytest.mark.timeout(120)


def launched(aws: MotoAws) -> LaunchResult:
    spec = LaunchSpec(image_id=aws.image_id, instance_types=("g4dn.xlarge",), ssh_cidr=TEST_CIDR)
    return launch(AwsContext(REGION), spec, sleep=lambda s: None)


def instance_state(aws: MotoAws, instance_id: str) -> str:
    reply = aws.ec2().describe_instances(InstanceIds=[instance_id])
    return str(reply["Reservations"][0]["Instances"][0]["State"]["Name"])


def key_pairs(aws: MotoAws) -> list[str]:
    return [k["KeyName"] for k in aws.ec2().describe_key_pairs()["KeyPairs"]]


def group_ids(aws: MotoAws) -> set[str]:
    return {g["GroupId"] for g in aws.ec2().describe_security_groups()["SecurityGroups"]}


def test_teardown_removes_everything_and_a_second_is_harmless(aws: MotoAws) -> None:
    result = launched(aws)
    fake = FakeTime()
    outcomes = teardown(AwsContext(REGION), result.resources, clock=fake.clock, sleep=fake.sleep)
    assert {(o.resource.kind, o.resource.resource_id, o.action) for o in outcomes} == {
        ("instance", result.instance_id, "terminated"),
        ("key-pair", result.key_name, "deleted"),
        ("security-group", result.security_group_id, "deleted"),
    }
    assert instance_state(aws, result.instance_id) in ("shutting-down", "terminated")
    assert result.key_name not in key_pairs(aws)
    assert result.security_group_id not in group_ids(aws)
    assert find_resources(AwsContext(REGION)) == ()

    again = teardown(AwsContext(REGION), result.resources, clock=fake.clock, sleep=fake.sleep)
    assert {o.action for o in again} == {"already-gone"}
    assert fake.sleeps == []


def test_teardown_by_run_id_alone_finds_everything(aws: MotoAws) -> None:
    """A client that only remembers the run id (the launch was interrupted before it returned)."""
    result = launched(aws)
    outcomes = teardown(AwsContext(REGION), RunResources(run_id=result.run_id), sleep=lambda s: None)
    assert sorted(o.resource.kind for o in outcomes if o.action in ("terminated", "deleted")) == [
        "instance",
        "key-pair",
        "security-group",
    ]


def test_teardown_of_a_half_created_run(aws: MotoAws) -> None:
    """The security group could not be opened: only the key pair and the group exist."""
    aws.fail("AuthorizeSecurityGroupIngress", "InvalidParameterValue", message="CIDR block is malformed")
    spec = LaunchSpec(image_id=aws.image_id, instance_types=("g4dn.xlarge",), ssh_cidr=TEST_CIDR)
    with pytest.raises(Exception, match="opening port 22"):
        launch(AwsContext(REGION), spec, sleep=lambda s: None)
    assert find_resources(AwsContext(REGION)) == ()  # launch undid its own half
    # And a teardown called afterwards for the same run, by a caller who knew the names, is harmless.
    outcomes = teardown(
        AwsContext(REGION),
        RunResources(run_id=spec.run_id, key_name=spec.name, security_group_id="sg-0123456789abcdef0"),
        sleep=lambda s: None,
    )
    assert {o.action for o in outcomes} == {"already-gone"}
    # Nothing at all created: nothing to do.
    assert teardown(AwsContext(REGION), RunResources(run_id=new_run_id()), sleep=lambda s: None) == ()


def test_a_new_instance_missing_from_describe_is_retried(aws: MotoAws) -> None:
    result = launched(aws)
    aws.fail(
        "DescribeInstances", "InvalidInstanceID.NotFound", times=2, **{"InstanceId.1": result.instance_id}
    )
    fake = FakeTime()
    outcomes = teardown(
        AwsContext(REGION),
        RunResources(run_id="another-run-id", instance_ids=(result.instance_id,)),
        clock=fake.clock,
        sleep=fake.sleep,
    )
    assert [(o.resource.resource_id, o.action) for o in outcomes] == [(result.instance_id, "terminated")]
    assert instance_state(aws, result.instance_id) in ("shutting-down", "terminated")
    assert len(fake.sleeps) == 2 and max(fake.sleeps) <= 2.0


def test_security_group_in_use_is_retried_until_free(aws: MotoAws) -> None:
    result = launched(aws)
    aws.fail(
        "DeleteSecurityGroup",
        "DependencyViolation",
        times=3,
        message="resource sg has a dependent object",
        GroupId=result.security_group_id,
    )
    fake = FakeTime()
    outcomes = teardown(AwsContext(REGION), result.resources, clock=fake.clock, sleep=fake.sleep)
    assert {o.action for o in outcomes} == {"terminated", "deleted"}
    assert len(aws.calls("DeleteSecurityGroup")) == 4
    assert result.security_group_id not in group_ids(aws)


def test_security_group_in_use_for_too_long_is_a_teardown_error(aws: MotoAws) -> None:
    result = launched(aws)
    aws.fail("DeleteSecurityGroup", "DependencyViolation", GroupId=result.security_group_id)
    fake = FakeTime()
    with pytest.raises(TeardownError) as caught:
        teardown(
            AwsContext(REGION),
            result.resources,
            clock=fake.clock,
            sleep=fake.sleep,
            security_group_timeout_s=120,
        )
    assert caught.value.leftovers == [
        (f"security-group {result.security_group_id}", "DependencyViolation: still in use after 120 s")
    ]
    assert f"gpu-transcribe cleanup --run-id {result.run_id}" in str(caught.value)
    assert 120 <= fake.now - 1000.0 <= 120 + 15  # bounded by the timeout (plus at most one capped wait)
    # The instance and key pair went anyway.
    assert instance_state(aws, result.instance_id) in ("shutting-down", "terminated")
    assert result.key_name not in key_pairs(aws)


def test_teardown_still_terminates_what_it_knows_when_listing_fails(aws: MotoAws) -> None:
    result = launched(aws)
    aws.fail("DescribeInstances", "UnauthorizedOperation", **{"Filter.1.Name": f"tag:{TAG_RUN_ID}"})
    with pytest.raises(TeardownError) as caught:
        teardown(AwsContext(REGION), result.resources, sleep=lambda s: None)
    assert caught.value.leftovers[-1][0] == f"run {result.run_id}"
    assert "could not be listed by tag" in str(caught.value)
    assert instance_state(aws, result.instance_id) in ("shutting-down", "terminated")
    assert result.key_name not in key_pairs(aws)
    assert result.security_group_id not in group_ids(aws)
