"""The SSH source address: ``auto`` asks checkip (here a local HTTP server standing in for it) and becomes a
/32; an answer that cannot be had is a clear error asking for the setting, never 0.0.0.0/0."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gpu_transcribe.aws.ec2.checkip import detect_public_ip, resolve_ssh_cidr
from gpu_transcribe.errors import SettingsError


class _Answer(BaseHTTPRequestHandler):
    body = b"198.51.100.23\n"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def checkip_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_auto_becomes_the_detected_address_as_a_slash_32(checkip_url: str) -> None:
    assert detect_public_ip(checkip_url) == "198.51.100.23"
    assert resolve_ssh_cidr("auto", detect=lambda: detect_public_ip(checkip_url)) == "198.51.100.23/32"
    assert resolve_ssh_cidr("auto", detect=lambda: "2001:db8::5") == "2001:db8::5/128"


def test_an_explicit_cidr_is_used_as_it_is() -> None:
    def never() -> str:
        raise AssertionError("must not ask checkip")

    assert resolve_ssh_cidr("203.0.113.0/24", detect=never) == "203.0.113.0/24"


def test_unreachable_checkip_asks_for_the_setting() -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(SettingsError) as caught:
        resolve_ssh_cidr("auto", "default", detect=lambda: detect_public_ip(f"http://127.0.0.1:{port}/", 2.0))
    message = str(caught.value)
    assert caught.value.setting == "ssh_cidr"
    assert "could not be detected through https://checkip.amazonaws.com/" in message
    assert "GPU_TRANSCRIBE_SSH_CIDR=203.0.113.7/32" in message
    assert "0.0.0.0/0" not in message


def test_a_garbage_answer_is_an_error(checkip_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_Answer, "body", b"<html>captive portal</html>")
    with pytest.raises(SettingsError, match="ssh_cidr is auto"):
        resolve_ssh_cidr("auto", detect=lambda: detect_public_ip(checkip_url))
