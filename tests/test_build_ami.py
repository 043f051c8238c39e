"""``gpu-transcribe build-ami`` end to end: the CLI as a subprocess against moto, its builder played by a
loopback OpenSSH sshd that serves the host key injected in the builder's user data (read back from moto) and
accepts the launched key pair's public key, and the real ``ami/provision.py`` provisioning a prefix on this
machine.

How the build tests stay fast: the provisioning runs for real, but into a prefix that the first complete
provisioning of the session made (``tests/test_provision.py``'s, or one made on first use here), so the
build's run only re-checks it (venv reused, packages already installed, model already copied, the warm-up
transcription of a 7 s clip: about 20 s on 2 cores). Tests that must not complete (a failed provision, a
signal during provisioning) use a fresh prefix. moto answers at once; only the image wait polls.

Covered: the image and its snapshots carry our tags; the builder is terminated (key pair and security group
deleted) on success, on a failed provision, and on SIGINT/SIGTERM while waiting for SSH, while provisioning
(the remote provisioning is stopped too) and while the image is being created (the unfinished image is
deregistered and its snapshot deleted); ``cleanup`` finds a builder left behind; the base image comes from
the SSM public parameter; ``--dry-run`` launches nothing.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gpu_transcribe import __version__
from gpu_transcribe.account.cleanup import cleanup
from gpu_transcribe.aws.clients import AwsContext
from gpu_transcribe.aws.ec2.image_create import DLAMI_BASE_PARAMETER
from gpu_transcribe.aws.ec2.images import TAG_BASE_AMI, TAG_MODEL, TAG_REVISION, list_images, select_run_image
from gpu_transcribe.aws.ec2.launch import launch
from gpu_transcribe.aws.ec2.resources import find_resources
from gpu_transcribe.aws.models import TAG_CREATED, TAG_OWNER, TAG_ROLE, TAG_RUN_ID, TAG_VERSION
from gpu_transcribe.build_ami import BuildRequest, builder_spec, check_manifest, image_builder
from gpu_transcribe.cli.main import app
from gpu_transcribe.common import parse_iso_utc, utc_now
from gpu_transcribe.errors import ProvisionError
from gpu_transcribe.settings import load_settings
from tests.fixtures import sshd as sshd_module
from tests.fixtures.images import existing_snapshots, seed_ssm_parameter
from tests.fixtures.moto_aws import CALLER_ARN, REGION, TEST_CIDR, MotoAws
from tests.fixtures.provision import TEST_MODEL_ID, built_wheel, provision_test_args, provisioned_prefix
from tests.fixtures.sshd import SshdServer, find_sshd, free_port

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parent.parent


def builder_instances(aws: MotoAws, states: tuple[str, ...] = ("pending", "running")) -> list[dict[str, Any]]:
    reply = aws.ec2().describe_instances(
        Filters=[
            {"Name": f"tag:{TAG_ROLE}", "Values": ["builder"]},
            {"Name": "instance-state-name", "Values": list(states)},
        ]
    )
    return [i for r in reply["Reservations"] for i in r["Instances"]]


def tags_of(raw: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in raw.get("Tags", [])}


def our_images(aws: MotoAws) -> list[dict[str, Any]]:
    return [i for i in aws.ec2().describe_images(Owners=["self"])["Images"] if i["ImageId"] != aws.image_id]


class Build:
    """``gpu-transcribe build-ami`` as a subprocess, and the loopback sshd that plays its builder.

    The sshd starts only once the builder exists in moto: its host key is the one in the builder's user data,
    its authorized key the one in the builder's key pair, on the port ``GPU_TRANSCRIBE_DIAL_ADDRESS`` names.
    """

    def __init__(self, aws: MotoAws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        if find_sshd() is None:
            pytest.skip("OpenSSH sshd not found: install openssh-server (.ci/run installs it)")
        self.aws = aws
        self.tmp_path = tmp_path
        self.monkeypatch = monkeypatch
        self.port = free_port()
        self.sshd: SshdServer | None = None
        self.process: subprocess.Popen[str] | None = None
        self.stderr_lines: list[str] = []
        self.stdout = ""
        self._readers: list[threading.Thread] = []
        self._stdout_parts: list[str] = []
        self._new_line = threading.Condition()

    def start(
        self,
        prefix: Path,
        *args: str,
        provision_args: list[str] | None = None,
        python_path: Path = REPO,
    ) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_TRANSCRIBE_")}
        env.update(
            PYTHONPATH=str(python_path),
            GPU_TRANSCRIBE_SSH_CIDR=TEST_CIDR,
            GPU_TRANSCRIBE_DIAL_ADDRESS=f"127.0.0.1:{self.port}",
            GPU_TRANSCRIBE_REMOTE_PREFIX=str(prefix),
            COLUMNS="200",
            NO_COLOR="1",
        )
        extra = provision_args if provision_args is not None else provision_test_args()
        argv = [sys.executable, "-m", "gpu_transcribe", "build-ami", "--model", TEST_MODEL_ID]
        argv += ["--login-user", sshd_module.getpass.getuser(), *args]
        argv += [f"--provision-arg={arg}" for arg in extra]
        self.process = subprocess.Popen(
            argv,
            cwd=self.tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._readers = [
            threading.Thread(target=self._read_stderr, daemon=True),
            threading.Thread(target=self._read_stdout, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        self._stdout_parts.append(self.process.stdout.read())

    def _read_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            with self._new_line:
                self.stderr_lines.append(line.rstrip("\n"))
                self._new_line.notify_all()
        with self._new_line:
            self._new_line.notify_all()

    def wait_for_line(self, pattern: str, timeout_s: float = 120.0) -> str:
        """The first stderr line matching ``pattern``; fails if the process ends or time runs out first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        with self._new_line:
            while True:
                for line in self.stderr_lines:
                    if regex.search(line):
                        return line
                assert self.process is not None
                if self.process.poll() is not None and not self._readers[0].is_alive():
                    raise AssertionError(f"build ended before {pattern!r}:\n" + "\n".join(self.stderr_lines))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no line {pattern!r} in {timeout_s} s:\n" + "\n".join(self.stderr_lines)
                    )
                self._new_line.wait(min(left, 0.5))

    def serve_builder(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """Wait for the builder in moto, then start the sshd playing it; return the builder as described."""
        deadline = time.monotonic() + timeout_s
        while not (found := builder_instances(self.aws)):
            assert self.process is not None
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("no builder was launched:\n" + "\n".join(self.stderr_lines))
            time.sleep(0.2)
        builder = found[0]
        ec2 = self.aws.ec2()
        raw = ec2.describe_instance_attribute(InstanceId=builder["InstanceId"], Attribute="userData")
        user_data = base64.b64decode(raw["UserData"]["Value"]).decode()
        assert user_data.startswith("#cloud-config\n")
        host_key = json.loads(user_data.split("\n", 1)[1])["ssh_keys"]["ed25519_private"]
        [pair] = ec2.describe_key_pairs(KeyNames=[builder["KeyName"]], IncludePublicKey=True)["KeyPairs"]
        self.monkeypatch.setattr(sshd_module, "free_port", lambda: self.port)
        self.sshd = SshdServer(self.tmp_path / "sshd", host_private_key=host_key)
        self.sshd.authorize(pair["PublicKey"])
        self.sshd.start()
        return builder

    def finish(self, timeout_s: float = 300.0) -> int:
        """Wait for the build to end; its stdout is then in :attr:`stdout`. Returns the exit status."""
        assert self.process is not None
        try:
            returncode = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        for reader in self._readers:
            reader.join(timeout=10)
        self.stdout = "".join(self._stdout_parts)
        return returncode

    @property
    def stderr(self) -> str:
        return "\n".join(self.stderr_lines)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        if self.sshd is not None:
            self.sshd.stop()


@pytest.fixture
def build(aws: MotoAws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Build]:
    harness = Build(aws, tmp_path, monkeypatch)
    yield harness
    harness.close()


def assert_nothing_of_the_builder_left(aws: MotoAws, builder_id: str) -> None:
    state = aws.ec2().describe_instances(InstanceIds=[builder_id])["Reservations"][0]["Instances"][0]["State"]
    assert state["Name"] in ("shutting-down", "terminated")
    assert find_resources(AwsContext(REGION)) == ()  # no instance, key pair or security group of ours


def test_build_ami_makes_a_tagged_image_and_terminates_the_builder(
    aws: MotoAws, build: Build, tmp_path_factory: pytest.TempPathFactory
) -> None:
    prefix = provisioned_prefix(tmp_path_factory)
    wheel = built_wheel(tmp_path_factory)
    seed_ssm_parameter(DLAMI_BASE_PARAMETER, aws.image_id)
    before = existing_snapshots(aws)
    build.start(prefix, "--wheel", str(wheel))
    builder = build.serve_builder()
    assert build.finish() == 0, build.stderr
    print(build.stderr, build.stdout, sep="\n")  # shown with pytest -s: what a user sees

    # The provisioning ran on the "builder" and passed.
    assert "check warmup_transcript: ok" in build.stderr and "provisioning ok" in build.stderr
    # The image's lock went with the wheel; the test's --lock (the CPU lock) replaced it on this CPU machine.
    assert f"pushed {wheel.name}, provision.py, cuda.lock to /tmp/gpu-transcribe-build-" in build.stderr
    assert f"base image {aws.image_id} (from SSM parameter {DLAMI_BASE_PARAMETER})" in build.stderr
    run_id = tags_of(builder)[TAG_RUN_ID]
    assert not Path(f"/tmp/gpu-transcribe-build-{run_id}").exists()  # the staging directory was removed

    # The image, with its tags.
    [image] = our_images(aws)
    tags = tags_of(image)
    assert image["State"] == "available"
    assert tags[TAG_VERSION] == __version__
    assert tags[TAG_MODEL] == TEST_MODEL_ID and tags[TAG_REVISION] == ""
    assert tags[TAG_BASE_AMI] == aws.image_id
    assert tags[TAG_RUN_ID] == run_id and tags[TAG_OWNER] == CALLER_ARN
    created = parse_iso_utc(tags[TAG_CREATED])
    assert created is not None and abs(utc_now() - created) < timedelta(minutes=5)
    assert tags["Name"] == image["Name"] and image["Name"].startswith(
        f"gpu-transcribe-{__version__}-openai_whisper-base-"
    )
    assert TAG_ROLE not in tags
    # ... and its snapshots, tagged alike.
    snapshots = [m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"] if "Ebs" in m]
    assert snapshots and not set(snapshots) & before
    for snapshot in aws.ec2().describe_snapshots(SnapshotIds=snapshots)["Snapshots"]:
        assert tags_of(snapshot) == tags

    # Made from the stopped builder, which was then terminated with everything of its run.
    assert [c["InstanceId.1"] for c in aws.calls("StopInstances")] == [builder["InstanceId"]]
    [create] = aws.calls("CreateImage")
    assert create["InstanceId"] == builder["InstanceId"] and create["NoReboot"] == "true"
    assert_nothing_of_the_builder_left(aws, builder["InstanceId"])
    assert builder["InstanceType"] == "g4dn.xlarge" and "InstanceLifecycle" not in builder  # on-demand
    assert tags_of(builder)[TAG_ROLE] == "builder"

    # What the user reads on stdout.
    out = build.stdout
    assert f"image: {image['ImageId']} ({image['Name']}) in {REGION}" in out
    assert re.search(rf"size: \d+ GiB in 1 snapshot\(s\): {snapshots[0]}", out)
    assert f"contents: gpu-transcribe {__version__}, {TEST_MODEL_ID}, torch 2.13.0+cpu" in out
    from gpu_transcribe_engine.device import default_dtype

    assert f"warm-up: cpu {default_dtype('cpu')}" in out
    phases = re.search(r"phases: (.*) \(total [\d.]+ s\)", out)
    assert phases is not None
    names = [p.split()[0] for p in phases.group(1).split(", ")]
    assert names == ["wheel", "launch", "ssh", "push", "provision", "stop", "image", "teardown"]
    assert re.search(r"builder: i-\w+ on-demand g4dn\.xlarge in eu-north-1\w at \$\d+\.\d{4}/h", out)
    assert re.search(r"cost: \$\d+\.\d{4} for \d+ s of the builder", out)

    # A run now picks this image.
    images = list_images(AwsContext(REGION))
    chosen = select_run_image(images, version=__version__, model=TEST_MODEL_ID, revision=None, region=REGION)
    assert chosen.image_id == image["ImageId"]


def test_build_ami_works_from_an_installed_wheel_outside_any_checkout(
    aws: MotoAws, build: Build, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A pip-installed copy has no ami/ or requirements/: build-ami pushes the provisioning script and the
    lock file the wheel carries, and the build succeeds (the wheel unpacked is what pip installs for it)."""
    import zipfile

    prefix = provisioned_prefix(tmp_path_factory)
    wheel = built_wheel(tmp_path_factory)
    installed = tmp_path / "site-packages"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(installed)
    seed_ssm_parameter(DLAMI_BASE_PARAMETER, aws.image_id)
    build.start(prefix, "--wheel", str(wheel), python_path=installed)
    build.serve_builder()
    assert build.finish() == 0, build.stderr
    assert f"pushed {wheel.name}, provision.py, cuda.lock to /tmp/gpu-transcribe-build-" in build.stderr
    assert "provisioning ok" in build.stderr
    assert len(our_images(aws)) == 1


def test_a_failed_provision_exits_1_leaves_no_image_and_terminates_the_builder(
    aws: MotoAws, build: Build, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    wheel = built_wheel(tmp_path_factory)
    args = [*provision_test_args(), "--python", "/nonexistent/python3.11"]
    build.start(
        tmp_path / "fresh-prefix", "--wheel", str(wheel), "--base-ami", aws.image_id, provision_args=args
    )
    builder = build.serve_builder()
    assert build.finish() == 1
    error = [line for line in build.stderr_lines if line.startswith("error:")]
    assert error == [
        "error: provisioning the builder failed (venv: FAILED: /nonexistent/python3.11: cannot run it "
        "(No such file or directory)); no image was made"
    ]
    assert "--- last lines of the provisioning ---" in build.stderr
    assert "provisioning FAILED: venv" in build.stderr
    assert our_images(aws) == [] and aws.calls("CreateImage") == []
    assert_nothing_of_the_builder_left(aws, builder["InstanceId"])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_waiting_for_ssh_terminates_the_builder(
    aws: MotoAws, build: Build, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, signum: int
) -> None:
    build.start(
        tmp_path / "prefix", "--wheel", str(built_wheel(tmp_path_factory)), "--base-ami", aws.image_id
    )
    build.wait_for_line(r"waiting for SSH on 127\.0\.0\.1")  # no sshd: the builder never answers
    [builder] = builder_instances(aws)
    assert build.process is not None
    build.process.send_signal(signum)
    assert build.finish() == 128 + signum
    name = signal.Signals(signum).name
    assert f"{name}: stopping the build and terminating the builder..." in build.stderr
    assert f"error: stopped by {name}; every cloud resource of this run was removed" in build.stderr
    assert_nothing_of_the_builder_left(aws, builder["InstanceId"])


def test_sigint_while_provisioning_stops_it_and_terminates_the_builder(
    aws: MotoAws, build: Build, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    build.start(
        tmp_path / "fresh-prefix", "--wheel", str(built_wheel(tmp_path_factory)), "--base-ami", aws.image_id
    )
    builder = build.serve_builder()
    build.wait_for_line(r"^==> virtual environment$")  # a fresh venv: seconds of work ahead
    run_id = tags_of(builder)[TAG_RUN_ID]
    remote_dir = Path(f"/tmp/gpu-transcribe-build-{run_id}")
    pgid = int((remote_dir / "provision.pgid").read_text())
    assert build.process is not None
    build.process.send_signal(signal.SIGINT)
    assert build.finish() == 130
    assert "stopping the provisioning on the builder" in build.stderr
    deadline = time.monotonic() + 10
    while True:  # the provisioning's process group (python, venv, pip) is gone
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, f"provisioning process group {pgid} still runs"
        time.sleep(0.1)
    assert not remote_dir.exists()
    assert our_images(aws) == []
    assert_nothing_of_the_builder_left(aws, builder["InstanceId"])


def test_sigterm_while_the_image_is_created_deregisters_it_and_deletes_its_snapshot(
    aws: MotoAws, build: Build, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.ec2.models.amis import AmiBackend

    original = AmiBackend.create_image

    def pending_image(self: Any, *args: Any, **kwargs: Any) -> Any:
        ami = original(self, *args, **kwargs)
        ami.state = "pending"  # as on AWS for minutes; moto makes images available at once
        return ami

    monkeypatch.setattr(AmiBackend, "create_image", pending_image)
    prefix = provisioned_prefix(tmp_path_factory)
    build.start(prefix, "--wheel", str(built_wheel(tmp_path_factory)), "--base-ami", aws.image_id)
    builder = build.serve_builder()
    line = build.wait_for_line(r"ami-\w+: pending after")
    image_id = line.split(":")[0]
    [snapshot] = [m["Ebs"]["SnapshotId"] for m in our_images(aws)[0]["BlockDeviceMappings"] if "Ebs" in m]
    assert build.process is not None
    build.process.send_signal(signal.SIGTERM)
    assert build.finish() == 143
    assert f"the build did not finish: deregistering image {image_id}" in build.stderr
    assert our_images(aws) == []
    assert snapshot not in existing_snapshots(aws)
    assert_nothing_of_the_builder_left(aws, builder["InstanceId"])


# --- in-process: the imaging step, cleanup, the plan, the manifest check -----------------------------------


def launch_builder(aws: MotoAws, *, spot: bool) -> Any:
    settings = load_settings({}, env={}, config_files=())
    request = BuildRequest(model=TEST_MODEL_ID, spot=spot)
    spec = builder_spec(settings, request, base_image_id=aws.image_id, ssh_cidr=TEST_CIDR)
    return launch(AwsContext(REGION), spec, sleep=lambda s: None)


def test_an_on_demand_builder_is_stopped_before_the_image(aws: MotoAws) -> None:
    launched = launch_builder(aws, spot=False)
    assert launched.market == "on-demand"
    phases: list[str] = []
    image = image_builder(
        AwsContext(REGION),
        launched,
        model=TEST_MODEL_ID,
        revision="main",
        base_image_id=aws.image_id,
        extra_tags=(("team", "speech"),),
        phase_done=phases.append,
        sleep=lambda s: None,
    )
    assert phases == ["stop", "image"]
    assert image.state == "available" and image.revision == "main" and image.model == TEST_MODEL_ID
    [create] = aws.calls("CreateImage")
    assert create["NoReboot"] == "true"
    state = aws.ec2().describe_instances(InstanceIds=[launched.instance_id])["Reservations"][0]["Instances"][
        0
    ]
    assert state["State"]["Name"] == "stopped"
    [raw] = aws.ec2().describe_images(ImageIds=[image.image_id])["Images"]
    assert tags_of(raw)["team"] == "speech"


def test_a_spot_builder_is_imaged_with_a_reboot_not_stopped(aws: MotoAws) -> None:
    launched = launch_builder(aws, spot=True)
    assert launched.market == "spot"
    stopped: list[bool] = []
    image = image_builder(
        AwsContext(REGION),
        launched,
        model=TEST_MODEL_ID,
        revision=None,
        base_image_id=aws.image_id,
        on_stopped=lambda: stopped.append(True),
        sleep=lambda s: None,
    )
    assert image.state == "available"
    assert aws.calls("StopInstances") == [] and stopped == []
    [create] = aws.calls("CreateImage")
    assert create["NoReboot"] == "false"


def test_cleanup_finds_a_builder_left_behind(aws: MotoAws) -> None:
    launched = launch_builder(aws, spot=False)
    settings = load_settings({}, env={}, config_files=())
    report = cleanup(settings, older_than_s=0, sleep=lambda s: None)
    removed = {(o.resource.kind, o.resource.resource_id): o for o in report.outcomes}
    instance = removed[("instance", launched.instance_id)]
    assert instance.resource.role == "builder" and instance.action == "terminated"
    assert ("key-pair", launched.key_name) in removed and (
        "security-group",
        launched.security_group_id,
    ) in removed
    assert find_resources(AwsContext(REGION)) == ()


def test_dry_run_shows_the_plan_and_launches_nothing(
    aws: MotoAws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("GPU_TRANSCRIBE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GPU_TRANSCRIBE_SSH_CIDR", TEST_CIDR)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    seed_ssm_parameter(DLAMI_BASE_PARAMETER, aws.image_id)
    result = CliRunner().invoke(
        app, ["build-ami", "--dry-run", "--model", "KBLab/kb-whisper-small", "--spot"]
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert (
        f"base image: {aws.image_id} gpu-transcribe-test-image (from SSM parameter {DLAMI_BASE_PARAMETER})"
        in out
    )
    assert "builder: g4dn.xlarge, spot-then-on-demand, run " in out
    assert "root volume: 100 GiB gp3, encrypted" in out
    assert "tries: spot g4dn.xlarge in eu-north-1b (spot $0.1881/h); spot g4dn.xlarge in eu-north-1c" in out
    assert f"image name: gpu-transcribe-{__version__}-KBLab_kb-whisper-small-" in out
    assert "--model KBLab/kb-whisper-small --device cuda --require-cuda" in out
    assert re.search(r"--lock /tmp/gpu-transcribe-build-[\w-]+/cuda\.lock --model", out)
    assert f"{TAG_ROLE}=builder" in out
    assert aws.calls("RunInstances") == [] and aws.calls("ImportKeyPair") == []


def test_the_manifest_must_name_this_version_and_model() -> None:
    request = BuildRequest(model=TEST_MODEL_ID)
    good = {
        "ok": True,
        "checks": {"engine_imports": "ok"},
        "gpu_transcribe": __version__,
        "model": TEST_MODEL_ID,
    }
    assert check_manifest(dict(good), request, "") == good
    with pytest.raises(ProvisionError, match=r"gpu-transcribe 0\.0\.1 with"):
        check_manifest({**good, "gpu_transcribe": "0.0.1"}, request, "")
    with pytest.raises(ProvisionError, match="engine_imports: FAILED: x") as caught:
        check_manifest({**good, "ok": False, "checks": {"engine_imports": "FAILED: x"}}, request, "tail")
    assert (
        caught.value.failed_checks == [("engine_imports", "FAILED: x")] and caught.value.output_tail == "tail"
    )
    with pytest.raises(ProvisionError, match="no readable manifest"):
        check_manifest(None, request, "")
