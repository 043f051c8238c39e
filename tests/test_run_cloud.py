"""``gpu-transcribe run`` end to end: moto in server mode, a real OpenSSH sshd on loopback, the real engine.

The instance is emulated where EC2 ends and the machine begins (``tests/fixtures/cloud.py``): an emulator
plays cloud-init, starting a real sshd on loopback with the host key from the instance's user data and the
run's key pair authorized, on the port the run dials (the address-resolver seam). The "image" is a prefix
directory laid out as ``ami/provision.py`` makes it, naming the offline whisper-base model. Runs go
through the CLI as a subprocess where exit statuses and signals matter, and in process where
a fault must be placed exactly (a spot interruption after the first file, an S3 refusal).

Every test ends by checking that nothing of ours is left: instances terminated, key pairs and security
groups deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.fixtures import recordings_dir, word_error_rate
from gpu_transcribe import __version__
from tests.fixtures.cloud import BUCKET, REPO, CloudBed, make_bed, write_engine_prefix
from tests.fixtures.moto_aws import MotoAws
from tests.fixtures.sshd import SshdServer, find_sshd, generate_ed25519_keypair

AUDIO = recordings_dir()
SV_CLIP = AUDIO / "sv_nst_se10x016_u0016004.wav"
SV_CLIP_2 = AUDIO / "sv_nst_se10x016_u0016002.wav"

pytestmark = pytest.mark.skipif(
    find_sshd() is None, reason="OpenSSH sshd not installed (.ci/run installs it)"
)


@pytest.fixture
def bed(aws: MotoAws, tmp_path: Path) -> Iterator[CloudBed]:
    model_dir = Path(os.environ.get("GPU_TRANSCRIBE_TEST_MODEL", REPO / "models" / "whisper-base"))
    if not (model_dir / "config.json").is_file():
        pytest.skip(f"no offline model at {model_dir}: run `make offline-model`")
    bed = make_bed(aws, tmp_path, model_dir)
    yield bed
    if bed.imds is not None:
        bed.imds.stop()


def assert_nothing_left(aws: MotoAws) -> None:
    """Every instance of ours terminated; no key pair or security group of ours."""
    ec2 = aws.ec2()
    ours = [{"Name": "tag-key", "Values": ["gpu-transcribe:run-id"]}]
    states = [
        i["State"]["Name"]
        for r in ec2.describe_instances(Filters=ours)["Reservations"]
        for i in r["Instances"]
    ]
    assert states and all(s in ("shutting-down", "terminated") for s in states), states
    assert ec2.describe_key_pairs(Filters=ours)["KeyPairs"] == []
    assert ec2.describe_security_groups(Filters=ours)["SecurityGroups"] == []


def _default_sigint() -> None:
    """In the child before exec: SIGINT back to its default, so Python raises KeyboardInterrupt on it as it
    does under a terminal's Ctrl-C (a shell that starts the test run in the background ignores SIGINT, and an
    ignored signal stays ignored across exec)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Cli:
    """``gpu-transcribe`` as a subprocess, its stderr read line by line as it comes."""

    def __init__(self, bed: CloudBed, *args: object) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gpu_transcribe", *map(str, args)],
            cwd=bed.tmp,
            env=bed.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_default_sigint,
        )
        self.lines: list[str] = []
        self._new = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._new:
                self.lines.append(line)
                self._new.notify_all()

    def wait_for(self, text: str, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        with self._new:
            while not any(text in line for line in self.lines):
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(f"exited {self.proc.returncode} before {text!r}:\n{self.stderr}")
                left = deadline - time.monotonic()
                assert left > 0, f"no {text!r} within {timeout_s} s:\n{self.stderr}"
                self._new.wait(min(left, 0.5))

    def finish(self, timeout_s: float = 300.0) -> tuple[int, str, str]:
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()  # stderr is the reader thread's alone (communicate() would race it)
        self.proc.wait(timeout=timeout_s)
        self._reader.join(timeout=10)
        return self.proc.returncode, out, self.stderr

    @property
    def stderr(self) -> str:
        return "".join(self.lines)


# --- happy path ------------------------------------------------------------------------------------------


def test_run_two_recordings_end_to_end(bed: CloudBed) -> None:
    emulator = bed.emulator()
    try:
        inputs = bed.inputs(SV_CLIP, SV_CLIP_2)
        out = bed.tmp / "out"
        cli = Cli(bed, "run", *inputs, "-o", out, "--format", "txt,json,srt")
        code, stdout, stderr = cli.finish()
    finally:
        emulator.stop()
    assert code == 0, stderr
    assert emulator.served and not emulator.errors
    for n, clip in enumerate((SV_CLIP, SV_CLIP_2)):
        txt = out / f"intervju-{n}.txt"
        assert str(txt) in stdout
        reference = clip.with_suffix(".txt").read_text(encoding="utf-8")
        assert word_error_rate(reference, txt.read_text(encoding="utf-8"), "sv") <= 0.5
        data = json.loads((out / f"intervju-{n}.json").read_text(encoding="utf-8"))
        assert data["language"] == "sv" and data["segments"]
        assert (out / f"intervju-{n}.srt").stat().st_size > 0
    # S3: every output, encrypted, with metadata, under PREFIX/YYYY/MM/DD/<run-id>/.
    s3 = bed.aws.client("s3")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"])
    assert len(keys) == 6 and all(k.startswith("team-a/20") for k in keys)
    run_id = keys[0].split("/")[4]
    assert {k.rsplit("/", 1)[1] for k in keys} == {
        f"intervju-{n}.{f}" for n in (0, 1) for f in ("txt", "json", "srt")
    }
    for key in keys:  # every object, not only the first
        head = s3.head_object(Bucket=BUCKET, Key=key)
        assert head["ServerSideEncryption"] == "AES256", key
        assert head["Metadata"]["run-id"] == run_id, key
        assert head["Metadata"]["language"] == "sv" and head["Metadata"]["model"] == str(bed.model_dir)
        assert float(head["Metadata"]["duration-s"]) > 5
    # The summary: files with real-time factor, the instance with its price and cost, the phases.
    assert "real-time" in stderr and "g4dn.xlarge" in stderr and "eu-north-1b" in stderr, stderr
    assert "spot" in stderr and "total cost: $" in stderr, stderr
    for phase in ("launch", "ssh_ready", "push", "transcribe", "pull", "upload", "teardown"):
        assert f"{phase} " in stderr.split("phases:", 1)[-1], stderr
    assert bed.heartbeat.exists(), "the heartbeat was never touched"
    assert_nothing_left(bed.aws)


# --- signals ---------------------------------------------------------------------------------------------

# (phase, the stderr line that says it has begun, seconds to wait after it)
PHASE_MARKERS = {
    "waiting for SSH": ("waiting for SSH", 0.0),
    "pushing": ("pushing", 0.05),
    "transcribing": ("running the engine", 1.0),
    "pulling": ("pulling", 0.0),
}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase", list(PHASE_MARKERS))
def test_a_signal_in_any_phase_terminates_everything(bed: CloudBed, phase: str, signum: int) -> None:
    """The signal is sent when the phase's progress line appears on stderr. For "pushing" a 400 MB file
    goes up first so the push lasts seconds; for "transcribing" the signal comes a second into the engine's
    run (loading or decoding). Pulling one small transcript takes milliseconds, so that signal lands in the
    pull or just after it, while the engine goes on with the second file: both are mid-run."""
    emulator = bed.emulator() if phase != "waiting for SSH" else None
    try:
        inputs = bed.inputs(SV_CLIP, SV_CLIP_2)
        if phase == "pushing":
            big = bed.tmp / "in" / "big.wav"
            with big.open("wb") as handle:
                handle.truncate(400 * 1024 * 1024)
            inputs.insert(0, big)
        cli = Cli(bed, "run", *inputs, "--no-s3")
        marker, delay_s = PHASE_MARKERS[phase]
        cli.wait_for(marker)
        time.sleep(delay_s)
        cli.proc.send_signal(signum)
        code, _, stderr = cli.finish()
    finally:
        if emulator is not None:
            emulator.stop()
    assert code == 128 + signum, stderr
    assert "cleaning up" in stderr
    assert_nothing_left(bed.aws)


def test_a_second_ctrl_c_does_not_skip_the_termination(bed: CloudBed) -> None:
    cli = Cli(bed, "run", *bed.inputs(SV_CLIP), "--no-s3")
    cli.wait_for("waiting for SSH")
    cli.proc.send_signal(signal.SIGINT)
    cli.wait_for("cleaning up")
    cli.proc.send_signal(signal.SIGINT)
    code, _, stderr = cli.finish()
    assert code == 130, stderr
    assert_nothing_left(bed.aws)


# --- failures (in process, to place them exactly) ---------------------------------------------------------


def _request(bed: CloudBed, paths: list[Path], **kwargs: Any) -> Any:
    from gpu_transcribe.run import CloudRunRequest
    from gpu_transcribe_engine.options import TranscribeOptions

    values: dict[str, Any] = {
        "paths": tuple(str(p) for p in paths),
        "output_dir": bed.tmp / "out",
        "formats": ("txt", "json"),
        "options": TranscribeOptions(),
        "model": str(bed.model_dir),
    }
    values.update(kwargs)
    return CloudRunRequest(**values)


@pytest.fixture
def settings_env(bed: CloudBed, monkeypatch: pytest.MonkeyPatch) -> CloudBed:
    """The bed's environment in this process too (the dial address and heartbeat seams are read from it)."""
    for key, value in bed.env.items():
        if key.startswith("GPU_TRANSCRIBE_"):
            monkeypatch.setenv(key, value)
    return bed


def test_sshd_never_answering_times_out_and_tears_down(settings_env: CloudBed) -> None:
    from gpu_transcribe.errors import SSHTimeoutError
    from gpu_transcribe.run import run_cloud

    bed = settings_env
    started = time.monotonic()
    with pytest.raises(SSHTimeoutError, match=r"127\.0\.0\.1"):
        run_cloud(_request(bed, bed.inputs(SV_CLIP), upload=False), bed.settings(), ssh_deadline_s=3.0)
    assert time.monotonic() - started < 60
    assert_nothing_left(bed.aws)


def test_a_wrong_host_key_is_refused_and_tears_down(settings_env: CloudBed) -> None:
    from gpu_transcribe.errors import HostKeyError
    from gpu_transcribe.run import run_cloud

    bed = settings_env
    impostor, _ = generate_ed25519_keypair("impostor")
    emulator = bed.emulator(host_key_override=impostor)
    try:
        with pytest.raises(HostKeyError):
            run_cloud(_request(bed, bed.inputs(SV_CLIP), upload=False), bed.settings())
    finally:
        emulator.stop()
    assert emulator.served
    assert not (bed.tmp / "out").exists() or not any((bed.tmp / "out").iterdir())
    assert_nothing_left(bed.aws)


def test_an_engine_crash_shows_its_last_words_and_tears_down(settings_env: CloudBed) -> None:
    from gpu_transcribe.errors import EngineError
    from gpu_transcribe.run import run_cloud

    bed = settings_env
    write_engine_prefix(
        bed.prefix_dir,
        bed.model_dir,
        python_body='echo "Fatal Python error: Segmentation fault" >&2\nkill -SEGV $$\n',
    )
    emulator = bed.emulator()
    try:
        with pytest.raises(EngineError) as caught:
            run_cloud(_request(bed, bed.inputs(SV_CLIP), upload=False), bed.settings())
    finally:
        emulator.stop()
    assert caught.value.code == "crashed"
    assert "Segmentation fault" in caught.value.stderr_tail
    assert_nothing_left(bed.aws)


def test_s3_access_denied_keeps_the_local_files_and_tears_down(settings_env: CloudBed) -> None:
    from gpu_transcribe.run import run_cloud

    bed = settings_env
    bed.aws.fail("PutObject", "AccessDenied", status=403, message="Access Denied")
    emulator = bed.emulator()
    try:
        result = run_cloud(_request(bed, bed.inputs(SV_CLIP)), bed.settings())
    finally:
        emulator.stop()
    assert result.upload_error is not None and "Access Denied" in str(result.upload_error)
    assert "s3://transcripts-test/team-a/" in str(result.upload_error)
    assert not result.ok and not result.failed_files
    assert (bed.tmp / "out" / "intervju-0.txt").read_text(encoding="utf-8").strip()
    assert_nothing_left(bed.aws)


def test_a_spot_interruption_reruns_the_unfinished_file_on_a_new_instance(settings_env: CloudBed) -> None:
    """EC2 reclaims the instance after the first file is done: the first transcript is kept, the second
    file runs again on a new instance, in another zone (the lost zone's spot is tried last)."""
    from gpu_transcribe.run import RunCallbacks, run_cloud

    bed = settings_env
    emulator = bed.emulator()
    interrupted: list[str] = []

    def on_event(event: dict[str, Any]) -> None:
        # The second file starts once the first is done and pulled: EC2 reclaims the instance then.
        if event.get("event") == "file_started" and event.get("index") == 1 and not interrupted:
            interrupted.append(emulator.served[-1])
            bed.aws.spot_interrupt(emulator.served[-1])

    try:
        result = run_cloud(
            _request(bed, bed.inputs(SV_CLIP, SV_CLIP_2), upload=False),
            bed.settings(),
            RunCallbacks(on_engine_event=on_event),
            alive_check_s=0.2,
        )
    finally:
        emulator.stop()
    assert interrupted and len(emulator.served) == 2
    assert result.ok, result
    assert [f.attempts for f in result.files] == [1, 2]
    first, second = result.instances
    assert first.interrupted and first.instance_id == interrupted[0] and not second.interrupted
    assert second.zone != first.zone
    assert result.lost and result.lost[0].spot_interruption
    for n in (0, 1):
        assert (bed.tmp / "out" / f"intervju-{n}.txt").read_text(encoding="utf-8").strip()
    assert_nothing_left(bed.aws)


def test_a_spot_interruption_notice_is_reported_and_the_relaunch_planned_before_the_loss(
    settings_env: CloudBed,
) -> None:
    """IMDSv2's two-minute notice appears while the second file runs: it is read on the instance over SSH and
    reported, and the new instance's plan (the lost zone last) is made while the old instance still works;
    EC2 reclaims it only after that plan exists. The second file then runs again on the new instance."""
    from gpu_transcribe.common import ProgressEvent
    from gpu_transcribe.run import RunCallbacks, run_cloud

    bed = settings_env
    assert bed.imds is not None
    imds = bed.imds
    emulator = bed.emulator()
    stages: list[str] = []
    planned = threading.Event()
    reclaimed: list[str] = []

    def on_progress(event: ProgressEvent) -> None:
        stages.append(event.stage)
        if event.stage == "relaunch" and "planned a new instance" in event.message:
            planned.set()

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") == "file_started" and event.get("index") == 1 and not reclaimed:
            reclaimed.append(emulator.served[-1])
            imds.announce()
            assert planned.wait(60), stages  # planned while the instance still runs
            bed.aws.spot_interrupt(emulator.served[-1])

    try:
        result = run_cloud(
            _request(bed, bed.inputs(SV_CLIP, SV_CLIP_2), upload=False),
            bed.settings(),
            RunCallbacks(on_progress=on_progress, on_engine_event=on_event),
            alive_check_s=0.2,
            notice_check_s=0.2,
        )
    finally:
        emulator.stop()
    assert imds.reads > 0 and reclaimed
    assert "spot-notice" in stages and "lost" in stages
    assert stages.index("spot-notice") < stages.index("relaunch") < stages.index("lost"), stages
    assert result.ok, result
    assert [f.attempts for f in result.files] == [1, 2]
    first, second = result.instances
    assert first.interrupted and first.instance_id == reclaimed[0] and not second.interrupted
    assert second.zone != first.zone
    assert_nothing_left(bed.aws)


def test_a_bad_file_in_a_batch_fails_alone(settings_env: CloudBed) -> None:
    from gpu_transcribe.run import run_cloud

    bed = settings_env
    inputs = bed.inputs(SV_CLIP)
    fake = bed.tmp / "in" / "not-audio.mp3"
    fake.write_text("this is a text file, not audio\n", encoding="utf-8")
    emulator = bed.emulator()
    try:
        result = run_cloud(_request(bed, [fake, *inputs], upload=False), bed.settings())
    finally:
        emulator.stop()
    bad, good = result.files
    assert good.ok and good.outputs["txt"].read_text(encoding="utf-8").strip()
    assert not bad.ok and bad.outcome is not None and "not-audio.mp3" in bad.outcome.message
    assert not (bed.tmp / "out" / "not-audio.txt").exists()
    assert not result.ok
    assert_nothing_left(bed.aws)


def test_an_interrupt_while_pulling_terminates(settings_env: CloudBed) -> None:
    """In process the signal can be placed exactly: raised by the progress callback that announces the
    pull, so the interruption lands inside the pull step."""
    from gpu_transcribe.errors import InterruptedRunError
    from gpu_transcribe.run import RunCallbacks, run_cloud

    bed = settings_env

    def on_progress(event: Any) -> None:
        if event.stage == "pull":
            os.kill(os.getpid(), signal.SIGINT)

    emulator = bed.emulator()
    try:
        with pytest.raises(InterruptedRunError) as caught:
            run_cloud(
                _request(bed, bed.inputs(SV_CLIP), upload=False), bed.settings(), RunCallbacks(on_progress)
            )
    finally:
        emulator.stop()
    assert caught.value.exit_code == 130
    assert_nothing_left(bed.aws)


# --- planning --------------------------------------------------------------------------------------------


def test_dry_run_prints_the_plan_and_launches_nothing(bed: CloudBed) -> None:
    cli = Cli(bed, "run", *bed.inputs(SV_CLIP), "--dry-run")
    code, stdout, stderr = cli.finish()
    assert code == 0, stderr
    assert stdout.index("eu-north-1b") < stdout.index("eu-north-1c") < stdout.index("eu-north-1a")
    assert "on-demand" in stdout and "gpu-transcribe:owner=" in stdout and "estimated cost: $" in stdout
    assert bed.aws.image_id in stdout
    assert "ssh: port 22 open to 203.0.113.7/32 only" in stdout
    assert f"outputs: s3://{BUCKET}/team-a/" in stdout
    assert "warning" not in stderr  # a single address is what a run should open
    assert bed.aws.calls("RunInstances") == []
    assert bed.aws.ec2().describe_key_pairs()["KeyPairs"] == []


def test_a_wide_ssh_cidr_from_a_config_file_is_a_loud_warning_and_shown_in_the_dry_run(bed: CloudBed) -> None:
    """A ``./gpu-transcribe.toml`` (perhaps in a folder the user did not write) opening port 22 to the world
    is not refused, but every launching command says so, naming the file; the dry run shows the rule."""
    (bed.tmp / "gpu-transcribe.toml").write_text('ssh_cidr = "0.0.0.0/0"\n', encoding="utf-8")
    bed.env.pop("GPU_TRANSCRIBE_SSH_CIDR")
    cli = Cli(bed, "run", *bed.inputs(SV_CLIP), "--dry-run")
    code, stdout, stderr = cli.finish()
    assert code == 0, stderr
    assert "warning: ssh_cidr 0.0.0.0/0 (from " in stderr and "gpu-transcribe.toml" in stderr
    assert "4,294,967,296 addresses" in stderr
    assert "ssh: port 22 open to 0.0.0.0/0 only" in stdout
    shown = subprocess.run(
        [sys.executable, "-m", "gpu_transcribe", "config", "show"],
        cwd=bed.tmp,
        env=bed.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "warning: ssh_cidr 0.0.0.0/0" in shown.stderr
    assert "0.0.0.0/0" in shown.stdout and "s3_bucket" in shown.stdout


def test_no_image_for_this_version_says_to_run_build_ami(bed: CloudBed) -> None:
    from gpu_transcribe.aws.models import TAG_VERSION

    bed.aws.ec2().create_tags(Resources=[bed.aws.image_id], Tags=[{"Key": TAG_VERSION, "Value": "0.0.1"}])
    cli = Cli(bed, "run", *bed.inputs(SV_CLIP))
    code, _, stderr = cli.finish()
    assert code != 0
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "build-ami" in lines[0] and "--update-engine" in lines[0], stderr
    assert bed.aws.calls("RunInstances") == []


# --- --host ----------------------------------------------------------------------------------------------


def _run_host(
    tmp_path: Path, sshd_server: SshdServer, clip: Path, known_hosts: Path, **env_extra: str
) -> subprocess.CompletedProcess[str]:
    """``run --host`` on the loopback sshd, with no AWS reachable: any AWS call would go to a closed port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GPU_TRANSCRIBE_"))}
    env.update(
        AWS_ENDPOINT_URL="http://127.0.0.1:9",
        XDG_CONFIG_HOME=str(tmp_path / "xdg"),
        PYTHONPATH=str(REPO),
        **env_extra,
    )
    argv = [
        sys.executable,
        "-m",
        "gpu_transcribe",
        "run",
        str(clip),
        "--no-s3",
        "--known-hosts",
        str(known_hosts),
    ]
    argv += ["--host", f"{sshd_server.username}@127.0.0.1:{sshd_server.port}"]
    argv += ["--identity", str(sshd_server.client_key_path)]
    return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_host_runs_on_an_existing_machine_without_ec2(tmp_path: Path, sshd_server: SshdServer) -> None:
    model_dir = Path(os.environ.get("GPU_TRANSCRIBE_TEST_MODEL", REPO / "models" / "whisper-base"))
    if not (model_dir / "config.json").is_file():
        pytest.skip(f"no offline model at {model_dir}")
    prefix = tmp_path / "prefix"
    write_engine_prefix(prefix, model_dir)
    clip = tmp_path / "möte.wav"
    shutil.copyfile(SV_CLIP, clip)
    proc = _run_host(
        tmp_path,
        sshd_server,
        clip,
        sshd_server.known_hosts_path,
        GPU_TRANSCRIBE_REMOTE_PREFIX=str(prefix),
        GPU_TRANSCRIBE_MODEL=str(model_dir),
    )
    assert proc.returncode == 0, proc.stderr
    txt = tmp_path / "möte.txt"
    assert proc.stdout.split() == [str(txt), str(tmp_path / "möte.json")]
    assert txt.read_text(encoding="utf-8").strip()
    assert "instances" not in proc.stderr  # no EC2 instance in the summary
    # The audio does not stay on the user's machine.
    leftovers = list(Path("/tmp").glob("gpu-transcribe-*/in/0/möte.wav"))
    assert leftovers == [], leftovers


def test_host_with_an_unknown_host_key_is_refused(tmp_path: Path, sshd_server: SshdServer) -> None:
    clip = tmp_path / "a.wav"
    shutil.copyfile(SV_CLIP, clip)
    empty_known_hosts = tmp_path / "known_hosts"
    empty_known_hosts.write_text("")
    proc = _run_host(tmp_path, sshd_server, clip, empty_known_hosts)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "known_hosts" in errors[0], proc.stderr
    assert not (tmp_path / "a.txt").exists()


def test_after_sigkill_cleanup_finds_and_removes_the_run(bed: CloudBed) -> None:
    """SIGKILL runs no teardown: the instance stays (its dead-man switch would power it off once the heartbeat
    is stale, tests/test_deadman.py) and `gpu-transcribe cleanup` finds the run by its tags and removes it."""
    cli = Cli(bed, "run", *bed.inputs(SV_CLIP), "--no-s3")
    cli.wait_for("waiting for SSH")
    cli.proc.kill()
    cli.finish()
    ec2 = bed.aws.ec2()
    ours = [{"Name": "tag-key", "Values": ["gpu-transcribe:run-id"]}]
    left = [i for r in ec2.describe_instances(Filters=ours)["Reservations"] for i in r["Instances"]]
    assert [i["State"]["Name"] for i in left] == ["running"]
    run_id = {t["Key"]: t["Value"] for t in left[0]["Tags"]}["gpu-transcribe:run-id"]
    proc = subprocess.run(
        [sys.executable, "-m", "gpu_transcribe", "cleanup", "--run-id", run_id],
        cwd=bed.tmp,
        env=bed.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert left[0]["InstanceId"] in proc.stdout
    assert_nothing_left(bed.aws)


def test_update_engine_installs_this_version_on_an_older_image(
    bed: CloudBed, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The image is one ``ami/provision.py`` really made (a venv with the engine, the model cached and named
    in the manifest), tagged with an older version: ``--update-engine`` pushes this version's wheel, installs
    it with ``--no-deps`` into the image's venv, then transcribes with the image's cached model, offline."""
    from gpu_transcribe.aws.ec2.images import TAG_MODEL
    from gpu_transcribe.aws.models import TAG_VERSION
    from tests.fixtures.provision import TEST_MODEL_ID, provisioned_prefix

    prefix = provisioned_prefix(tmp_path_factory)
    bed.aws.ec2().create_tags(
        Resources=[bed.aws.image_id],
        Tags=[{"Key": TAG_VERSION, "Value": "0.0.1"}, {"Key": TAG_MODEL, "Value": TEST_MODEL_ID}],
    )
    bed.env.update(GPU_TRANSCRIBE_REMOTE_PREFIX=str(prefix), GPU_TRANSCRIBE_MODEL=TEST_MODEL_ID)
    installed = sorted((prefix / "venv").glob("lib/python*/site-packages/gpu_transcribe-*.dist-info"))
    assert installed
    before_ns = installed[0].stat().st_mtime_ns
    emulator = bed.emulator()
    try:
        cli = Cli(bed, "run", *bed.inputs(SV_CLIP), "--no-s3", "--update-engine", "-o", bed.tmp / "out")
        code, _, stderr = cli.finish()
    finally:
        emulator.stop()
    assert code == 0, stderr
    assert "installing gpu_transcribe-" in stderr and "update_engine " in stderr
    after = sorted((prefix / "venv").glob("lib/python*/site-packages/gpu_transcribe-*.dist-info"))
    assert [p.name for p in after] == [f"gpu_transcribe-{__version__}.dist-info"]
    assert after[0].stat().st_mtime_ns > before_ns  # reinstalled now
    reference = SV_CLIP.with_suffix(".txt").read_text(encoding="utf-8")
    assert (
        word_error_rate(reference, (bed.tmp / "out" / "intervju-0.txt").read_text(encoding="utf-8"), "sv")
        <= 0.5
    )
    assert_nothing_left(bed.aws)


def test_a_spot_interruption_while_booting_relaunches(settings_env: CloudBed) -> None:
    """EC2 reclaims the instance before its sshd answers: found by the alive check while waiting for SSH
    (every 10 s), reported, and the run goes on on a new instance."""
    from gpu_transcribe.run import run_cloud

    bed = settings_env
    ec2 = bed.aws.ec2()
    emulators: list[Any] = []

    def reclaim_the_first() -> None:
        while True:
            found = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
            if found:
                bed.aws.spot_interrupt(found[0]["InstanceId"])
                emulators.append(bed.emulator())  # serves the next instance only: the first is gone
                return
            time.sleep(0.05)

    thread = threading.Thread(target=reclaim_the_first, daemon=True)
    thread.start()
    try:
        result = run_cloud(_request(bed, bed.inputs(SV_CLIP), upload=False), bed.settings())
    finally:
        thread.join(timeout=30)
        for emulator in emulators:
            emulator.stop()
    assert result.ok, result
    first, second = result.instances
    assert first.interrupted and not second.interrupted and second.zone != first.zone
    assert result.files[0].attempts == 1  # it never reached the first instance
    assert_nothing_left(bed.aws)


def test_an_interrupted_host_run_stops_the_engine_and_removes_the_audio(
    tmp_path: Path, sshd_server: SshdServer
) -> None:
    """On the user's own machine there is no instance to terminate: the engine is stopped and the pushed
    audio removed when the run is interrupted while transcribing. The signal comes while the engine loads
    the model (2-3 s here, writing nothing), so only our SIGTERM can end it within a second of the client's
    exit: left alone it would live until its next write to the closed channel."""
    model_dir = Path(os.environ.get("GPU_TRANSCRIBE_TEST_MODEL", REPO / "models" / "whisper-base"))
    if not (model_dir / "config.json").is_file():
        pytest.skip(f"no offline model at {model_dir}")
    prefix = tmp_path / "prefix"
    write_engine_prefix(prefix, model_dir)
    clip = tmp_path / f"avbruten-{os.getpid()}.wav"
    shutil.copyfile(SV_CLIP, clip)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GPU_TRANSCRIBE_"))}
    env.update(
        GPU_TRANSCRIBE_REMOTE_PREFIX=str(prefix),
        GPU_TRANSCRIBE_MODEL=str(model_dir),
        XDG_CONFIG_HOME=str(tmp_path / "xdg"),
        PYTHONPATH=str(REPO),
    )
    bed = CloudBed(None, tmp_path, model_dir, 0, prefix, tmp_path / "heartbeat", env)  # type: ignore[arg-type]
    host = f"{sshd_server.username}@127.0.0.1:{sshd_server.port}"
    keys = ["--identity", sshd_server.client_key_path, "--known-hosts", sshd_server.known_hosts_path]
    cli = Cli(bed, "run", clip, "--no-s3", "--host", host, *keys)
    cli.wait_for("running the engine")
    time.sleep(0.3)
    cli.proc.send_signal(signal.SIGINT)
    code, _, stderr = cli.finish()
    assert code == 130, stderr
    assert "model_loaded" not in stderr and "loaded in" not in stderr  # it was still loading

    def engines_alive() -> list[str]:
        alive = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            with contextlib.suppress(OSError):
                text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if clip.name in text and "gpu_transcribe_engine" in text:
                    alive.append(text)
        return alive

    deadline = time.monotonic() + 1.0
    while engines_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert engines_alive() == []
    assert list(Path("/tmp").glob(f"gpu-transcribe-*/in/0/{clip.name}")) == []
    assert not clip.with_suffix(".txt").exists()


def test_two_inputs_writing_the_same_output_are_refused_before_launch(tmp_path: Path) -> None:
    from gpu_transcribe.errors import InputError
    from gpu_transcribe.run.inputs import collect_audio
    from gpu_transcribe.run.outputs import output_destinations

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copyfile(SV_CLIP, tmp_path / folder / "möte.wav")
    files = collect_audio([tmp_path / "a" / "möte.wav", tmp_path / "b" / "möte.wav"]).files
    beside = output_destinations(files, ("txt",), None)
    assert [d["txt"] for d in beside] == [tmp_path / "a" / "möte.txt", tmp_path / "b" / "möte.txt"]
    with pytest.raises(InputError, match=r"would both write .*möte\.txt; rename one"):
        output_destinations(files, ("txt",), tmp_path / "out")


def test_existing_outputs_are_checked_before_connecting_or_launching(
    tmp_path: Path, sshd_server: SshdServer
) -> None:
    clip = tmp_path / "a.wav"
    shutil.copyfile(SV_CLIP, clip)
    earlier = tmp_path / "a.txt"
    earlier.write_text("earlier\n", encoding="utf-8")
    refused = f"skipped: {earlier} exists (--overwrite replaces it; --skip-existing passes over it quietly)"
    # Connecting would fail (no host key known), and so would any AWS call (a closed port).
    empty_known_hosts = tmp_path / "known_hosts"
    empty_known_hosts.write_text("")

    host = _run_host(tmp_path, sshd_server, clip, empty_known_hosts)
    assert host.returncode == 0, host.stderr
    assert [line for line in host.stderr.splitlines() if line.startswith(("error:", "skipped:"))] == [refused]
    assert host.stdout == ""

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GPU_TRANSCRIBE_"))}
    env.update(
        AWS_ENDPOINT_URL="http://127.0.0.1:9", XDG_CONFIG_HOME=str(tmp_path / "xdg"), PYTHONPATH=str(REPO)
    )
    cloud = subprocess.run(
        [sys.executable, "-m", "gpu_transcribe", "run", str(clip), "--skip-existing"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cloud.returncode == 0, cloud.stderr
    assert "error:" not in cloud.stderr and cloud.stdout == ""
    assert earlier.read_text(encoding="utf-8") == "earlier\n"
