"""After launch: waiting for ``running`` and for the SSH banner (injected clock, no real sleeps), the address
seam that maps an instance to a loopback server, spot-interruption detection, and stopping an instance."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest

from gpu_transcribe.aws.clients import AwsContext
from gpu_transcribe.aws.ec2.instances import (
    DIAL_ADDRESS_ENV,
    address_resolver_from_env,
    check_alive,
    default_address,
    describe_instance,
    stop_instance,
    wait_for_ssh_port,
    wait_until_ready,
    wait_until_running,
)
from gpu_transcribe.aws.ec2.launch import launch
from gpu_transcribe.aws.ec2.models import LaunchResult, LaunchSpec
from gpu_transcribe.common import ProgressEvent
from gpu_transcribe.errors import CloudError, InstanceLostError, SettingsError, SSHTimeoutError
from tests.fixtures.moto_aws import REGION, TEST_CIDR, MotoAws

# A hung AWS call must fail with a traceback, not stall the suite (the default timeout is 900 s).
pytestmark = pytest.mark.timeout(120)


class FakeTime:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.on_sleep: list[object] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        for hook in list(self.on_sleep):
            hook(len(self.sleeps))  # type: ignore[operator]


class BannerServer:
    """A TCP listener on 127.0.0.1 that closes the first ``silent`` connections without a word (a port that is
    open before sshd is ready), then greets like OpenSSH."""

    def __init__(self, silent: int = 0) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = ("127.0.0.1", self.sock.getsockname()[1])
        self.silent = silent
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.connections += 1
                if self.connections > self.silent:
                    conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def banner_server() -> Iterator[BannerServer]:
    server = BannerServer(silent=2)
    yield server
    server.close()


def launched(aws: MotoAws) -> LaunchResult:
    spec = LaunchSpec(image_id=aws.image_id, instance_types=("g4dn.xlarge",), ssh_cidr=TEST_CIDR)
    return launch(AwsContext(REGION), spec, sleep=lambda s: None)


def test_wait_until_running_polls_until_running(aws: MotoAws) -> None:
    result = launched(aws)
    aws.set_instance_state(result.instance_id, "pending")
    fake = FakeTime()
    fake.on_sleep.append(lambda n: n == 3 and aws.set_instance_state(result.instance_id, "running"))
    events: list[ProgressEvent] = []
    info = wait_until_running(
        AwsContext(REGION), result.instance_id, on_progress=events.append, clock=fake.clock, sleep=fake.sleep
    )
    assert info.state == "running" and info.public_ip == result.public_ip
    assert fake.sleeps == [2.0, 2.0, 2.0]
    assert [e.message.split(":")[1].split()[0] for e in events] == ["pending", "running"]


def test_wait_until_running_times_out(aws: MotoAws) -> None:
    result = launched(aws)
    aws.set_instance_state(result.instance_id, "pending")
    fake = FakeTime()
    with pytest.raises(CloudError, match=r"still pending after 10 s"):
        wait_until_running(
            AwsContext(REGION), result.instance_id, timeout_s=10, clock=fake.clock, sleep=fake.sleep
        )
    assert sum(fake.sleeps) == 10.0


def test_spot_interruption_while_waiting_is_reported(aws: MotoAws) -> None:
    result = launched(aws)
    aws.set_instance_state(result.instance_id, "pending")
    fake = FakeTime()
    fake.on_sleep.append(lambda n: n == 1 and aws.spot_interrupt(result.instance_id))
    with pytest.raises(InstanceLostError) as caught:
        wait_until_running(AwsContext(REGION), result.instance_id, clock=fake.clock, sleep=fake.sleep)
    assert caught.value.spot_interruption
    assert caught.value.state == "terminated"
    assert "spot interruption" in str(caught.value)


def test_check_alive_detects_spot_interruption_and_other_ends(aws: MotoAws) -> None:
    ctx = AwsContext(REGION)
    first = launched(aws)
    assert check_alive(ctx, first.instance_id).state == "running"
    aws.spot_interrupt(first.instance_id)
    info = describe_instance(ctx, first.instance_id)
    assert info is not None and info.spot_interrupted and info.gone and not info.alive
    with pytest.raises(InstanceLostError) as caught:
        check_alive(ctx, first.instance_id)
    assert caught.value.spot_interruption and caught.value.reason_code == "Server.SpotInstanceTermination"

    second = launched(aws)
    aws.ec2().terminate_instances(InstanceIds=[second.instance_id])  # someone else, or the dead-man switch
    with pytest.raises(InstanceLostError) as caught:
        check_alive(ctx, second.instance_id)
    assert not caught.value.spot_interruption
    assert caught.value.reason_code == "Client.UserInitiatedShutdown"
    with pytest.raises(InstanceLostError, match="not known to EC2"):
        check_alive(ctx, "i-0123456789abcdef0")


def test_stop_instance_waits_for_stopped(aws: MotoAws) -> None:
    ctx = AwsContext(REGION)
    first = launched(aws)
    events: list[ProgressEvent] = []
    fake = FakeTime()
    stop_instance(ctx, first.instance_id, on_progress=events.append, clock=fake.clock, sleep=fake.sleep)
    info = describe_instance(ctx, first.instance_id)
    assert info is not None and info.state == "stopped"
    assert events[-1].stage == "stop" and f"{first.instance_id}: stopped" in events[-1].message


def test_wait_for_ssh_needs_the_banner_not_just_an_open_port(banner_server: BannerServer) -> None:
    fake = FakeTime()
    events: list[ProgressEvent] = []
    waited = wait_for_ssh_port(
        banner_server.address, on_progress=events.append, clock=fake.clock, sleep=fake.sleep
    )
    assert banner_server.connections == 3  # two silent accepts, then the banner
    assert waited == 4.0 and fake.sleeps == [2.0, 2.0]
    assert "answers (SSH-2.0-OpenSSH_9.2p1" in events[-1].message


def test_wait_for_ssh_times_out_on_a_closed_port() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    fake = FakeTime()
    with pytest.raises(SSHTimeoutError, match=rf"no SSH server answered at 127.0.0.1:{port} within 20 s"):
        wait_for_ssh_port(("127.0.0.1", port), timeout_s=20, clock=fake.clock, sleep=fake.sleep)
    assert sum(fake.sleeps) == 20.0


def test_wait_until_ready_dials_the_resolved_address(aws: MotoAws, banner_server: BannerServer) -> None:
    result = launched(aws)
    stale = replace(result, public_ip=None)
    fake = FakeTime()
    ready, address = wait_until_ready(
        AwsContext(REGION),
        stale,
        resolve=lambda info: banner_server.address,
        clock=fake.clock,
        sleep=fake.sleep,
    )
    assert address == banner_server.address
    assert ready.public_ip == result.public_ip  # refreshed from describe
    assert ready.client_key == result.client_key and ready.host_public_key == result.host_public_key


def test_spot_interruption_while_waiting_for_ssh_ends_the_wait(aws: MotoAws) -> None:
    result = launched(aws)
    server = BannerServer(silent=10_000)  # sshd never comes up
    try:
        fake = FakeTime()
        fake.on_sleep.append(lambda n: n == 3 and aws.spot_interrupt(result.instance_id))
        with pytest.raises(InstanceLostError) as caught:
            wait_until_ready(
                AwsContext(REGION),
                result,
                resolve=lambda info: server.address,
                clock=fake.clock,
                sleep=fake.sleep,
            )
        assert caught.value.spot_interruption
        assert fake.now - 1000.0 <= 20.0  # noticed at the next alive check (every 10 s), not at the timeout
    finally:
        server.close()


def test_address_resolver_from_env(aws: MotoAws) -> None:
    result = launched(aws)
    info = describe_instance(AwsContext(REGION), result.instance_id)
    assert info is not None
    assert address_resolver_from_env({})(info) == (result.public_ip, 22) == default_address(info)
    assert address_resolver_from_env({DIAL_ADDRESS_ENV: "127.0.0.1:2222"})(info) == ("127.0.0.1", 2222)
    assert address_resolver_from_env({DIAL_ADDRESS_ENV: "[::1]:2200"})(info) == ("::1", 2200)
    with pytest.raises(SettingsError, match=DIAL_ADDRESS_ENV):
        address_resolver_from_env({DIAL_ADDRESS_ENV: "localhost:notaport"})
    with pytest.raises(CloudError, match="has no IP address yet"):
        default_address(replace(info, public_ip=None, private_ip=None))
