"""``gpu-transcribe server up|status|tunnel|logs|down`` for real: moto in server mode, a real OpenSSH sshd on
loopback playing the instance (``tests/fixtures/cloud.py``), and the real ``gpu-transcribe serve`` with the
offline whisper-base model started on it.

The loopback "instance" has no systemd, so ``server up`` takes its documented fallback there: ``setsid
nohup`` with a pid file in the server's directory. Every test kills what it started (the emulated instance's
sshd goes with the instance, a setsid'd server would not) and ends with nothing of ours left in moto.

The parts that need no server (the tunnel over the session-scoped sshd to a plain HTTP server, the state
file, the cleanup rule) run everywhere; the end-to-end tests need ``gpu_transcribe_api`` (``serve``).
"""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import json
import os
import signal
import stat
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gpu_transcribe.account.cleanup import SERVER_START_GRACE_MINUTES, select_resources
from gpu_transcribe.aws.ec2.models import TaggedResource
from gpu_transcribe.aws.models import TAG_CREATED, TAG_MAX_LIFETIME, TAG_ROLE, TAG_RUN_ID, TAG_SERVER_NAME
from gpu_transcribe.common import utc_now
from tests.fixtures.cloud import REPO, CloudBed, make_bed, write_engine_prefix
from tests.fixtures.moto_aws import CALLER_ARN, TEST_CIDR, MotoAws
from tests.fixtures.sshd import find_sshd, free_port
from tests.test_run_cloud import SV_CLIP, Cli, assert_nothing_left

pytestmark = [
    pytest.mark.skipif(find_sshd() is None, reason="OpenSSH sshd not installed (.ci/run installs it)"),
    pytest.mark.timeout(600),
]

HAS_SERVE = importlib.util.find_spec("gpu_transcribe_api") is not None
needs_serve = pytest.mark.skipif(
    not HAS_SERVE, reason="gpu-transcribe serve (gpu_transcribe_api/, branch srv-core) is not merged yet"
)


# --- the tunnel, over the session's sshd, to a plain HTTP server ------------------------------------------


class _Echo(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        reply = json.dumps({"path": self.path, "bytes": len(body), "auth": self.headers.get("Authorization")})
        data = reply.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_local_forward_carries_requests_both_ways(ssh_session: Any, echo_port: int) -> None:
    """Several requests (one of 3 MB, several at once) go through one forward and come back intact."""
    from gpu_transcribe.ssh import LocalForward

    errors: list[str] = []
    with LocalForward(ssh_session, echo_port, on_error=errors.append) as forward:
        big = os.urandom(3 * 1024 * 1024)

        def post(payload: bytes) -> dict[str, Any]:
            request = urllib.request.Request(
                forward.url + "/v1/x", data=payload, headers={"Authorization": "Bearer k"}, method="POST"
            )
            with urllib.request.urlopen(request, timeout=30) as reply:
                return dict(json.loads(reply.read()))

        assert post(big) == {"path": "/v1/x", "bytes": len(big), "auth": "Bearer k"}
        results: list[dict[str, Any]] = []
        threads = [threading.Thread(target=lambda: results.append(post(b"abc"))) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert [r["bytes"] for r in results] == [3] * 8
        assert forward.connections == 9
    assert errors == []


def test_local_forward_reports_a_closed_remote_port_and_a_taken_local_port(ssh_session: Any) -> None:
    from gpu_transcribe.errors import SSHError
    from gpu_transcribe.ssh import LocalForward

    errors: list[str] = []
    with LocalForward(ssh_session, free_port(), on_error=errors.append) as forward:
        with pytest.raises(OSError):  # the local connection is closed at once (reset or empty reply)
            urllib.request.urlopen(forward.url + "/health", timeout=10)
        deadline = time.monotonic() + 5
        while not errors and time.monotonic() < deadline:
            time.sleep(0.05)
        assert errors and "cannot forward to 127.0.0.1:" in errors[0]
        with pytest.raises(SSHError, match="--local-port"):
            LocalForward(ssh_session, 1, local_port=forward.local_port).start()


# --- the command on the instance ------------------------------------------------------------------------


def test_serve_command_and_unit() -> None:
    """The unit's ExecStart is the argv as is (systemd would expand % and $, and split on spaces: refused)."""
    from gpu_transcribe.errors import GpuTranscribeError
    from gpu_transcribe.warm.on_instance import serve_argv, unit_text

    argv = serve_argv(
        python="/opt/gpu-transcribe/venv/bin/python",
        directory="/tmp/gpu-transcribe-server-r1",
        port=8000,
        idle_stop_min=30,
        max_lifetime_h=12.0,
        model="/opt/gpu-transcribe/models/kb-whisper-small",
        offline=True,
    )
    assert argv[:3] == ["/usr/bin/env", "HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1"]
    assert " ".join(argv[3:]) == (
        "/opt/gpu-transcribe/venv/bin/python -m gpu_transcribe serve --bind 127.0.0.1 --port 8000 "
        "--api-key-file /tmp/gpu-transcribe-server-r1/api-key --idle-stop-min 30 --max-lifetime-h 12 "
        "--model /opt/gpu-transcribe/models/kb-whisper-small --jobs-dir /tmp/gpu-transcribe-server-r1/jobs "
        "--webhook-secret-file /tmp/gpu-transcribe-server-r1/webhook-secret"
    )
    unit = unit_text("default", argv)
    assert f"ExecStart={' '.join(argv)}\n" in unit and "Restart=on-failure" in unit
    assert "FailureAction=poweroff" in unit.split("[Service]")[0]  # a server that cannot run powers off
    assert "[Install]" not in unit  # started, never enabled
    for bad in ("my model", "50%", "$HOME/m"):
        with pytest.raises(GpuTranscribeError, match="cannot start the server"):
            serve_argv(
                python="p", directory="d", port=1, idle_stop_min=1, max_lifetime_h=1, model=bad, offline=False
            )


# --- the state file --------------------------------------------------------------------------------------


def test_state_file_is_private_atomic_and_round_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpu_transcribe.warm.state import ServerState, delete_state, list_states, load_state, save_state

    monkeypatch.setenv("GPU_TRANSCRIBE_STATE_DIR", str(tmp_path / "state"))
    state = ServerState(
        name="gpu-1",
        run_id="20261202T061500Z-abcdef",
        region="eu-north-1",
        aws_profile=None,
        instance_id="i-0123456789abcdef0",
        instance_type="g4dn.xlarge",
        zone="eu-north-1b",
        market="spot",
        price_usd_per_hour=0.1881,
        launched_at=utc_now().replace(microsecond=0),
        key_name="gpu-transcribe-server-x",
        security_group_id="sg-0123",
        security_group_name="gpu-transcribe-server-x",
        login_user="ubuntu",
        client_private_key="-----BEGIN OPENSSH PRIVATE KEY-----\nsecret\n",
        host_public_key="ssh-ed25519 AAAA host",
        api_key="the-api-key",
        port=8000,
        remote_dir="/tmp/gpu-transcribe-server-x",
        supervisor="systemd",
        unit="gpu-transcribe-server",
        remote_prefix="/opt/gpu-transcribe",
        idle_stop_min=30,
        max_lifetime_h=12.0,
        lifetime_cap_minutes=735,
    )
    assert "secret" not in repr(state) and "the-api-key" not in repr(state)
    path = save_state(state)
    assert path == tmp_path / "state" / "servers" / "gpu-1.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_state("gpu-1") == state
    save_state(state)  # replaced, not appended; no temporary file left
    assert [p.name for p in path.parent.iterdir()] == ["gpu-1.json"]
    assert list_states() == (state,)
    assert delete_state("gpu-1") and not delete_state("gpu-1")
    assert load_state("gpu-1") is None


# --- the cleanup rule for servers ------------------------------------------------------------------------


def _server_resource(run_id: str, age: timedelta, cap_minutes: int | None = 735) -> TaggedResource:
    return TaggedResource(
        kind="instance",
        resource_id=f"i-{run_id}",
        run_id=run_id,
        owner_arn=CALLER_ARN,
        role="server",
        created_at=utc_now() - age,
        state="running",
        max_lifetime_minutes=cap_minutes,
    )


def test_cleanup_keeps_live_servers_and_removes_orphaned_or_expired_ones() -> None:
    live = _server_resource("live", timedelta(hours=3))  # state file here, within its lifetime
    orphan = _server_resource("orphan", timedelta(minutes=SERVER_START_GRACE_MINUTES + 1))
    starting = _server_resource("starting", timedelta(minutes=2))  # its `server up` may be going on
    expired = _server_resource("expired", timedelta(hours=13))  # state file here, lifetime over
    untagged = _server_resource("untagged", timedelta(hours=23), cap_minutes=None)
    selected, skipped = select_resources(
        [live, orphan, starting, expired, untagged],
        caller_arn=CALLER_ARN,
        all_owners=False,
        older_than_s=70 * 60,
        now=utc_now(),
        live_servers={"live": "default", "expired": "old", "untagged": "u"},
    )
    assert [r.run_id for r in selected] == ["orphan", "expired"]
    reasons = {o.resource.run_id: o.reason for o in skipped}
    assert "server default is up" in reasons["live"] and "server down" in reasons["live"]
    assert "may still be going on" in reasons["starting"]
    assert "server u is up" in reasons["untagged"]  # 24 h 15 min assumed without the tag
    # --run-id names one: removed whatever its state; --older-than replaces the grace for orphans.
    selected, _ = select_resources(
        [live], caller_arn=CALLER_ARN, all_owners=False, older_than_s=None, now=utc_now(), run_id="live"
    )
    assert selected == [live]
    selected, _ = select_resources(
        [starting], caller_arn=CALLER_ARN, all_owners=False, older_than_s=0, now=utc_now(), server_grace_s=0
    )
    assert selected == [starting]
    # A spot-interrupted server: its key pair goes once its instance is gone, though its state file is here.
    key_pair = TaggedResource(
        "key-pair",
        "kp",
        "live",
        CALLER_ARN,
        "server",
        utc_now() - timedelta(hours=1),
        max_lifetime_minutes=735,
    )
    for runs, expected in (({"live"}, []), (set(), [key_pair])):
        selected, _ = select_resources(
            [key_pair],
            caller_arn=CALLER_ARN,
            all_owners=False,
            older_than_s=None,
            now=utc_now(),
            live_servers={"live": "default"},
            live_instance_runs=runs,
        )
        assert selected == expected


# --- status, down and up's refusal without a server process ---------------------------------------------


def _launched_server(aws: MotoAws, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """A server's instance, key pair and security group in moto, and its state file (no process: the
    instance is only looked at through EC2)."""
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.aws.ec2.launch import launch
    from gpu_transcribe.aws.ec2.models import LaunchSpec
    from gpu_transcribe.warm.state import ServerState, save_state

    monkeypatch.setenv("GPU_TRANSCRIBE_STATE_DIR", str(tmp_path / "state"))
    spec = LaunchSpec(
        image_id=aws.image_id,
        instance_types=("g4dn.xlarge",),
        ssh_cidr=TEST_CIDR,
        role="server",
        extra_tags=((TAG_SERVER_NAME, "default"), (TAG_MAX_LIFETIME, "75")),
    )
    launched = launch(AwsContext(aws.region), spec, sleep=lambda s: None)
    state = ServerState(
        name="default",
        run_id=launched.run_id,
        region=launched.region,
        aws_profile=None,
        instance_id=launched.instance_id,
        instance_type=launched.instance_type,
        zone=launched.zone,
        market=launched.market,
        price_usd_per_hour=launched.price_usd_per_hour,
        launched_at=launched.created_at,
        key_name=launched.key_name,
        security_group_id=launched.security_group_id,
        security_group_name=spec.name,
        login_user="ubuntu",
        client_private_key=launched.client_key.private_key_openssh,
        host_public_key=launched.host_public_key,
        api_key="k",
        port=8000,
        remote_dir="/tmp/none",
        supervisor="systemd",
        unit="gpu-transcribe-server",
        remote_prefix="/opt/gpu-transcribe",
        idle_stop_min=30,
        max_lifetime_h=1.0,
        lifetime_cap_minutes=75,
        ssh_cidr=TEST_CIDR,
    )
    save_state(state)
    return state


def test_status_says_interrupted_and_down_is_idempotent(
    aws: MotoAws, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from gpu_transcribe.cli.warm import status_lines
    from gpu_transcribe.settings import load_settings
    from gpu_transcribe.warm import load_state, server_down, server_status

    _launched_server(aws, monkeypatch, tmp_path)
    state = load_state("default")  # the launch time as kept: to the second
    assert state is not None
    aws.spot_interrupt(state.instance_id)
    settings = load_settings(env={}, config_files=[])
    status = server_status(settings, now=state.launched_at + timedelta(minutes=30))
    assert status.interrupted and status.state == "terminated" and status.health_status is None
    assert status.age_s == 1800 and status.cost_usd == pytest.approx(0.1881 / 2)
    assert "interrupted" in status_lines(status)[0]
    report = server_down(settings, sleep=lambda s: None)
    assert report.found and {o.action for o in report.outcomes} >= {"already-gone", "deleted"}
    assert load_state("default") is None
    assert_nothing_left(aws)
    again = server_down(settings)
    assert not again.found and again.outcomes == ()


def test_down_that_cannot_remove_everything_exits_5_and_keeps_the_state(
    aws: MotoAws, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A security group EC2 refuses to delete: exit 5 as `run`, the group named, the state file kept, and a
    second `down` finishes the job."""
    import subprocess

    from gpu_transcribe.warm import load_state

    state = _launched_server(aws, monkeypatch, tmp_path)
    # It stopped itself (its idle stop): no SSH to try, only the AWS resources to remove.
    aws.set_instance_state(state.instance_id, "terminated", "Client.InstanceInitiatedShutdown")
    aws.fail("DeleteSecurityGroup", "UnauthorizedOperation", status=403, times=1)
    command = [sys.executable, "-m", "gpu_transcribe", "server", "down"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 5, first.stderr
    assert state.security_group_id in first.stderr and "UnauthorizedOperation" in first.stderr
    assert load_state("default") is not None
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and "is down" in second.stdout, second.stderr
    assert load_state("default") is None
    assert_nothing_left(aws)


def test_the_ssh_rule_follows_the_callers_new_address(
    aws: MotoAws, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The laptop moved to another network: port 22 is opened to the new address and closed to the old."""
    from gpu_transcribe.settings import load_settings
    from gpu_transcribe.warm import load_state
    from gpu_transcribe.warm.manage import follow_caller

    state = _launched_server(aws, monkeypatch, tmp_path)
    new_cidr = "198.51.100.9/32"
    events: list[Any] = []
    settings = load_settings(env={"GPU_TRANSCRIBE_SSH_CIDR": new_cidr}, config_files=[])
    moved = follow_caller(state, settings, events.append)
    assert moved.ssh_cidr == new_cidr and load_state("default") == moved
    (group,) = aws.ec2().describe_security_groups(GroupIds=[state.security_group_id])["SecurityGroups"]
    assert [(p["FromPort"], [r["CidrIp"] for r in p["IpRanges"]]) for p in group["IpPermissions"]] == [
        (22, [new_cidr])
    ]
    assert any(new_cidr in e.message and TEST_CIDR in e.message for e in events)
    assert follow_caller(moved, settings, events.append) == moved and len(events) == 1  # nothing to move


def test_up_refuses_a_second_server_of_the_same_name(
    aws: MotoAws, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from gpu_transcribe.settings import load_settings
    from gpu_transcribe.warm import ServerExistsError, ServerUpRequest, server_up

    state = _launched_server(aws, monkeypatch, tmp_path)
    settings = load_settings(env={"GPU_TRANSCRIBE_SSH_CIDR": TEST_CIDR}, config_files=[])
    with pytest.raises(ServerExistsError, match=f"server default is up \\({state.instance_id}") as refused:
        server_up(settings, ServerUpRequest())
    assert refused.value.exit_code == 2
    assert len(aws.calls("RunInstances")) == 1  # the helper's launch only


# --- end to end: up, status, tunnel, logs, down ----------------------------------------------------------


@pytest.fixture
def bed(aws: MotoAws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CloudBed]:
    model_dir = Path(os.environ.get("GPU_TRANSCRIBE_TEST_MODEL", REPO / "models" / "whisper-base"))
    if not (model_dir / "config.json").is_file():
        pytest.skip(f"no offline model at {model_dir}: run `make offline-model`")
    bed = make_bed(aws, tmp_path, model_dir)
    bed.env["GPU_TRANSCRIBE_STATE_DIR"] = str(tmp_path / "state")
    # The server's idle stop and lifetime must never power this machine off: the image's interpreter sets
    # serve's power-off seam (the sshd session does not pass this process's environment on).
    write_engine_prefix(
        bed.prefix_dir,
        model_dir,
        f'export PYTHONPATH="{REPO}"\n'
        f'export GPU_TRANSCRIBE_POWEROFF_COMMAND="touch {tmp_path}/poweroff"\n'
        f'exec "{sys.executable}" "$@"\n',
    )
    for key in (
        "GPU_TRANSCRIBE_STATE_DIR",
        "GPU_TRANSCRIBE_DIAL_ADDRESS",
        "GPU_TRANSCRIBE_LOGIN_USER",
        "GPU_TRANSCRIBE_SSH_CIDR",
        "GPU_TRANSCRIBE_REMOTE_PREFIX",
        "GPU_TRANSCRIBE_MODEL",
        "GPU_TRANSCRIBE_HEARTBEAT_PATH",
    ):
        monkeypatch.setenv(key, bed.env[key])  # for the calls made in this process
    try:
        yield bed
    finally:
        _kill_servers(aws)
        if bed.imds is not None:
            bed.imds.stop()


def _run_ids(aws: MotoAws) -> list[str]:
    reservations = aws.ec2().describe_instances(Filters=[{"Name": "tag-key", "Values": [TAG_RUN_ID]}])
    return [
        tag["Value"]
        for r in reservations["Reservations"]
        for i in r["Instances"]
        for tag in i.get("Tags", [])
        if tag["Key"] == TAG_RUN_ID
    ]


def _server_pid(run_id: str) -> int | None:
    try:
        return int(Path(f"/tmp/gpu-transcribe-server-{run_id}/server.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    with contextlib.suppress(OSError):  # a zombie (no init reaping it here) counts as gone
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def _kill_servers(aws: MotoAws) -> None:
    """What a terminated instance would take with it: the setsid'd server processes of this test's runs."""
    import shutil

    for run_id in _run_ids(aws):
        pid = _server_pid(run_id)
        if pid is not None and _alive(pid):
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        shutil.rmtree(f"/tmp/gpu-transcribe-server-{run_id}", ignore_errors=True)


def _up(bed: CloudBed, port: int) -> tuple[int, str, str]:
    cli = Cli(bed, "server", "up", "--port", port, "--idle-stop-min", 30, "--max-lifetime-h", 1)
    return cli.finish()


@needs_serve
def test_up_status_tunnel_logs_down(bed: CloudBed) -> None:
    from gpu_transcribe.settings import load_settings
    from gpu_transcribe.warm import load_state, open_tunnel, server_status

    emulator = bed.emulator()
    port = free_port()
    try:
        started = time.monotonic()
        code, out, err = _up(bed, port)
        up_s = time.monotonic() - started
        assert code == 0, err
        state = load_state("default")
        assert state is not None and state.supervisor == "process" and state.port == port
        assert state.ssh_cidr == TEST_CIDR and state.lifetime_cap_minutes == 75
        assert f"API key: {state.api_key}" in out and "server tunnel" in out
        assert stat.S_IMODE(state.path.stat().st_mode) == 0o600
        key_file = Path(state.remote_dir) / "api-key"
        assert key_file.read_text() == state.api_key
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(Path(state.remote_dir).stat().st_mode) == 0o700
        _check_launch(bed.aws, state.instance_id, state.security_group_id)

        code, out, err = Cli(bed, "server", "status", "--json").finish()
        assert code == 0, err
        status = json.loads(out)
        assert status["state"] == "running" and status["health_status"] == 200, status
        assert status["requests_served"] == 0 and status["cost_usd"] > 0
        assert status["price_usd_per_hour"] == pytest.approx(0.1881)

        # A real transcription through paramiko's forwarding, with the key; and one without it.
        settings = load_settings(env=bed.env, config_files=[])
        with open_tunnel(settings, local_port=free_port()) as (info, _ssh):
            assert info.api_key == state.api_key
            with urllib.request.urlopen(info.url + "/health", timeout=30) as reply:
                assert json.loads(reply.read())["model_loaded"] is True
            text = _transcribe(info.base_url, state.api_key)
            assert len(text.split()) >= 3, text
            with pytest.raises(urllib.error.HTTPError) as refused:
                _transcribe(info.base_url, "wrong-key")
            assert refused.value.code == 401

        # The command: the tunnel until Ctrl-C.
        local = free_port()
        tunnel = Cli(bed, "server", "tunnel", "--local-port", local)
        assert _wait_http(f"http://127.0.0.1:{local}/health", tunnel)["model_loaded"] is True
        tunnel.proc.send_signal(signal.SIGINT)
        code, out, err = tunnel.finish()
        assert code == 0 and "tunnel closed" in err, err
        assert f"OPENAI_BASE_URL=http://127.0.0.1:{local}/v1" in out and state.api_key in out, out

        after = server_status(settings)
        assert after.requests_served is not None and after.requests_served >= 1
        assert after.idle_s is not None and after.idle_s < 60

        code, out, err = Cli(bed, "server", "status").finish()
        assert code == 0 and "requests" in out and "running" in out, out + err

        code, out, err = Cli(bed, "server", "logs", "-n", 50).finish()
        assert code == 0 and out.strip(), err

        pid = _server_pid(state.run_id)
        code, out, err = Cli(bed, "server", "down").finish()
        assert code == 0 and "is down" in out, err
        assert pid is not None and not _alive(pid)
        assert load_state("default") is None
        code, out, _ = Cli(bed, "server", "down").finish()
        assert code == 0 and "nothing to do" in out
    finally:
        emulator.stop()
    assert_nothing_left(bed.aws)
    print(f"server up took {up_s:.1f} s")


def _check_launch(aws: MotoAws, instance_id: str, group_id: str) -> None:
    """Tags incl. role server, the security group open to the caller only on 22, IMDSv2, encrypted volume,
    and the dead-man switch's lifetime cap at the server's lifetime plus the margin."""
    import base64

    ec2 = aws.ec2()
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags[TAG_ROLE] == "server" and tags[TAG_SERVER_NAME] == "default"
    assert tags[TAG_MAX_LIFETIME] == str(60 + 15) and TAG_CREATED in tags
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    (group,) = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    assert [(p["FromPort"], [r["CidrIp"] for r in p["IpRanges"]]) for p in group["IpPermissions"]] == [
        (22, [TEST_CIDR])
    ]
    volume_id = instance["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    assert ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Encrypted"] is True
    raw = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")["UserData"]["Value"]
    user_data = json.loads(base64.b64decode(raw).decode().split("\n", 1)[1])
    assert ["shutdown", "-P", "+77"] in user_data["runcmd"]
    assert f"--setenv=MAX_LIFETIME_S={75 * 60}" in user_data["runcmd"][0]


def _wait_http(url: str, cli: Cli, timeout_s: float = 60.0) -> dict[str, Any]:
    """GET ``url`` until it answers 200 (the tunnel command is starting); its JSON."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert cli.proc.poll() is None, cli.stderr
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:
                return dict(json.loads(reply.read()))
        except OSError:
            assert time.monotonic() < deadline, f"no answer from {url}:\n{cli.stderr}"
            time.sleep(0.2)


def _transcribe(base_url: str, api_key: str) -> str:
    """POST /v1/audio/transcriptions (multipart, as the openai client sends it); the text."""
    boundary = "gpu-transcribe-test-boundary"
    audio = SV_CLIP.read_bytes()
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper\r\n'.encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="language"\r\n\r\nsv\r\n'.encode(),
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{SV_CLIP.name}"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + audio
        + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    request = urllib.request.Request(
        base_url + "/audio/transcriptions",
        data=b"".join(parts),
        headers={
            "Authorization": f"Bearer {api_key}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=300) as reply:
        return str(json.loads(reply.read())["text"])


@needs_serve
def test_sigint_during_up_leaves_nothing(bed: CloudBed) -> None:
    """SIGINT once the server process runs (while /health is awaited): the server process is stopped, the
    instance terminated, key pair and security group deleted, no state file written."""
    from gpu_transcribe.warm import load_state

    emulator = bed.emulator()
    try:
        cli = Cli(bed, "server", "up", "--port", free_port())
        cli.wait_for("waiting for /health")
        (run_id,) = _run_ids(bed.aws)
        pid = _server_pid(run_id)
        cli.proc.send_signal(signal.SIGINT)
        code, _, err = cli.finish()
    finally:
        emulator.stop()
    assert code == 130, err
    assert "cleaning up" in err
    assert pid is not None and not _alive(pid)
    assert load_state("default") is None
    assert_nothing_left(bed.aws)


@needs_serve
def test_a_server_that_does_not_start_fails_up_and_leaves_nothing(bed: CloudBed, tmp_path: Path) -> None:
    """A model that cannot be loaded: serve exits, up says so with the server's log, exit 1, all removed."""
    from gpu_transcribe.warm import load_state

    missing = tmp_path / "no-such-model"  # the image's manifest names a cached copy that is not there
    manifest = bed.prefix_dir / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "model_path": str(missing)}))
    emulator = bed.emulator()
    try:
        code, out, err = Cli(bed, "server", "up", "--port", free_port()).finish()
    finally:
        emulator.stop()
    assert code == 1, err
    assert "error:" in err and ("exited" in err or "/health did not answer" in err), err
    assert str(missing) in err  # the log's tail names the model it could not load
    assert load_state("default") is None and out == ""
    assert_nothing_left(bed.aws)


@needs_serve
def test_cleanup_finds_a_server_whose_state_file_was_deleted(bed: CloudBed) -> None:
    from gpu_transcribe.account.cleanup import cleanup
    from gpu_transcribe.settings import load_settings
    from gpu_transcribe.warm import load_state

    emulator = bed.emulator()
    try:
        code, _, err = _up(bed, free_port())
        assert code == 0, err
        state = load_state("default")
        assert state is not None
        settings = load_settings(env=bed.env, config_files=[])
        later = utc_now() + timedelta(minutes=SERVER_START_GRACE_MINUTES + 5)
        kept = cleanup(settings, now=later)  # its state file is here: a live server
        assert kept.acted_on == () and {o.action for o in kept.outcomes} == {"skipped"}
        assert all("server default is up" in o.reason for o in kept.outcomes)
        state.path.unlink()  # the client lost its state
        report = cleanup(settings, now=later)
        assert sorted((o.resource.kind, o.action) for o in report.outcomes) == [
            ("instance", "terminated"),
            ("key-pair", "deleted"),
            ("security-group", "deleted"),
        ]
    finally:
        emulator.stop()
    assert_nothing_left(bed.aws)
