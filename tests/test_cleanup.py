"""``cleanup`` orchestration against moto: it finds what a run that never tore down left, removes only the
caller's own and old enough, changes nothing on a dry run, and reports what it could not remove."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gpu_transcribe.account.cleanup import cleanup, default_grace_s, format_age
from gpu_transcribe.aws.clients import AwsContext
from gpu_transcribe.aws.ec2.launch import launch
from gpu_transcribe.aws.ec2.models import LaunchResult, LaunchSpec
from gpu_transcribe.aws.ec2.resources import find_resources
from gpu_transcribe.aws.models import TAG_OWNER
from gpu_transcribe.common import ProgressEvent, utc_now
from gpu_transcribe.settings import Settings, load_settings
from tests.fixtures.moto_aws import CALLER_ARN, REGION, TEST_CIDR, MotoAws
from tests.test_aws_instances import FakeTime

# A hung AWS call must fail with a traceback, not stall the suite (the default timeout is 900 s).
pytestmark = pytest.mark.timeout(120)

OTHER_ARN = "arn:aws:iam::123456789012:user/someone-else"


def settings() -> Settings:
    return load_settings({}, env={}, config_files=())


def leave_a_run(aws: MotoAws) -> LaunchResult:
    """A run whose client died before teardown: instance, key pair and security group stay."""
    spec = LaunchSpec(image_id=aws.image_id, instance_types=("g4dn.xlarge",), ssh_cidr=TEST_CIDR)
    return launch(AwsContext(REGION), spec, sleep=lambda s: None)


def give_to(aws: MotoAws, result: LaunchResult, owner: str) -> None:
    ec2 = aws.ec2()
    (key,) = ec2.describe_key_pairs(KeyNames=[result.key_name])["KeyPairs"]
    ec2.create_tags(
        Resources=[result.instance_id, result.security_group_id, key["KeyPairId"]],
        Tags=[{"Key": TAG_OWNER, "Value": owner}],
    )


def state(aws: MotoAws, instance_id: str) -> str:
    return str(
        aws.ec2().describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"][
            "Name"
        ]
    )


def test_finds_and_removes_what_a_dead_run_left(aws: MotoAws) -> None:
    left = leave_a_run(aws)
    later = utc_now() + timedelta(hours=2)
    events: list[ProgressEvent] = []
    fake = FakeTime()
    report = cleanup(settings(), now=later, on_progress=events.append, clock=fake.clock, sleep=fake.sleep)
    assert report.caller_arn == CALLER_ARN
    assert report.older_than_s == default_grace_s(settings()) == 70 * 60
    assert [(o.resource.kind, o.resource.resource_id, o.action) for o in report.outcomes] == [
        ("instance", left.instance_id, "terminated"),
        ("key-pair", left.key_name, "deleted"),
        ("security-group", left.security_group_id, "deleted"),
    ]
    assert report.failed == ()
    assert state(aws, left.instance_id) in ("shutting-down", "terminated")
    assert find_resources(AwsContext(REGION)) == ()
    assert any("found 3 resource(s); 3 selected" in e.message for e in events)


def test_dry_run_changes_nothing(aws: MotoAws) -> None:
    left = leave_a_run(aws)
    report = cleanup(settings(), dry_run=True, now=utc_now() + timedelta(hours=2))
    assert {o.action for o in report.outcomes} == {"would-remove"}
    assert len(report.outcomes) == 3
    assert state(aws, left.instance_id) == "running"
    assert len(find_resources(AwsContext(REGION))) == 3
    assert aws.calls("TerminateInstances") == [] and aws.calls("DeleteKeyPair") == []
    assert aws.calls("DeleteSecurityGroup") == []


def test_another_owners_resources_are_left_alone(aws: MotoAws) -> None:
    mine = leave_a_run(aws)
    theirs = leave_a_run(aws)
    give_to(aws, theirs, OTHER_ARN)
    later = utc_now() + timedelta(hours=2)
    report = cleanup(settings(), now=later, sleep=lambda s: None)
    acted = {o.resource.resource_id for o in report.acted_on}
    assert acted == {mine.instance_id, mine.key_name, mine.security_group_id}
    skipped = [o for o in report.outcomes if o.action == "skipped"]
    assert {o.resource.resource_id for o in skipped} == {
        theirs.instance_id,
        theirs.key_name,
        theirs.security_group_id,
    }
    assert all(OTHER_ARN in o.reason and "--all-owners" in o.reason for o in skipped)
    assert state(aws, theirs.instance_id) == "running"
    assert {r.run_id for r in find_resources(AwsContext(REGION))} == {theirs.run_id}

    report = cleanup(settings(), all_owners=True, now=later, sleep=lambda s: None)
    assert {o.action for o in report.outcomes} == {"terminated", "deleted"}
    assert find_resources(AwsContext(REGION)) == ()


def test_young_resources_are_skipped_unless_asked(aws: MotoAws) -> None:
    left = leave_a_run(aws)
    report = cleanup(settings(), now=utc_now() + timedelta(minutes=20), sleep=lambda s: None)
    assert {o.action for o in report.outcomes} == {"skipped"}
    assert (
        "younger than 1h10m (a run may still use it); --older-than 0 includes it" in report.outcomes[0].reason
    )
    assert state(aws, left.instance_id) == "running"
    # --older-than 15m: old enough now.
    report = cleanup(
        settings(), older_than_s=15 * 60, now=utc_now() + timedelta(minutes=20), sleep=lambda s: None
    )
    assert {o.action for o in report.outcomes} == {"terminated", "deleted"}


def test_run_id_selects_one_run_at_any_age(aws: MotoAws) -> None:
    first = leave_a_run(aws)
    second = leave_a_run(aws)
    report = cleanup(settings(), run_id=first.run_id, sleep=lambda s: None)
    assert report.older_than_s is None
    assert {o.resource.run_id for o in report.outcomes} == {first.run_id}
    assert {o.action for o in report.outcomes} == {"terminated", "deleted"}
    assert {r.run_id for r in find_resources(AwsContext(REGION))} == {second.run_id}


def test_what_cannot_be_removed_is_reported(aws: MotoAws) -> None:
    left = leave_a_run(aws)
    aws.fail(
        "DeleteKeyPair", "UnauthorizedOperation", message="You are not authorized to perform this operation."
    )
    report = cleanup(settings(), older_than_s=0, sleep=lambda s: None)
    (failed,) = report.failed
    assert failed.resource.resource_id == left.key_name
    assert failed.reason.startswith("UnauthorizedOperation: You are not authorized")
    assert state(aws, left.instance_id) in ("shutting-down", "terminated")


def test_format_age() -> None:
    assert [format_age(s) for s in (5, 600, 4200, 200_000)] == ["5s", "10m", "1h10m", "2d07h"]
