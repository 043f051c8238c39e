"""The notifier's code as a zip asset (issue 19), and the region's assets stack and bucket that hold it.

- The zip (``lambda_code.notifier_zip``): the repository's files as they are, the same bytes every time and in
  another process, importable alone as Lambda imports it (nothing of ``gpu_transcribe``, stdlib and boto3).
- ``assets.yaml``: cfn-lint finds nothing; the bucket has the pipelines' buckets' protections.
- Against moto (the CLI as a user runs it): the first deploy makes the assets stack, the bucket and the
  object, and the notifier runs that zip; a second deploy uploads nothing and changes nothing; a changed
  notifier goes up under a new key and updates the function; every S3 call names the account as the
  bucket's owner; ``destroy`` keeps the assets; ``cleanup`` skips them while a pipeline exists and removes
  them (bucket and stack) once none is left, found by the bucket's tags.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gpu_transcribe.aws.clients import AwsContext
from gpu_transcribe.aws.pipeline.assets import ASSETS_ROLE, ASSETS_STACK, assets_bucket_name
from gpu_transcribe.aws.pipeline.stack import describe_stack
from gpu_transcribe.cli.main import app
from gpu_transcribe.pipeline import lambda_code
from gpu_transcribe.pipeline.lambda_code import NOTIFIER_FILES, NOTIFIER_HANDLER, asset_key, notifier_zip
from gpu_transcribe.pipeline.template import ASSETS_TEMPLATE_FILE, assets_template_text
from tests.fixtures.moto_aws import ACCOUNT_ID, CALLER_ARN, REGION, MotoAws
from tests.test_pipeline_template import lint_findings

pytestmark = pytest.mark.timeout(180)

NAME = "team-a"
ASSETS_BUCKET = assets_bucket_name(ACCOUNT_ID, REGION)
REPO = Path(__file__).resolve().parent.parent


# --- the zip ------------------------------------------------------------------------------------------------


def test_the_notifier_zip_holds_the_repositorys_files_as_they_are() -> None:
    archive = zipfile.ZipFile(io.BytesIO(notifier_zip()))
    assert archive.namelist() == [
        "notifier_lambda.py",
        "gpu_transcribe_api/__init__.py",
        "gpu_transcribe_api/webhook_common.py",
    ]
    assert NOTIFIER_HANDLER == "notifier_lambda.handler"
    for info, (name, package, file) in zip(archive.infolist(), NOTIFIER_FILES, strict=True):
        assert info.filename == name
        assert archive.read(info) == resources.files(package).joinpath(file).read_bytes()
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert info.external_attr >> 16 == 0o100644
    assert archive.testzip() is None


def test_the_notifier_zip_is_the_same_bytes_in_another_process() -> None:
    body = notifier_zip()
    assert body == notifier_zip()
    key = asset_key("notifier", body)
    assert key == f"lambda/notifier-{hashlib.sha256(body).hexdigest()}.zip"
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            "from gpu_transcribe.pipeline.lambda_code import asset_key, notifier_zip;"
            "print(asset_key('notifier', notifier_zip()))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    assert other.stdout.strip() == key


def test_the_notifier_zip_imports_alone_as_lambda_imports_it(tmp_path: Path) -> None:
    """Only the zip on the path (``-I``: no PYTHONPATH, no current directory): the handler and every module
    of ours it imports come from the zip, nothing of ``gpu_transcribe``; its imports are stdlib and boto3."""
    package = tmp_path / "notifier.zip"
    package.write_bytes(notifier_zip())
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        f"import {NOTIFIER_HANDLER.rpartition('.')[0]} as m;"
        "assert callable(m.handler);"
        'print(sorted(f\'{n}={getattr(v, "__file__", "")}\' for n, v in sys.modules.items()'
        " if n.startswith(('gpu_transcribe', 'notifier_lambda'))))"
    )
    run = subprocess.run(
        [sys.executable, "-I", "-c", probe, str(package)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(
        sorted(
            [
                f"gpu_transcribe_api={package}/gpu_transcribe_api/__init__.py",
                f"gpu_transcribe_api.webhook_common={package}/gpu_transcribe_api/webhook_common.py",
                f"notifier_lambda={package}/notifier_lambda.py",
            ]
        )
    )
    archive = zipfile.ZipFile(package)
    roots = set()
    for name in archive.namelist():
        for node in ast.walk(ast.parse(archive.read(name))):
            if isinstance(node, ast.Import):
                roots |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                roots.add(node.module.split(".")[0])
    assert roots - set(sys.stdlib_module_names) == {"boto3", "gpu_transcribe_api"}


# --- the assets stack ---------------------------------------------------------------------------------------


def test_the_assets_template_lints_clean_and_protects_its_bucket() -> None:
    assert lint_findings(assets_template_text()) == []
    assert ASSETS_TEMPLATE_FILE == "assets.yaml"
    res = yaml.safe_load(assets_template_text())["Resources"]
    bucket = res["AssetsBucket"]["Properties"]
    assert bucket["BucketName"] == {"Fn::Sub": "gpu-transcribe-assets-${AWS::AccountId}-${AWS::Region}"}
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
    ]
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    assert bucket["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert {"Key": "gpu-transcribe:role", "Value": ASSETS_ROLE} in bucket["Tags"]
    (statement,) = res["AssetsBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert (statement["Effect"], statement["Principal"], statement["Action"]) == ("Deny", "*", "s3:*")
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


# --- against moto -------------------------------------------------------------------------------------------


def deploy(cli: CliRunner, aws: MotoAws, name: str = NAME) -> Any:
    result = cli.invoke(app, ["pipeline", "deploy", "--pipeline", name, "--image", aws.image_id])
    assert result.exit_code == 0, result.output
    return result


def notifier_code(aws: MotoAws, name: str = NAME) -> dict[str, Any]:
    function: dict[str, Any] = aws.client("lambda").get_function(
        FunctionName=f"gpu-transcribe-{name}-notifier"
    )
    return function


def assets_puts(aws: MotoAws) -> list[str]:
    return [p["key"] for action, p in aws.s3_requests(ASSETS_BUCKET) if action == "PutObject"]


def test_deploy_puts_the_zip_in_the_assets_bucket_once_and_the_notifier_runs_it(
    cli: CliRunner, aws: MotoAws
) -> None:
    body = notifier_zip()
    key = asset_key("notifier", body)
    first = deploy(cli, aws)
    requests = aws.s3_requests(ASSETS_BUCKET)  # the deploy's, before the test's own
    assert f"notifier code uploaded to s3://{ASSETS_BUCKET}/{key}" in first.stderr
    stack = describe_stack(AwsContext(REGION), ASSETS_STACK)
    assert stack is not None and stack.status == "CREATE_COMPLETE"
    s3 = aws.client("s3")
    tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=ASSETS_BUCKET)["TagSet"]}
    assert tags["gpu-transcribe:role"] == ASSETS_ROLE and tags["gpu-transcribe:owner"] == CALLER_ARN
    assert s3.get_bucket_versioning(Bucket=ASSETS_BUCKET)["Status"] == "Enabled"
    block = s3.get_public_access_block(Bucket=ASSETS_BUCKET)["PublicAccessBlockConfiguration"]
    assert set(block.values()) == {True}
    rules = s3.get_bucket_encryption(Bucket=ASSETS_BUCKET)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert s3.get_object(Bucket=ASSETS_BUCKET, Key=key)["Body"].read() == body
    function = notifier_code(aws)
    assert function["Configuration"]["Handler"] == NOTIFIER_HANDLER
    assert function["Configuration"]["CodeSha256"] == base64.b64encode(hashlib.sha256(body).digest()).decode()
    assert assets_puts(aws) == [key]

    before = len(aws.s3_requests(ASSETS_BUCKET))
    again = deploy(cli, aws)
    requests += aws.s3_requests(ASSETS_BUCKET)[before:]
    assert again.stdout.splitlines()[0].startswith(f"pipeline {NAME} is up to date (nothing changed)")
    assert "uploaded" not in again.stderr and assets_puts(aws) == [key]
    assert len([c for c in aws.calls("ExecuteChangeSet") if c["StackName"] == ASSETS_STACK]) == 1
    assert len(s3.list_object_versions(Bucket=ASSETS_BUCKET, Prefix="lambda/")["Versions"]) == 1
    assert notifier_code(aws)["Configuration"]["CodeSha256"] == function["Configuration"]["CodeSha256"]
    # Every S3 request to the assets bucket names the account as its owner (moto ignores the header).
    assert requests and {p["expected_owner"] for _, p in requests} == {ACCOUNT_ID}, requests


def test_a_changed_notifier_goes_up_under_a_new_key_and_updates_the_function(
    cli: CliRunner, aws: MotoAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy(cli, aws)
    before = notifier_code(aws)["Configuration"]["CodeSha256"]
    changed = io.BytesIO()
    with zipfile.ZipFile(changed, "w") as archive:  # the same files and one more line
        for info in zipfile.ZipFile(io.BytesIO(notifier_zip())).infolist():
            archive.writestr(info, zipfile.ZipFile(io.BytesIO(notifier_zip())).read(info))
        archive.writestr("CHANGED", b"1")
    monkeypatch.setattr(lambda_code, "notifier_zip", changed.getvalue)
    result = deploy(cli, aws)
    key = asset_key("notifier", changed.getvalue())
    assert f"notifier code uploaded to s3://{ASSETS_BUCKET}/{key}" in result.stderr
    assert "Modify NotifierFunction" in result.stdout
    assert notifier_code(aws)["Configuration"]["CodeSha256"] != before
    assert len(assets_puts(aws)) == 2


def test_destroy_keeps_the_assets_and_cleanup_removes_them_once_no_pipeline_is_left(
    cli: CliRunner, aws: MotoAws
) -> None:
    deploy(cli, aws)
    deploy(cli, aws, name="team-b")
    s3 = aws.client("s3")
    destroyed = cli.invoke(app, ["pipeline", "destroy", "--pipeline", NAME])
    assert destroyed.exit_code == 0, destroyed.output
    assert ASSETS_BUCKET in [b["Name"] for b in s3.list_buckets()["Buckets"]]

    kept = cli.invoke(app, ["cleanup", "--older-than", "0"])
    assert kept.exit_code == 0, kept.output
    assert "assets-bucket" in kept.stdout and "1 pipeline stack(s) in the region" in kept.stdout
    assert describe_stack(AwsContext(REGION), ASSETS_STACK) is not None

    last = cli.invoke(app, ["pipeline", "destroy", "--pipeline", "team-b"])
    assert last.exit_code == 0, last.output
    assert ASSETS_BUCKET in [b["Name"] for b in s3.list_buckets()["Buckets"]]  # the region's: kept
    young = cli.invoke(app, ["cleanup"])  # the default grace: made minutes ago, it is left
    assert young.exit_code == 0, young.output
    assert "younger than" in young.stdout and ASSETS_BUCKET in young.stdout
    dry = cli.invoke(app, ["cleanup", "--older-than", "0", "--dry-run"])
    assert dry.exit_code == 0 and "would-remove" in dry.stdout, dry.output
    assert ASSETS_BUCKET in [b["Name"] for b in s3.list_buckets()["Buckets"]]

    removed = cli.invoke(app, ["cleanup", "--older-than", "0"])
    assert removed.exit_code == 0, removed.output
    assert ASSETS_BUCKET in removed.stdout and "deleted" in removed.stdout
    assert ASSETS_BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert describe_stack(AwsContext(REGION), ASSETS_STACK) is None
    # A later deploy makes them again (another name: the pipelines' own buckets were kept).
    deploy(cli, aws, name="team-c")
    assert s3.list_objects_v2(Bucket=ASSETS_BUCKET)["KeyCount"] == 1
