"""``gpu-transcribe pipeline deploy | status | destroy`` against moto, as a user runs them (Typer's
CliRunner), and what the stack made, read back through each service's own API.

moto creates most of the stack but skips some of it while still reporting CREATE_COMPLETE (the queue policy,
the bucket's notification, public access block, ownership and lifecycle, the table's TTL and point-in-time
recovery, capacity rebalancing; seen with the pinned moto). The deploy applies what is missing through
the services' APIs, and these tests check the result there: an object put into ``incoming/`` by plain S3
``put_object`` arrives on the jobs queue. The queue policy and capacity rebalancing are checked in the
template (tests/test_pipeline_template.py), since moto has nothing to read them back from. The scaler's
handler runs in-process with the environment the stack gave the Lambda (moto cannot invoke it without
docker).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import boto3
import pytest
from typer.testing import CliRunner

from gpu_transcribe.aws.clients import AwsContext
from gpu_transcribe.aws.pipeline.models import PipelineOutputs, pipeline_stack_name
from gpu_transcribe.aws.pipeline.stack import describe_stack, latest_event_ids, wait_for_stack
from gpu_transcribe.cli.main import app
from gpu_transcribe.errors import StackError
from gpu_transcribe.pipeline.contract import TTL_ATTRIBUTE
from gpu_transcribe.pipeline.deploy import DeployRequest, deploy_pipeline
from gpu_transcribe.settings import load_settings
from tests.fixtures.moto_aws import ACCOUNT_ID, CALLER_ARN, REGION, MotoAws

# A hung AWS call must fail with a traceback, not stall the suite (the default timeout is 900 s).
pytestmark = pytest.mark.timeout(180)

NAME = "team-a"
STACK = pipeline_stack_name(NAME)
BUCKET = f"gpu-transcribe-{NAME}-{ACCOUNT_ID}-{REGION}"
REPO = Path(__file__).resolve().parent.parent


def deploy(cli: CliRunner, aws: MotoAws, *args: str, name: str = NAME) -> Any:
    result = cli.invoke(app, ["pipeline", "deploy", "--pipeline", name, "--image", aws.image_id, *args])
    assert result.exit_code == 0, result.output
    return result


def outputs(name: str = NAME) -> PipelineOutputs:
    stack = describe_stack(AwsContext(REGION), pipeline_stack_name(name))
    assert stack is not None
    return PipelineOutputs.from_stack(stack)


def drain(aws: MotoAws, queue_url: str) -> list[Any]:
    """Every message on the queue (received and deleted), bodies parsed; S3's test event left out."""
    sqs = aws.client("sqs")
    bodies = []
    while True:
        # WaitTimeSeconds=0: the queue long-polls by default (20 s), which an empty queue would wait out.
        reply = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        messages = reply.get("Messages", [])
        if not messages:
            return [b for b in bodies if not (isinstance(b, dict) and b.get("Event") == "s3:TestEvent")]
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def test_deploy_creates_the_stack_and_prints_what_it_made(
    cli: CliRunner, aws: MotoAws, tmp_path: Path
) -> None:
    result = deploy(cli, aws, "--max-workers", "3", "--instance-types", "g4dn.xlarge,g5.xlarge")
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"pipeline {NAME} created in {REGION}: stack {STACK} CREATE_COMPLETE (")
    assert f"bucket: {BUCKET} (created by the pipeline; kept by destroy unless --delete-data)" in lines
    assert f"upload audio to: s3://{BUCKET}/incoming/ (transcripts: s3://{BUCKET}/results/)" in lines
    assert any(
        line.startswith("jobs queue: ") and line.endswith(f"/{ACCOUNT_ID}/gpu-transcribe-{NAME}-jobs")
        for line in lines
    )
    assert f"jobs table: gpu-transcribe-{NAME}-jobs" in lines
    group_line = f"workers: group gpu-transcribe-{NAME}-workers, 0 to 3 spot g4dn.xlarge, g5.xlarge"
    assert f"{group_line} from {aws.image_id}" in lines
    # What moto's CloudFormation skipped, applied through the services' APIs, and said so.
    applied = [line for line in lines if line.startswith("applied after the stack: ")]
    assert any("incoming/ notification to the jobs queue applied" in line for line in applied)
    assert any(f"time to live on {TTL_ATTRIBUTE} turned on" in line for line in applied)
    assert lines[-1].startswith("not built yet: the worker, `submit` and `jobs`")
    assert "Add JobsQueue (AWS::SQS::Queue)" in result.stderr
    assert f"{STACK} (AWS::CloudFormation::Stack): CREATE_COMPLETE" in result.stderr

    out = outputs()
    sqs = aws.client("sqs")
    queue = sqs.get_queue_attributes(QueueUrl=out.queue_url, AttributeNames=["All"])["Attributes"]
    dlq = sqs.get_queue_attributes(QueueUrl=out.dead_letter_queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]
    assert json.loads(queue["RedrivePolicy"]) == {
        "deadLetterTargetArn": dlq["QueueArn"],
        "maxReceiveCount": 10,
    }
    assert queue["VisibilityTimeout"] == "900"

    ddb = aws.client("dynamodb")
    table = ddb.describe_table(TableName=out.table)["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert [i["IndexName"] for i in table["GlobalSecondaryIndexes"]] == ["by-status"]
    # Table encryption (SSEEnabled): moto does not report it back; tests/test_pipeline_template.py checks it.
    ttl = ddb.describe_time_to_live(TableName=out.table)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", TTL_ATTRIBUTE)
    backups = ddb.describe_continuous_backups(TableName=out.table)["ContinuousBackupsDescription"]
    assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"

    s3 = aws.client("s3")
    assert set(s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"].values()) == {True}
    (rule,) = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    ownership = s3.get_bucket_ownership_controls(Bucket=BUCKET)["OwnershipControls"]["Rules"]
    assert ownership == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    lifecycle = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]}
    assert lifecycle["expire-incoming-audio"]["Expiration"] == {"Days": 30}
    assert lifecycle["expire-incoming-audio"]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 1
    old_results = lifecycle["expire-old-result-versions"]
    assert old_results["Filter"] == {"Prefix": "results/"}
    assert old_results["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30
    assert old_results["Expiration"] == {"ExpiredObjectDeleteMarker": True}
    assert any("versioning" in line for line in applied)  # moto's CloudFormation skips it
    # Versioned: a transcript written again by a worker (job_objects.upload) keeps the first one.
    assert s3.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"
    from gpu_transcribe.aws.pipeline import job_objects

    key = job_objects.result_key("job-1", "a.txt")
    for text in ("first", "second"):
        path = tmp_path / f"{text}.txt"
        path.write_text(text)
        job_objects.upload(AwsContext(REGION), BUCKET, key, path)
    versions = s3.list_object_versions(Bucket=BUCKET, Prefix=key)["Versions"]
    assert len(versions) == 2
    (older,) = [v for v in versions if not v["IsLatest"]]
    assert s3.get_object(Bucket=BUCKET, Key=key, VersionId=older["VersionId"])["Body"].read() == b"first"

    (group,) = aws.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[out.group])[
        "AutoScalingGroups"
    ]
    assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == (0, 3, 0)
    policy = group["MixedInstancesPolicy"]
    assert policy["InstancesDistribution"]["SpotAllocationStrategy"] == "price-capacity-optimized"
    assert policy["InstancesDistribution"]["OnDemandPercentageAboveBaseCapacity"] == 0
    assert [o["InstanceType"] for o in policy["LaunchTemplate"]["Overrides"]] == ["g4dn.xlarge", "g5.xlarge"]
    assert {t["Key"]: t["Value"] for t in group["Tags"]}["gpu-transcribe:pipeline"] == NAME
    template_id = policy["LaunchTemplate"]["LaunchTemplateSpecification"]["LaunchTemplateId"]
    (version,) = aws.ec2().describe_launch_template_versions(LaunchTemplateId=template_id)[
        "LaunchTemplateVersions"
    ]
    data = version["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True

    awslambda = aws.client("lambda")
    function = awslambda.get_function_configuration(FunctionName=out.scaler_function)
    assert function["Environment"]["Variables"]["GROUP_NAME"] == out.group
    # Concurrency caps: one scaler at a time; at most two notifiers, by reservation and by the event source.
    assert (
        awslambda.get_function_concurrency(FunctionName=out.scaler_function)["ReservedConcurrentExecutions"]
        == 1
    )
    notifier = awslambda.get_function_concurrency(FunctionName=out.notifier_function)
    assert notifier["ReservedConcurrentExecutions"] == 2
    (mapping,) = awslambda.list_event_source_mappings(FunctionName=out.notifier_function)[
        "EventSourceMappings"
    ]
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": 2}
    stack = describe_stack(AwsContext(REGION), STACK)
    assert stack is not None and dict(stack.tags)["gpu-transcribe:owner"] == CALLER_ARN


def test_an_account_without_room_to_reserve_lambda_concurrency_deploys_unreserved_with_a_note(
    cli: CliRunner, aws: MotoAws
) -> None:
    """A new account's Lambda quota (10, all unreserved) has no room for a reservation above Lambda's
    minimum of 100 unreserved, which would roll the stack back: the deploy reads ``GetAccountSettings``,
    deploys the notifier and the scaler unreserved, and says so; the notifier's event source is capped
    either way."""
    aws.respond(
        "GetAccountSettings",
        json.dumps(
            {
                "AccountLimit": {
                    "TotalCodeSize": 80530636800,
                    "CodeSizeUnzipped": 262144000,
                    "CodeSizeZipped": 52428800,
                    "ConcurrentExecutions": 10,
                    "UnreservedConcurrentExecutions": 10,
                },
                "AccountUsage": {"TotalCodeSize": 0, "FunctionCount": 0},
            }
        ),
    )
    result = deploy(cli, aws)
    assert "unreserved Lambda concurrency in eu-north-1 is 10: too little to reserve 3" in result.stderr
    out = outputs()
    awslambda = aws.client("lambda")
    for function in (out.scaler_function, out.notifier_function):
        assert "ReservedConcurrentExecutions" not in awslambda.get_function_concurrency(FunctionName=function)
    (mapping,) = awslambda.list_event_source_mappings(FunctionName=out.notifier_function)[
        "EventSourceMappings"
    ]
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": 2}


def test_a_file_put_into_incoming_becomes_a_job_message(cli: CliRunner, aws: MotoAws) -> None:
    deploy(cli, aws)
    out = outputs()
    s3 = aws.client("s3")
    s3.put_object(Bucket=out.bucket, Key="incoming/möte 2026/intervju 1+2.wav", Body=b"RIFF")
    s3.put_object(Bucket=out.bucket, Key="results/job-1/intervju.txt", Body=b"text")
    s3.put_object(Bucket=out.bucket, Key="elsewhere/other.wav", Body=b"RIFF")
    (body,) = drain(aws, out.queue_url)
    (record,) = body["Records"]
    assert record["eventName"].startswith("ObjectCreated:")
    assert record["s3"]["bucket"]["name"] == out.bucket
    # Keys arrive URL-encoded; the worker decodes them with unquote_plus (a "+" in a name arrives as %2B).
    assert unquote_plus(record["s3"]["object"]["key"]) == "incoming/möte 2026/intervju 1+2.wav"


def test_deploy_again_changes_nothing_and_an_update_changes_only_what_differs(
    cli: CliRunner, aws: MotoAws
) -> None:
    deploy(cli, aws)
    out = outputs()
    autoscaling = aws.client("autoscaling")
    autoscaling.set_desired_capacity(AutoScalingGroupName=out.group, DesiredCapacity=2)

    again = deploy(cli, aws)
    assert again.stdout.splitlines()[0].startswith(
        f"pipeline {NAME} is up to date (nothing changed) in {REGION}"
    )
    assert "applied after the stack" not in again.stdout  # the notification and TTL are still there
    assert len([c for c in aws.calls("ExecuteChangeSet") if c["StackName"] == STACK]) == 1
    assert len(aws.calls("DeleteChangeSet")) == 1

    bigger = deploy(cli, aws, "--max-workers", "6")
    assert bigger.stdout.splitlines()[0].startswith(
        f"pipeline {NAME} updated in {REGION}: stack {STACK} UPDATE_COMPLETE"
    )
    assert "Modify WorkerGroup" in bigger.stdout
    (group,) = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[out.group])[
        "AutoScalingGroups"
    ]
    # On AWS the group is updated in place and keeps its desired size (the template sets none); moto replaces
    # the group on any update, so only the template test can check that.
    assert group["MaxSize"] == 6
    assert outputs() == out
    assert drain(aws, out.queue_url) == []  # the notification is still the only one: no duplicate events
    aws.client("s3").put_object(Bucket=out.bucket, Key="incoming/a.wav", Body=b"RIFF")
    assert len(drain(aws, out.queue_url)) == 1


def make_spot(aws: MotoAws, instance_id: str, instance_type: str) -> None:
    """moto does not model the group's spot market or type overrides: make its instance what AWS would."""
    instance = aws.backend().get_instance(instance_id)
    instance.instance_type = instance_type
    instance.lifecycle = "spot"


def test_status_counts_jobs_dead_letters_workers_and_cost(cli: CliRunner, aws: MotoAws) -> None:
    deploy(cli, aws)
    out = outputs()
    sqs = aws.client("sqs")
    drain(aws, out.queue_url)
    for n in range(5):
        sqs.send_message(QueueUrl=out.queue_url, MessageBody=json.dumps({"n": n}))
    received = sqs.receive_message(QueueUrl=out.queue_url, MaxNumberOfMessages=2, VisibilityTimeout=600)
    assert len(received["Messages"]) == 2
    sqs.send_message(QueueUrl=out.dead_letter_queue_url, MessageBody="{}")  # names no job: left there
    # A job SQS dead-lettered by itself (its row still queued): the status reconciles it.
    from gpu_transcribe.aws.pipeline.jobs_table import JobRecord, create_job, get_job
    from gpu_transcribe.aws.pipeline.queue import event_body
    from gpu_transcribe_engine.utc import iso_utc

    stuck, ctx = "20261202T000000Z-00000020", AwsContext(REGION)
    key = f"incoming/{stuck}/a.wav"
    record = JobRecord(
        stuck,
        "queued",
        "a.wav",
        key,
        created_at=iso_utc(timespec="milliseconds"),
        updated_at=iso_utc(timespec="milliseconds"),
    )
    assert create_job(ctx, out.table, record)
    sqs.send_message(QueueUrl=out.dead_letter_queue_url, MessageBody=event_body(out.bucket, key))
    autoscaling = aws.client("autoscaling")
    autoscaling.set_desired_capacity(AutoScalingGroupName=out.group, DesiredCapacity=2)
    (group,) = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[out.group])[
        "AutoScalingGroups"
    ]
    for member in group["Instances"]:
        make_spot(aws, member["InstanceId"], "g4dn.xlarge")
    zone = group["Instances"][0]["AvailabilityZone"]
    aws.set_spot_prices({("g4dn.xlarge", z): 0.2 for z in ("eu-north-1a", "eu-north-1b", "eu-north-1c")})

    result = cli.invoke(app, ["pipeline", "status", "--pipeline", NAME, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["stack"]["status"] == "CREATE_COMPLETE"
    assert report["jobs"] == {"visible": 3, "in_flight": 2, "delayed": 0}
    assert report["dead_letter"]["visible"] == 2, "counted before the reconciliation"
    assert report["reconciled"] == {"dead_lettered": [stuck], "removed": [], "left": 1, "error": ""}
    assert get_job(ctx, out.table, stuck).status == "dead_lettered"
    assert report["group"]["desired"] == 2 and len(report["group"]["instances"]) == 2
    assert {i["instance_type"] for i in report["group"]["instances"]} == {"g4dn.xlarge"}
    assert report["cost_usd_per_hour"] == pytest.approx(0.4)
    assert sum(c["count"] for c in report["costs"]) == 2

    text = cli.invoke(app, ["pipeline", "status", "--pipeline", NAME])
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"pipeline {NAME} in {REGION}: stack CREATE_COMPLETE since ")
    assert "jobs: 3 waiting, 2 in flight" in lines
    assert "dead-lettered: 1" in lines, "the message left, hidden by the last reconciliation, still counts"
    assert "workers: 2 in service of 2 (desired 2, max 4)" in lines
    assert any(line.startswith("  2 x spot g4dn.xlarge in ") and "$0.2000/h each" in line for line in lines)
    assert zone in text.stdout
    assert "cost now: $0.4000/h (the workers' prices now; instances only)" in lines


def test_destroy_keeps_the_bucket_unless_delete_data(cli: CliRunner, aws: MotoAws) -> None:
    before = len(aws.s3_requests(BUCKET))
    deploy(cli, aws)
    # The deploy's own S3 requests (protection, notification) name the bucket's owner (moto ignores it).
    deployed = aws.s3_requests(BUCKET)[before:]
    assert deployed and {p["expected_owner"] for _, p in deployed} == {ACCOUNT_ID}, deployed
    out = outputs()
    s3 = aws.client("s3")
    s3.put_object(Bucket=out.bucket, Key="results/job-1/a.txt", Body=b"kept")
    result = cli.invoke(app, ["pipeline", "destroy", "--pipeline", NAME])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"pipeline {NAME} destroyed in {REGION}: stack {STACK} deleted",
        f"bucket {BUCKET}: kept (it holds the audio and transcripts; --delete-data deletes it; "
        f"to delete it now: aws s3 rb --force s3://{BUCKET})",
    ]
    assert describe_stack(AwsContext(REGION), STACK) is None
    assert s3.get_object(Bucket=out.bucket, Key="results/job-1/a.txt")["Body"].read() == b"kept"
    queues = aws.client("sqs").list_queues().get("QueueUrls", [])
    assert not [q for q in queues if f"gpu-transcribe-{NAME}-" in q]
    missing = cli.invoke(app, ["pipeline", "status", "--pipeline", NAME])
    assert missing.exit_code == 1
    assert (
        f"no pipeline '{NAME}' in {REGION}; create it with `gpu-transcribe pipeline deploy --pipeline {NAME}`"
        in (missing.stderr)
    )

    # Deployed again, the same bucket name: CloudFormation cannot create a bucket that exists; delete it
    # (versioned: every version).
    for version in s3.list_object_versions(Bucket=out.bucket)["Versions"]:
        s3.delete_object(Bucket=out.bucket, Key=version["Key"], VersionId=version["VersionId"])
    s3.delete_bucket(Bucket=out.bucket)
    deploy(cli, aws)
    s3.put_object(Bucket=out.bucket, Key="results/job-2/b.txt", Body=b"gone")
    before = len(aws.s3_requests(BUCKET))
    result = cli.invoke(app, ["pipeline", "destroy", "--pipeline", NAME, "--delete-data"])
    assert result.exit_code == 0, result.output
    assert f"bucket {BUCKET}: emptied (1 object(s)) and deleted" in result.stdout
    emptied = aws.s3_requests(BUCKET)[before:]
    assert emptied and {p["expected_owner"] for _, p in emptied} == {ACCOUNT_ID}, emptied
    assert BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_a_bucket_of_your_own_gets_the_notification_and_is_never_deleted(
    cli: CliRunner, aws: MotoAws
) -> None:
    s3, sqs = aws.client("s3"), aws.client("sqs")
    s3.create_bucket(Bucket="my-recordings", CreateBucketConfiguration={"LocationConstraint": REGION})
    other_url = sqs.create_queue(QueueName="someone-elses")["QueueUrl"]
    other_arn = sqs.get_queue_attributes(QueueUrl=other_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    theirs = {
        "Id": "theirs",
        "QueueArn": other_arn,
        "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "exports/"}]}},
    }
    s3.put_bucket_notification_configuration(
        Bucket="my-recordings", NotificationConfiguration={"QueueConfigurations": [theirs]}
    )

    result = deploy(cli, aws, "--s3-bucket", "my-recordings")
    assert "bucket: my-recordings (yours; never deleted)" in result.stdout
    out = outputs()
    assert (out.bucket, out.bucket_created) == ("my-recordings", False)
    ids = {
        q["Id"]
        for q in s3.get_bucket_notification_configuration(Bucket="my-recordings")["QueueConfigurations"]
    }
    assert ids == {"theirs", f"gpu-transcribe-{NAME}-incoming"}
    s3.put_object(Bucket="my-recordings", Key="incoming/x.wav", Body=b"RIFF")
    (body,) = drain(aws, out.queue_url)
    assert unquote_plus(body["Records"][0]["s3"]["object"]["key"]) == "incoming/x.wav"

    result = cli.invoke(app, ["pipeline", "destroy", "--pipeline", NAME, "--delete-data"])
    assert result.exit_code == 0, result.output
    assert "bucket my-recordings: yours, kept; the pipeline's notification on it was removed" in result.stdout
    kept = s3.get_bucket_notification_configuration(Bucket="my-recordings")["QueueConfigurations"]
    assert [q["Id"] for q in kept] == ["theirs"]
    assert s3.get_object(Bucket="my-recordings", Key="incoming/x.wav")["Body"].read() == b"RIFF"


def test_the_scaler_raises_the_group_from_zero_and_never_lowers_it(
    aws: MotoAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpu_transcribe.aws.pipeline import scaler_lambda

    settings = load_settings({"image_id": aws.image_id}, env={}, config_files=())
    deployed = deploy_pipeline(settings, DeployRequest(name=NAME, max_workers=4), sleep=lambda s: None)
    out = deployed.outputs
    # The environment the stack gave the function, as Lambda would set it.
    function = aws.client("lambda").get_function_configuration(FunctionName=out.scaler_function)
    for key, value in function["Environment"]["Variables"].items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("QUEUE_URL", out.queue_url)  # moto names its queue URLs by its own host
    sqs = aws.client("sqs")
    drain(aws, out.queue_url)

    assert scaler_lambda.handler({}, None) == {
        "visible": 0,
        "desired_before": 0,
        "desired": 0,
        "raised": False,
    }
    for n in range(25):
        sqs.send_message(QueueUrl=out.queue_url, MessageBody=str(n))
    assert scaler_lambda.handler({}, None) == {
        "visible": 25,
        "desired_before": 0,
        "desired": 3,
        "raised": True,
    }
    group = aws.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[out.group])
    assert len(group["AutoScalingGroups"][0]["Instances"]) == 3
    drain(aws, out.queue_url)
    assert scaler_lambda.handler({}, None)["desired"] == 3  # an empty queue does not lower it: workers leave
    for n in range(100):
        sqs.send_message(QueueUrl=out.queue_url, MessageBody=str(n))
    assert scaler_lambda.handler({}, None)["desired"] == 4  # never above max_workers


FAILURE = "You must use a valid fully-formed launch template. The image id 'ami-0' does not exist"


def test_a_rollback_is_an_error_naming_the_resource_and_its_reason(cli: CliRunner, aws: MotoAws) -> None:
    from moto.cloudformation.models import Event, cloudformation_backends

    deploy(cli, aws)
    ctx = AwsContext(REGION)
    stack = describe_stack(ctx, STACK)
    assert stack is not None
    seen = latest_event_ids(ctx, stack.stack_id)
    # moto never fails a resource: write what CloudFormation records when an update fails and rolls back.
    moto_stack = cloudformation_backends[ACCOUNT_ID][REGION].stacks[stack.stack_id]
    for logical_id, kind, status, reason in [
        ("WorkerGroup", "AWS::AutoScaling::AutoScalingGroup", "UPDATE_IN_PROGRESS", ""),
        (
            "WorkerGroup",
            "AWS::AutoScaling::AutoScalingGroup",
            "UPDATE_FAILED",
            FAILURE,
        ),
        ("ScalerFunction", "AWS::Lambda::Function", "UPDATE_FAILED", "Resource update cancelled"),
        (STACK, "AWS::CloudFormation::Stack", "UPDATE_ROLLBACK_COMPLETE", ""),
    ]:
        moto_stack.events.append(Event(stack.stack_id, STACK, logical_id, "", kind, status, reason, None))
    moto_stack.status = "UPDATE_ROLLBACK_COMPLETE"
    progress: list[Any] = []
    with pytest.raises(StackError) as raised:
        wait_for_stack(ctx, stack.stack_id, seen=seen, on_progress=progress.append, sleep=lambda s: None)
    error = raised.value
    assert (error.status, error.resource, error.resource_type) == (
        "UPDATE_ROLLBACK_COMPLETE",
        "WorkerGroup",
        "AWS::AutoScaling::AutoScalingGroup",
    )
    assert str(error) == (
        f"stack {STACK} ended UPDATE_ROLLBACK_COMPLETE: "
        f"WorkerGroup (AWS::AutoScaling::AutoScalingGroup) UPDATE_FAILED: {FAILURE}"
    )
    assert [e.message for e in progress][:2] == [
        "WorkerGroup (AWS::AutoScaling::AutoScalingGroup): UPDATE_IN_PROGRESS",
        f"WorkerGroup (AWS::AutoScaling::AutoScalingGroup): UPDATE_FAILED: {FAILURE}",
    ]

    # A first create that rolled back can only be deleted: deploy says so instead of failing obscurely.
    moto_stack.status = "ROLLBACK_COMPLETE"
    result = cli.invoke(app, ["pipeline", "deploy", "--pipeline", NAME, "--image", aws.image_id])
    assert result.exit_code == 1
    assert (
        "can only be deleted; delete it (gpu-transcribe pipeline destroy) and deploy again" in result.stderr
    )


def test_cleanup_lists_a_pipeline_and_leaves_it_and_its_workers(cli: CliRunner, aws: MotoAws) -> None:
    deploy(cli, aws)
    out = outputs()
    autoscaling = aws.client("autoscaling")
    autoscaling.set_desired_capacity(AutoScalingGroupName=out.group, DesiredCapacity=1)
    result = cli.invoke(app, ["cleanup", "--older-than", "0", "--all-owners"])
    assert result.exit_code == 0, result.output
    assert (
        f"pipeline {NAME}: stack {STACK} CREATE_COMPLETE, you; not removed by cleanup "
        f"(gpu-transcribe pipeline destroy --name {NAME})"
    ) in result.stdout
    (group,) = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[out.group])[
        "AutoScalingGroups"
    ]
    (worker,) = group["Instances"]
    state = aws.ec2().describe_instances(InstanceIds=[worker["InstanceId"]])["Reservations"][0]["Instances"][
        0
    ]
    assert state["State"]["Name"] == "running"
    assert aws.calls("TerminateInstances") == []
    assert describe_stack(AwsContext(REGION), STACK) is not None


def test_deploy_without_an_image_of_ours_says_how_to_make_one(cli: CliRunner, aws: MotoAws) -> None:
    result = cli.invoke(app, ["pipeline", "deploy", "--pipeline", NAME])
    assert result.exit_code == 1
    assert "gpu-transcribe build-ami" in result.stderr
    assert aws.calls("CreateChangeSet") == []


def test_a_bad_name_is_refused_before_any_call(cli: CliRunner, aws: MotoAws) -> None:
    result = cli.invoke(app, ["pipeline", "deploy", "--pipeline", "Team_A", "--image", aws.image_id])
    assert result.exit_code == 2
    assert "--pipeline: 'Team_A' is not a pipeline name" in result.stderr
    assert aws.calls("GetCallerIdentity") == []


def test_a_bucket_that_cannot_be_the_pipelines_is_refused_before_the_stack(
    cli: CliRunner, aws: MotoAws
) -> None:
    missing = cli.invoke(
        app, ["pipeline", "deploy", "--pipeline", NAME, "--image", aws.image_id, "--s3-bucket", "nope"]
    )
    assert missing.exit_code == 1
    assert "bucket nope does not exist; create it, or leave out --s3-bucket" in missing.stderr
    boto3.client("s3", region_name="eu-west-1", endpoint_url=aws.url).create_bucket(
        Bucket="far-away", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    far = cli.invoke(
        app, ["pipeline", "deploy", "--pipeline", NAME, "--image", aws.image_id, "--s3-bucket", "far-away"]
    )
    assert far.exit_code == 1
    assert "bucket far-away is in eu-west-1, the pipeline in eu-north-1" in far.stderr
    assert aws.calls("CreateChangeSet") == []


def test_deploy_and_status_as_subprocesses_through_aws_endpoint_url(aws: MotoAws, tmp_path: Path) -> None:
    """The installed command as a user runs it: a process of its own, reaching moto through AWS_ENDPOINT_URL
    (set by the aws fixture with fake credentials); progress on stderr, results on stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_TRANSCRIBE_")}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "xdg"), PYTHONPATH=str(REPO), NO_COLOR="1")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gpu_transcribe", "pipeline", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    deployed = run("deploy", "--pipeline", NAME, "--image", aws.image_id)
    assert deployed.returncode == 0, deployed.stderr
    assert deployed.stdout.startswith(f"pipeline {NAME} created in {REGION}: stack {STACK} CREATE_COMPLETE")
    assert "CREATE_COMPLETE" in deployed.stderr
    status = run("status", "--pipeline", NAME, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["outputs"]["bucket"] == BUCKET


def test_submit_wakes_the_group_at_once_and_a_failed_wake_leaves_the_job_queued(
    cli: CliRunner, aws: MotoAws, tmp_path: Path
) -> None:
    """``submit --pipeline NAME`` runs the scaler in-process with the Lambda's own settings: desired 0 -> 1
    for one job. When that call fails (an injected ``AccessDenied`` on ``SetDesiredCapacity``) the job is
    queued all the same, ``submit`` exits 0 and says on stderr that the schedule will wake the fleet."""
    deploy(cli, aws, "--max-workers", "3")
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"RIFF" + bytes(100))  # no worker runs: any non-empty file is a job

    def desired() -> int:
        groups = aws.client("autoscaling").describe_auto_scaling_groups(
            AutoScalingGroupNames=[outputs().group]
        )
        return int(groups["AutoScalingGroups"][0]["DesiredCapacity"])

    aws.fail("SetDesiredCapacity", "AccessDenied", status=403, times=1, message="no autoscaling here")
    refused = cli.invoke(app, ["submit", "--pipeline", NAME, str(audio)])
    assert refused.exit_code == 0, refused.output
    assert len(refused.stdout.split()) == 1, "the job is submitted"
    assert "could not wake the workers now" in refused.stderr and "AccessDenied" in refused.stderr
    assert desired() == 0
    woken = cli.invoke(app, ["submit", "--pipeline", NAME, str(audio)])
    assert woken.exit_code == 0, woken.output
    assert "workers: desired 0 -> 1" in woken.stderr, woken.stderr
    assert desired() == 1


def test_deploy_correct_checks_the_model_and_grants_the_workers_only_it(
    cli: CliRunner, aws: MotoAws, loopback_bedrock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pipeline deploy --correct``: a model the region does not offer (the loopback Bedrock's
    ``GetFoundationModel`` answers 404) is refused before the stack; an offered one is deployed with the
    worker role's Bedrock statements and ``defaults.correct`` in the workers' description."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.url)  # loopback_bedrock clears it; Bedrock keeps its own
    loopback_bedrock.model_status = None
    refused = cli.invoke(
        app, ["pipeline", "deploy", "--pipeline", NAME, "--image", aws.image_id, "--correct"]
    )
    assert refused.exit_code == 2 and "--correct" in refused.output, refused.output
    assert describe_stack(AwsContext(REGION), STACK) is None, "refused before the stack"

    loopback_bedrock.model_status = "ACTIVE"
    deploy(cli, aws, "--correct")
    [check, *_] = [r for r in loopback_bedrock.received if r.method == "GET"]
    model = load_settings().correct_model_id
    assert unquote_plus(check.path).endswith(f"/foundation-models/{model}")
    cloudformation = aws.client("cloudformation")
    template = cloudformation.get_template(StackName=STACK)["TemplateBody"]
    body = template if isinstance(template, str) else json.dumps(template)
    assert "bedrock:InvokeModel" in body and "foundation-model/${CorrectFoundationModelId}" in body
    assert '"correct": ${Correct}' in body or '\\"correct\\": ${Correct}' in body
    (stack,) = cloudformation.describe_stacks(StackName=STACK)["Stacks"]
    parameters = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    assert parameters["CorrectModelId"] == model and parameters["Correct"] == "true"
