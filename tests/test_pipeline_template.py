"""The pipeline's CloudFormation template, offline: cfn-lint finds nothing in ``stack.yaml`` as it is and in
the template each spec deploys, and the security properties hold in the template as CloudFormation creates it
for a spec (its parameters filled in and conditions decided, ``tests/fixtures/cfn_resolve.py``): IMDSv2,
encryption of every store, public access blocked, IAM scoped to the stack's own resources, no wildcard
actions; the names agree with ``contract.py``; the scaler's arithmetic and its inline size."""

from __future__ import annotations

import base64
import json
import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpu_transcribe.aws.ec2.userdata import DEADMAN_PATH, DEADMAN_UNIT
from gpu_transcribe.aws.pipeline.models import AssetLocation
from gpu_transcribe.aws.pipeline.scaler_lambda import desired_workers
from gpu_transcribe.pipeline import contract, template
from gpu_transcribe.pipeline.contract import (
    INCOMING_PREFIX,
    RESULTS_PREFIX,
    TAG_PIPELINE,
    TTL_ATTRIBUTE,
    WORKER_UNIT,
)
from gpu_transcribe.pipeline.fleet_boot import (
    FLEET_MAX_LIFETIME_S,
    FLEET_WORKER_GONE_S,
    WORKER_MAX_LIFETIME_H,
    fleet_deadman_script,
)
from gpu_transcribe.pipeline.lambda_code import (
    INLINE_CODE_LIMIT_BYTES,
    NOTIFIER_HANDLER,
    asset_key,
    notifier_zip,
    scaler_source,
)
from gpu_transcribe.pipeline.template import (
    UNSCOPABLE_ACTIONS,
    PipelineSpec,
    lifecycle_rules_api,
    template_json,
    template_parameters,
)
from tests.fixtures.cfn_resolve import resolve

#: cfn-lint rules we ignore, each with the reason; the template passes every other rule, informational ones
#: included; a new finding fails the test until it is fixed or listed here with a reason.
IGNORED_RULES: dict[str, str] = {
    # ImageId stays a String: as AWS::EC2::Image::Id, CloudFormation would check the image when the change
    # set is made, a failure path other than the one the deploy reports (the launch template's, naming it).
    "W2506": "ImageId is a String parameter",
}
#: The template file as it is in the package.
STACK_YAML = Path(template.__file__).with_name(template.TEMPLATE_FILE)

#: Where a deploy would have put the notifier's zip (the region's assets bucket; the object's version).
NOTIFIER_CODE = AssetLocation(
    "gpu-transcribe-assets-123456789012-eu-north-1", asset_key("notifier", notifier_zip()), "v1"
)
#: CloudFormation's limit on a template passed inline (``TemplateBody``), bytes.
TEMPLATE_BODY_LIMIT_BYTES = 51_200


def resolved_template(spec: PipelineSpec) -> dict[str, Any]:
    """The template ``spec`` deploys, as CloudFormation creates it: its parameters filled, conditions
    decided."""
    return resolve(template.build_template(spec), template_parameters(spec, NOTIFIER_CODE))


def user_data(spec: PipelineSpec) -> str:
    """The workers' boot script ``spec`` deploys (``Fn::Sub`` text: ``${...}`` left are AWS's to fill)."""
    data = resolved_template(spec)["Resources"]["WorkerLaunchTemplate"]["Properties"]["LaunchTemplateData"]
    text: str = data["UserData"]["Fn::Base64"]["Fn::Sub"]
    return text


def lint_findings(body: str) -> list[str]:
    """cfn-lint's findings in template ``body`` (JSON or YAML), informational ones included, less
    :data:`IGNORED_RULES`."""
    from cfnlint.api import ManualArgs, lint

    matches = lint(body, config=ManualArgs(regions=["eu-north-1", "us-east-1"], include_checks=["I"]))
    found = [f"{m.rule.id} {m.message} at {'/'.join(map(str, m.path))}" for m in matches]
    return [f for f in found if f.split()[0] not in IGNORED_RULES]


def spec(**changes: Any) -> PipelineSpec:
    values: dict[str, Any] = {
        "name": "team-a",
        "image_id": "ami-0123456789abcdef0",
        "instance_types": ("g4dn.xlarge", "g5.xlarge", "g6.xlarge"),
        "vpc_id": "vpc-0123456789abcdef0",
        "subnet_ids": ("subnet-0123456789abcdef0", "subnet-0123456789abcdef1"),
        "owner_arn": "arn:aws:iam::123456789012:user/alice",
        "tags": (("project", "minutes"),),
    }
    values.update(changes)
    return PipelineSpec(**values)


HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
SPECS = {
    "created bucket": spec(),
    "own bucket": spec(bucket="my-recordings"),
    "unreserved": spec(reserve_concurrency=False),
}
#: ``pipeline deploy --correct`` with a model id, and with a cross-region inference profile id.
CORRECT_SPECS = {
    "correct": spec(correct=True, correct_model_id=HAIKU),
    "correct via profile": spec(correct=True, correct_model_id=f"eu.{HAIKU}", correct_region="eu-north-1"),
}


def test_cfn_lint_finds_nothing_in_the_template_file() -> None:
    """``stack.yaml`` whole, as it is in the package: every resource, parameter, condition and output."""
    assert lint_findings(STACK_YAML.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("which", [*SPECS, *CORRECT_SPECS])
def test_cfn_lint_finds_nothing(which: str) -> None:
    assert lint_findings(template_json({**SPECS, **CORRECT_SPECS}[which])) == []


def test_template_fits_inline_and_is_deterministic() -> None:
    body = template_json(spec())
    assert len(body.encode()) < TEMPLATE_BODY_LIMIT_BYTES
    assert body == template_json(spec())
    assert len(scaler_source().encode()) <= INLINE_CODE_LIMIT_BYTES
    # Every parameter value fits CloudFormation's limit, the code and the dead-man switch included.
    parameters = template_parameters(spec(), NOTIFIER_CODE)
    assert set(parameters) == set(template.load_template()["Parameters"])
    assert max(len(value.encode()) for value in parameters.values()) <= INLINE_CODE_LIMIT_BYTES


def test_the_template_file_spells_the_contracts_names() -> None:
    """``stack.yaml`` cannot import :mod:`contract`: the names both hold are the same, where they are used."""
    res = resolved_template(spec())["Resources"]
    table = res["JobsTable"]["Properties"]
    assert table["KeySchema"] == [{"AttributeName": contract.TABLE_KEY, "KeyType": "HASH"}]
    (index,) = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == contract.STATUS_INDEX
    assert [k["AttributeName"] for k in index["KeySchema"]] == [
        contract.STATUS_ATTRIBUTE,
        contract.CREATED_ATTRIBUTE,
    ]
    text = user_data(spec())
    assert f"cat > {contract.WORKER_CONFIG_PATH} <<'JSON'" in text
    assert f"cat > /etc/systemd/system/{contract.WORKER_UNIT} <<'UNIT'" in text
    config = json.loads(text.split("<<'JSON'\n", 1)[1].split("\nJSON\n", 1)[0])
    assert (config["incoming_prefix"], config["results_prefix"]) == (INCOMING_PREFIX, RESULTS_PREFIX)
    rules = {r["Id"]: r for r in res["Bucket"]["Properties"]["LifecycleConfiguration"]["Rules"]}
    assert {r.get("Prefix") for r in rules.values()} == {INCOMING_PREFIX, RESULTS_PREFIX, None}
    assert set(resolved_template(spec())["Outputs"]) == contract.OUTPUTS
    assert res["NotifierMapping"]["Properties"]["ScalingConfig"]["MaximumConcurrency"] == (
        template.NOTIFIER_MAX_CONCURRENCY
    )
    condition = res["ScalerRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][2]["Condition"]
    assert condition == {"StringEquals": {f"autoscaling:ResourceTag/{contract.TAG_PIPELINE}": "team-a"}}


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def only(template: dict[str, Any], kind: str) -> dict[str, Any]:
    (found,) = resources(template, kind).values()
    properties: dict[str, Any] = found["Properties"]
    return properties


def test_launch_template_requires_imdsv2_and_encrypts_the_root_volume() -> None:
    data = only(resolved_template(spec()), "AWS::EC2::LaunchTemplate")["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    (root,) = data["BlockDeviceMappings"]
    assert root["DeviceName"] == "/dev/sda1" and root["Ebs"]["Encrypted"] is True
    assert data["ImageId"] == "ami-0123456789abcdef0"
    assert "InstanceType" not in data  # the group's overrides choose it
    assert data["IamInstanceProfile"] == {"Arn": {"Fn::GetAtt": ["WorkerInstanceProfile", "Arn"]}}


def test_every_store_is_encrypted_and_the_bucket_is_private() -> None:
    template = resolved_template(spec())
    bucket = only(template, "AWS::S3::Bucket")
    (rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    assert bucket["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert template["Resources"]["Bucket"]["DeletionPolicy"] == "Retain"
    queues = resources(template, "AWS::SQS::Queue")
    assert set(queues) == {
        "JobsQueue",
        "DeadLetterQueue",
        "ResultsQueue",
        "WebhooksQueue",
        "WebhooksDeadLetterQueue",
    }
    assert all(q["Properties"]["SqsManagedSseEnabled"] is True for q in queues.values())
    table = only(template, "AWS::DynamoDB::Table")
    assert table["SSESpecification"] == {"SSEEnabled": True}
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}
    (tls,) = only(template, "AWS::S3::BucketPolicy")["PolicyDocument"]["Statement"]
    assert tls["Effect"] == "Deny" and tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_bucket_is_versioned_and_old_versions_expire() -> None:
    """A transcript a worker writes again stays as a noncurrent version for 30 days; old audio versions go
    after a day; the API-shaped rules the deploy applies where CloudFormation did not are the same."""
    bucket = only(resolved_template(spec()), "AWS::S3::Bucket")
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = {r["Id"]: r for r in bucket["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-old-result-versions"]["Prefix"] == RESULTS_PREFIX
    assert rules["expire-old-result-versions"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30}
    assert rules["expire-incoming-audio"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}
    api = {r["ID"]: r for r in lifecycle_rules_api(spec())}
    assert set(api) == set(rules)
    assert api["expire-old-result-versions"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30}


def test_incoming_goes_to_the_jobs_queue_with_a_dead_letter_queue() -> None:
    template = resolved_template(spec(max_receive_count=7))
    (notification,) = only(template, "AWS::S3::Bucket")["NotificationConfiguration"]["QueueConfigurations"]
    assert notification["Queue"] == {"Fn::GetAtt": ["JobsQueue", "Arn"]}
    assert notification["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": INCOMING_PREFIX}]
    redrive = template["Resources"]["JobsQueue"]["Properties"]["RedrivePolicy"]
    assert redrive == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]},
        "maxReceiveCount": 7,
    }
    # The bucket is made after the policy that lets it send (S3 tests the destination when it is set).
    assert template["Resources"]["Bucket"]["DependsOn"] == ["JobsQueuePolicy"]


@pytest.mark.parametrize("which", SPECS)
def test_only_this_bucket_may_send_to_the_queue(which: str) -> None:
    (statement,) = only(resolved_template(SPECS[which]), "AWS::SQS::QueuePolicy")["PolicyDocument"][
        "Statement"
    ]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    source = statement["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Sub"]
    expected = (
        "my-recordings" if which == "own bucket" else "gpu-transcribe-team-a-${AWS::AccountId}-${AWS::Region}"
    )
    assert source == f"arn:${{AWS::Partition}}:s3:::{expected}"
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}


def allow_statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for logical_id, role in resources(template, "AWS::IAM::Role").items():
        for policy in role["Properties"]["Policies"]:
            for statement in policy["PolicyDocument"]["Statement"]:
                assert statement["Effect"] == "Allow"
                yield logical_id, statement


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("which", [*SPECS, *CORRECT_SPECS])
def test_iam_is_scoped_to_the_stacks_own_resources(which: str) -> None:
    template = resolved_template({**SPECS, **CORRECT_SPECS}[which])
    own = set(template["Resources"])
    seen = 0
    for logical_id, statement in allow_statements(template):
        actions = as_list(statement["Action"])
        assert all("*" not in action for action in actions), (logical_id, actions)
        for resource in as_list(statement["Resource"]):
            seen += 1
            if resource == "*":
                assert set(actions) <= UNSCOPABLE_ACTIONS, (logical_id, actions)
            elif "Fn::GetAtt" in resource:
                assert resource["Fn::GetAtt"][0] in own
            else:
                text = resource["Fn::Sub"]
                if ":bedrock:" in text:  # --correct: the one model the deploy checked, nothing else
                    assert text.endswith(HAIKU) and set(actions) < {
                        "bedrock:InvokeModel",
                        "bedrock:GetFoundationModel",
                    }, (text, actions)
                    continue
                assert "gpu-transcribe-team-a" in text or "my-recordings" in text, text
                if ":autoscaling:" in text:  # a group ARN holds a UUID: the tag condition pins it to ours
                    assert statement["Condition"] == {
                        "StringEquals": {f"autoscaling:ResourceTag/{TAG_PIPELINE}": "team-a"}
                    }
    assert seen >= 10


def test_the_worker_may_do_only_what_a_worker_does() -> None:
    template = resolved_template(spec())
    worker = [s for role, s in allow_statements(template) if role == "WorkerRole"]
    actions = sorted(a for s in worker for a in as_list(s["Action"]))
    assert actions == [
        "autoscaling:SetInstanceProtection",
        "autoscaling:TerminateInstanceInAutoScalingGroup",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "s3:GetObject",
        "s3:PutObject",
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ReceiveMessage",
        "sqs:SendMessage",  # the dead-letter queue
        "sqs:SendMessage",  # the results and webhooks queues (job events)
    ]
    by_action = {a: s for s in worker for a in as_list(s["Action"])}
    assert by_action["s3:GetObject"]["Resource"][0]["Fn::Sub"].endswith(f"/{INCOMING_PREFIX}*")
    assert by_action["s3:PutObject"]["Resource"][0]["Fn::Sub"].endswith(f"/{RESULTS_PREFIX}*")
    sends = sorted(
        r["Fn::GetAtt"][0] for st in worker if st["Action"] == ["sqs:SendMessage"] for r in st["Resource"]
    )
    assert sends == ["DeadLetterQueue", "ResultsQueue", "WebhooksQueue"]
    assert json.loads(
        json.dumps(template["Resources"]["WorkerRole"]["Properties"]["AssumeRolePolicyDocument"])
    )["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}


def test_with_correct_the_worker_may_call_the_one_model_and_defaults_to_correcting() -> None:
    def bedrock(template: dict[str, Any]) -> dict[str, list[str]]:
        worker = [s for role, s in allow_statements(template) if role == "WorkerRole"]
        return {
            a: [r["Fn::Sub"] for r in s["Resource"]]
            for s in worker
            for a in as_list(s["Action"])
            if a.startswith("bedrock:")
        }

    assert bedrock(resolved_template(spec())) == {}, "no Bedrock without --correct"
    model_arn = f"arn:${{AWS::Partition}}:bedrock:${{AWS::Region}}::foundation-model/{HAIKU}"
    assert bedrock(resolved_template(CORRECT_SPECS["correct"])) == {
        "bedrock:InvokeModel": [model_arn],
        "bedrock:GetFoundationModel": [model_arn],
    }
    profile = bedrock(resolved_template(CORRECT_SPECS["correct via profile"]))
    assert profile["bedrock:InvokeModel"] == [
        f"arn:${{AWS::Partition}}:bedrock:eu-north-1:${{AWS::AccountId}}:inference-profile/eu.{HAIKU}",
        f"arn:${{AWS::Partition}}:bedrock:*::foundation-model/{HAIKU}",
    ]
    assert profile["bedrock:GetFoundationModel"] == [
        f"arn:${{AWS::Partition}}:bedrock:eu-north-1::foundation-model/{HAIKU}"
    ]
    config = user_data(CORRECT_SPECS["correct"])
    assert '"correct": true' in config and f'"correct_model_id": "{HAIKU}"' in config
    assert '"correct": false' in user_data(spec())


def test_the_fleet_is_spot_only_over_several_types_and_starts_empty() -> None:
    group = only(resolved_template(spec(max_workers=12)), "AWS::AutoScaling::AutoScalingGroup")
    assert (group["MinSize"], group["MaxSize"]) == ("0", "12")
    assert "DesiredCapacity" not in group  # an update must not reset what the scaler set
    assert group["CapacityRebalance"] is True
    policy = group["MixedInstancesPolicy"]
    assert policy["InstancesDistribution"] == {
        "OnDemandBaseCapacity": 0,
        "OnDemandPercentageAboveBaseCapacity": 0,
        "SpotAllocationStrategy": "price-capacity-optimized",
    }
    assert [o["InstanceType"] for o in policy["LaunchTemplate"]["Overrides"]] == [
        "g4dn.xlarge",
        "g5.xlarge",
        "g6.xlarge",
    ]
    assert group["VPCZoneIdentifier"] == ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]


def test_everything_that_takes_tags_is_tagged() -> None:
    template = resolved_template(spec())
    # No Tags property in CloudFormation (cfn-lint's resource schemas):
    untaggable = {"AWS::IAM::InstanceProfile", "AWS::SQS::QueuePolicy", "AWS::S3::BucketPolicy"}
    untaggable.add("AWS::Lambda::Permission")
    for logical_id, resource in template["Resources"].items():
        properties = resource["Properties"]
        if resource["Type"] in untaggable:
            continue
        if resource["Type"] == "AWS::EC2::LaunchTemplate":
            tag_lists = [t["Tags"] for t in properties["TagSpecifications"]]
            tag_lists += [t["Tags"] for t in properties["LaunchTemplateData"]["TagSpecifications"]]
        else:
            tag_lists = [properties["Tags"]]
        for tags in tag_lists:
            keys = {t["Key"]: t["Value"] for t in tags}
            assert keys[TAG_PIPELINE] == "team-a", logical_id
            assert keys["project"] == "minutes" and keys["gpu-transcribe:owner"].endswith("user/alice")
            assert "gpu-transcribe:run-id" not in keys  # cleanup must never take a pipeline's workers


def test_user_data_starts_the_worker_under_systemd() -> None:
    text = user_data(spec())
    binary = "/opt/gpu-transcribe/venv/bin/gpu-transcribe"
    unit = f"ExecStart={binary} worker --pipeline team-a --exit-when-idle 300 --max-lifetime-h 12\n"
    assert unit in text
    assert "User=ubuntu" in text and "Restart=on-failure" in text
    assert "systemctl enable --now gpu-transcribe-worker.service" in text
    assert '"queue_url": "${JobsQueue}"' in text and '"group": "gpu-transcribe-team-a-workers"' in text


def test_the_fleets_user_data_starts_the_dead_man_switch_before_anything_else(tmp_path: Path) -> None:
    """The fleet runs the same switch as ``run``: the user data decodes it (base64, so ``Fn::Sub`` and the
    heredoc cannot change it) and starts it as its first step, with the maximum lifetime past the worker's
    and "the worker's unit is active" as the sign of life. The decoded script, run with the user data's
    settings, a fake clock, a fake ``systemctl`` and a fake power-off, keeps an instance whose worker runs,
    powers off FLEET_WORKER_GONE_S after the worker is gone, and at FLEET_MAX_LIFETIME_S whatever the
    worker does; ``shutdown -P`` is the second timer."""
    text = user_data(spec())
    lines = text.splitlines()
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)
    start = lines.index(f"base64 -d > {DEADMAN_PATH} <<'DEADMAN'")
    end = lines.index("DEADMAN", start)
    script = base64.b64decode("".join(lines[start + 1 : end])).decode()
    assert script == fleet_deadman_script()
    assert script.startswith("#!/bin/sh\n") and "ALIVE_CMD" in script
    (run_line,) = [line for line in lines if line.startswith("systemd-run ")]
    assert lines.index(run_line) < lines.index("install -d -m 0755 /etc/gpu-transcribe")
    argv = shlex.split(run_line)
    assert argv[1] == f"--unit={DEADMAN_UNIT}" and argv[-2:] == ["/bin/sh", DEADMAN_PATH]
    env = dict(a.removeprefix("--setenv=").split("=", 1) for a in argv if a.startswith("--setenv="))
    assert env["ALIVE_CMD"] == f"systemctl is-active --quiet {WORKER_UNIT}"
    assert int(env["MAX_LIFETIME_S"]) == FLEET_MAX_LIFETIME_S > WORKER_MAX_LIFETIME_H * 3600
    assert int(env["HEARTBEAT_TIMEOUT_S"]) == FLEET_WORKER_GONE_S
    assert f"shutdown -P +{FLEET_MAX_LIFETIME_S // 60 + 2}" in lines

    switch = tmp_path / "deadman.sh"
    switch.write_text(script)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    active = tmp_path / "worker-active"
    (bin_dir / "systemctl").write_text(
        f'#!/bin/sh\n[ "$*" = "is-active --quiet {WORKER_UNIT}" ] && test -e {active}\n'
    )
    (bin_dir / "poweroff").write_text(f'#!/bin/sh\necho "$DEADMAN_REASON" >> {tmp_path / "off"}\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    boot = 1_800_000_000
    clock = tmp_path / "now"

    def check(at_s: int) -> list[str]:
        clock.write_text(f"{boot + at_s}\n")
        run_env = {
            **env,
            "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HEARTBEAT_FILE": str(tmp_path / "no-heartbeat-file"),
            "POWEROFF_CMD": str(bin_dir / "poweroff"),
            "CLOCK_CMD": f"cat {clock}",
            "START_EPOCH_S": str(boot),
            "SWITCH_START_S": str(boot),
            "DEADMAN_ONESHOT": "1",
        }
        subprocess.run(["/bin/sh", str(switch)], env=run_env, check=True, capture_output=True, timeout=10)
        off = tmp_path / "off"
        return off.read_text().splitlines() if off.exists() else []

    active.touch()
    assert check(FLEET_WORKER_GONE_S + 3600) == []  # the worker runs: no heartbeat file needed
    active.unlink()
    assert check(FLEET_WORKER_GONE_S - 1) == []
    assert check(FLEET_WORKER_GONE_S)[0].startswith("stale-heartbeat")  # the worker is gone
    active.touch()
    assert check(FLEET_MAX_LIFETIME_S)[-1].startswith("max-lifetime")  # running, but for too long


def test_the_notifier_and_the_scaler_have_concurrency_caps() -> None:
    """A burst of finished jobs reaches a webhook receiver through at most two notifier invocations (the
    event source's MaximumConcurrency and the function's reservation); the scaler runs one at a time. An
    account without room to reserve (``reserve_concurrency=False``) keeps the event source's cap."""
    for reserve in (True, False):
        template = resolved_template(spec(reserve_concurrency=reserve))
        functions = resources(template, "AWS::Lambda::Function")
        reserved = {k: f["Properties"].get("ReservedConcurrentExecutions") for k, f in functions.items()}
        expected = {"NotifierFunction": 2, "ScalerFunction": 1} if reserve else {}
        assert {k: v for k, v in reserved.items() if v is not None} == expected
        mapping = only(template, "AWS::Lambda::EventSourceMapping")
        assert mapping["ScalingConfig"] == {"MaximumConcurrency": 2}
        assert mapping["BatchSize"] == 5


def test_scaler_arithmetic() -> None:
    assert desired_workers(0, 10, 4) == 0
    assert desired_workers(1, 10, 4) == 1
    assert desired_workers(10, 10, 4) == 1
    assert desired_workers(11, 10, 4) == 2
    assert desired_workers(1000, 10, 4) == 4


@pytest.mark.parametrize(
    "changes",
    [
        {"name": "Team_A"},
        {"name": "-a"},
        {"name": "a" * 21},
        {"instance_types": ()},
        {"max_attempts": 10, "max_receive_count": 10},
        {"visibility_timeout_s": 5},
    ],
)
def test_a_bad_spec_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        spec(**changes)


def test_the_notifier_consumes_its_queue_reads_its_secret_and_nothing_else() -> None:
    from gpu_transcribe.pipeline.template import NOTIFIER_TIMEOUT_S

    template = resolved_template(
        spec(webhook_url="https://hooks.example.com/t", allow_private_webhooks=False)
    )
    res = template["Resources"]
    notifier = [s for role, s in allow_statements(template) if role == "NotifierRole"]
    actions = sorted(a for s in notifier for a in as_list(s["Action"]))
    assert actions == [
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "secretsmanager:GetSecretValue",
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ReceiveMessage",
    ]
    by_action = {a: s for s in notifier for a in as_list(s["Action"])}
    assert by_action["sqs:ReceiveMessage"]["Resource"] == [{"Fn::GetAtt": ["WebhooksQueue", "Arn"]}]
    secret_arn = by_action["secretsmanager:GetSecretValue"]["Resource"][0]["Fn::Sub"]
    assert secret_arn.endswith(":secret:gpu-transcribe-team-a-webhook-??????")
    mapping = res["NotifierMapping"]["Properties"]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["WebhooksQueue", "Arn"]}
    webhooks = res["WebhooksQueue"]["Properties"]
    assert webhooks["VisibilityTimeout"] >= NOTIFIER_TIMEOUT_S  # Lambda refuses a mapping otherwise
    assert webhooks["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["WebhooksDeadLetterQueue", "Arn"]
    }
    assert res["NotifierFunction"]["Properties"]["Timeout"] == NOTIFIER_TIMEOUT_S
    env = res["NotifierFunction"]["Properties"]["Environment"]["Variables"]
    assert env["WEBHOOK_URL"] == "https://hooks.example.com/t" and env["ALLOW_PRIVATE"] == "0"
    assert res["NotifierFunction"]["Properties"]["Handler"] == NOTIFIER_HANDLER
    assert res["NotifierFunction"]["Properties"]["Code"] == {
        "S3Bucket": NOTIFIER_CODE.bucket,
        "S3Key": NOTIFIER_CODE.key,
        "S3ObjectVersion": NOTIFIER_CODE.version_id,
    }
    assert res["WebhookSecret"]["Properties"]["Name"] == "gpu-transcribe-team-a-webhook"


def test_the_worker_is_told_where_job_events_go() -> None:
    config = user_data(spec(webhook_url="https://hooks.example.com/t"))
    assert '"results_queue_url": "${ResultsQueue}"' in config
    assert '"webhooks_queue_url": "${WebhooksQueue}"' in config
    assert '"pipeline_webhook": true' in config
    assert '"pipeline_webhook": false' in user_data(spec())
