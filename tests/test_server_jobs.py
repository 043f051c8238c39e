"""Async jobs (issue 11): the job store on disk, signed webhooks to real loopback receivers, and the
``/v1/jobs`` routes on a real uvicorn with the real whisper-base engine and real speech.

Receivers are ``http.server`` servers on 127.0.0.1 in threads; signatures are checked with the
``standardwebhooks`` library, as a receiver would. The HTTP tests (marked ``slow``) load the engine once for
the module; each test's server reuses it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import shutil
import socket
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import standardwebhooks

from bench.fixtures import clip_path, find_test_model
from gpu_transcribe_api.config import ServerConfig
from gpu_transcribe_api.formats import openai_body
from gpu_transcribe_api.jobs import RESTART_ERROR, JobStore
from gpu_transcribe_api.webhooks import (
    PinnedTransport,
    WebhookSender,
    check_callback_url,
    check_secret,
    generate_secret,
    load_or_create_secret,
    retry_after_s,
)
from gpu_transcribe_engine.options import TranscribeOptions
from gpu_transcribe_engine.transcript import Segment, Timings, Transcript, transcript_from_dict
from tests.fixtures.server import GatedEngine, live_server, reuse_engine, wait_until
from tests.fixtures.webhooks import ScriptedResolver, TlsReceiver

# -- helpers -------------------------------------------------------------------------------------------


def make_transcript() -> Transcript:
    """A small transcript with Swedish letters, as the engine would return it."""
    return Transcript(
        segments=(Segment(0.0, 1.5, "Hej på dig"), Segment(1.5, 3.25, "och så vidare")),
        language="sv",
        duration_s=3.5,
        timings=Timings(load_s=1.0, decode_s=0.1, transcribe_s=0.7),
        model="models/whisper-base",
        revision=None,
        device="cpu",
        dtype="float32",
        options=TranscribeOptions(language="sv", algorithm="batched", batch_size=4),
        audio="hej.flac",
        extra={"windows": 1},
    )


@dataclass
class Hit:
    """One request a receiver got: when (monotonic seconds), its headers and body."""

    at_s: float
    headers: dict[str, str]
    body: bytes
    path: str = ""


@dataclass
class Receiver:
    """A loopback HTTP receiver; answers POSTs with ``script`` in order, then with ``default``."""

    url: str
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    default: int = 204
    hits: list[Hit] = field(default_factory=list)
    got: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Hit]:
        """Wait until ``count`` requests arrived; return them."""
        with self.got:
            assert self.got.wait_for(lambda: len(self.hits) >= count, timeout=timeout_s), self.hits
            return list(self.hits)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP server on 127.0.0.1 (a free port) in a thread."""
    state: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            rec = state[0]
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with rec.got:
                headers = {k.lower(): v for k, v in self.headers.items()}
                rec.hits.append(Hit(time.monotonic(), headers, body, self.path))
                status, headers = rec.script.pop(0) if rec.script else (rec.default, {})
                rec.got.notify_all()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.append(Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/hooks/jobs?token=t0ps3cret"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state[0]
    server.shutdown()
    server.server_close()


@pytest.fixture
def secret() -> str:
    return generate_secret()


@pytest.fixture
def sender(secret: str) -> Iterator[WebhookSender]:
    """A started sender with a fast schedule (waits of at most 0.05, 0.1, ... s) and 2 s per attempt; it may
    send to private addresses (the receivers are on loopback)."""
    s = WebhookSender(
        secret, timeout_s=2.0, max_attempts=4, backoff_base_s=0.05, backoff_cap_s=0.2, allow_private=True
    )
    s.start()
    yield s
    s.close()


def verify(secret: str, hit: Hit) -> dict[str, object]:
    """Verify a delivery as a receiver does; return the parsed body."""
    payload = standardwebhooks.Webhook(secret).verify(hit.body, hit.headers)
    assert isinstance(payload, dict)
    return payload


# -- JobStore ------------------------------------------------------------------------------------------


def test_job_store_lifecycle_on_disk(tmp_path: Path) -> None:
    root = tmp_path / "jobs"
    store = JobStore(root, ttl_s=3600)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    record = store.create(
        io.BytesIO(b"RIFF fake audio"),
        filename="intervju.FLAC",
        options={"language": "sv", "response_format": "srt", "temperature": 0.0},
        callback_url="http://127.0.0.1:9/x",
    )
    assert record.status == "queued" and record.finished_at is None
    assert record.created_at.endswith("Z") and "T" in record.created_at
    assert len(record.id) == 22
    audio = store.audio_path(record.id)
    assert audio is not None and audio.name == "audio.flac" and audio.read_bytes() == b"RIFF fake audio"
    on_disk = json.loads((root / record.id / "job.json").read_text())
    assert on_disk["status"] == "queued" and on_disk["options"]["response_format"] == "srt"
    for path in (root / record.id).iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path

    running = store.mark_running(record.id, duration_s=3.5)
    assert running is not None and running.status == "running" and running.duration_s == 3.5
    assert store.result(record.id) is None

    transcript = make_transcript()
    done = store.mark_succeeded(record.id, transcript)
    assert done is not None and done.status == "succeeded" and done.finished_at is not None
    assert store.audio_path(record.id) is None, "the upload is removed as soon as the job finishes"
    assert store.get(record.id) == done
    assert store.result(record.id) == transcript
    assert transcript_from_dict(json.loads((root / record.id / "result.json").read_text())) == transcript
    # A finished job stays finished.
    assert store.mark_failed(record.id, "late") is None
    assert store.mark_running(record.id) is None


def test_job_store_failure_is_one_line_and_removes_audio(tmp_path: Path) -> None:
    store = JobStore(tmp_path, ttl_s=3600)
    record = store.create(io.BytesIO(b"x"), filename="a.mp3")
    failed = store.mark_failed(record.id, "cannot decode\n  the file:\tno audio stream")
    assert failed is not None and failed.status == "failed"
    assert failed.error == "cannot decode the file: no audio stream"
    assert store.audio_path(record.id) is None
    assert store.result(record.id) is None


def test_job_store_unknown_and_malformed_ids(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs", ttl_s=3600)
    (tmp_path / "secret").write_text("x")
    for job_id in ("nope", "../secret", "A" * 22, ""):
        assert store.get(job_id) is None
        assert store.result(job_id) is None
        assert store.audio_path(job_id) is None
        assert store.mark_running(job_id) is None


def test_job_store_expiry_removes_jobs(tmp_path: Path) -> None:
    """Expiry counts from ``finished_at`` on the store's clock (a controlled one here, so a slow disk cannot
    make the test flaky); the sweeper thread removes what expired."""
    now_s = [1_000_000.0]
    store = JobStore(tmp_path, ttl_s=60, clock=lambda: now_s[0])
    done = store.create(io.BytesIO(b"x"), filename="a.wav")
    store.mark_succeeded(done.id, make_transcript())
    running = store.create(io.BytesIO(b"y"), filename="b.wav")
    store.mark_running(running.id)
    now_s[0] += 59.9
    assert store.get(done.id) is not None and store.sweep() == []
    now_s[0] += 0.1
    assert store.get(done.id) is None, "an expired job reads as unknown even before a sweep"
    assert not (tmp_path / done.id).exists()
    now_s[0] += 10_000
    assert store.get(running.id) is not None, "unfinished jobs never expire"

    store.mark_failed(running.id, "boom")
    store.start_sweeper(interval_s=0.05)
    try:
        time.sleep(0.2)
        assert (tmp_path / running.id).exists(), "not expired yet"
        now_s[0] += 60
        deadline = time.monotonic() + 10
        while (tmp_path / running.id).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not (tmp_path / running.id).exists(), "the sweeper removed the expired job"
        assert len(store) == 0
    finally:
        store.close()


def test_job_store_restart_fails_unfinished_jobs(tmp_path: Path) -> None:
    first = JobStore(tmp_path, ttl_s=3600)
    done = first.create(io.BytesIO(b"x"), filename="a.wav")
    first.mark_succeeded(done.id, make_transcript())
    left = first.create(io.BytesIO(b"y"), filename="b.wav")
    first.mark_running(left.id)
    (tmp_path / "Zm9vYmFyYmF6cXV4cXV1eA").mkdir()  # an id-like directory without a record: a leftover
    (tmp_path / "Zm9vYmFyYmF6cXV4cXV1eA" / "audio.wav").write_bytes(b"x")
    foreign = tmp_path / "someone_elses_projects"  # 22 characters, like an id; files not ours
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")

    second = JobStore(tmp_path, ttl_s=3600)
    assert second.result(done.id) == make_transcript()
    record = second.get(left.id)
    assert record is not None and record.status == "failed" and record.error == RESTART_ERROR
    assert second.audio_path(left.id) is None
    assert not (tmp_path / "Zm9vYmFyYmF6cXV4cXV1eA").exists()
    assert (foreign / "notes.txt").read_text() == "keep me", "a directory not ours is left alone"


def test_job_store_is_thread_safe(tmp_path: Path) -> None:
    store = JobStore(tmp_path, ttl_s=3600)
    transcript = make_transcript()
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(10):
                rec = store.create(io.BytesIO(b"a" * 100), filename=f"{n}-{i}.wav")
                store.mark_running(rec.id)
                if i % 2:
                    store.mark_succeeded(rec.id, transcript)
                else:
                    store.mark_failed(rec.id, "no")
                store.sweep()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(store) == 80
    reopened = JobStore(tmp_path, ttl_s=3600)
    statuses = sorted(r.status for r in (reopened.get(p.name) for p in tmp_path.iterdir()) if r)
    assert statuses == ["failed"] * 40 + ["succeeded"] * 40
    assert not list(tmp_path.glob("*/.*.tmp")), "no temporary files left"


# -- webhook secrets and URLs ------------------------------------------------------------------------


def test_secret_file_is_created_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "webhook-secret"
    secret = load_or_create_secret(path)
    assert secret.startswith("whsec_") and check_secret(secret) == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(path) == secret
    path.write_text("not a secret\n")
    with pytest.raises(ValueError, match="whsec_") as excinfo:
        load_or_create_secret(path)
    assert "not a secret" not in str(excinfo.value)
    with pytest.raises(ValueError):
        check_secret("whsec_" + "QUFB")  # 3 bytes: below the spec's 24


def test_webhook_secret_comes_from_config_file_or_jobs_dir(tmp_path: Path) -> None:
    from gpu_transcribe_api.job_service import resolve_webhook_secret

    given = generate_secret()
    assert resolve_webhook_secret(ServerConfig(webhook_secret=given), tmp_path) == (given, None)
    assert given not in repr(ServerConfig(webhook_secret=given)), "the secret stays out of logs"
    made, path = resolve_webhook_secret(ServerConfig(), tmp_path)
    assert path == tmp_path / "webhook-secret" and path.read_text().strip() == made
    bad = tmp_path / "bad-secret"
    bad.write_text("hunter2\n")
    with pytest.raises(ValueError, match=r"--webhook-secret-file .*bad-secret") as excinfo:
        resolve_webhook_secret(ServerConfig(webhook_secret_file=bad), tmp_path)
    assert "hunter2" not in str(excinfo.value)
    with pytest.raises(ValueError, match="webhook_secret"):
        resolve_webhook_secret(ServerConfig(webhook_secret="whsec_short"), tmp_path)


def test_callback_url_must_be_http_with_a_host() -> None:
    assert check_callback_url(" https://93.184.215.14/hook ") == "https://93.184.215.14/hook"  # public
    assert (
        check_callback_url("http://127.0.0.1:8080/x?y=1", allow_private=True) == "http://127.0.0.1:8080/x?y=1"
    )
    for bad in ("ftp://example.org/x", "file:///etc/passwd", "example.org/hook", "http:///x", ""):
        with pytest.raises(ValueError, match="callback_url: not an http"):
            check_callback_url(bad, allow_private=True)
    with pytest.raises(ValueError, match="does not resolve"):
        check_callback_url("http://no-such-host.invalid/hook", allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",  # EC2's instance metadata service
        "http://2852039166/latest/meta-data/",  # the same address in decimal
        "http://0xa9fea9fe/latest/meta-data/",  # in hexadecimal
        "http://[::ffff:169.254.169.254]/latest/meta-data/",  # IPv4-mapped IPv6
        "http://localhost:8080/hook",  # a name that resolves to loopback
        "http://017700000001/hook",  # 127.0.0.1 in octal
        "http://127.0.0.1:8080/hook",
        "http://[::1]/hook",
        "http://10.1.2.3/hook",
        "http://0.0.0.0/hook",  # unspecified
        "http://224.0.0.1/hook",  # multicast
        "http://[ff02::1]/hook",
    ],
)
def test_callback_url_to_a_non_public_address_is_refused(url: str) -> None:
    """Every non-public address is refused, whatever form the URL gives it, unless private targets are
    allowed (``serve --allow-private-callbacks``)."""
    with pytest.raises(ValueError, match=r"callback_url: .* not a public address .*allow-private-callbacks"):
        check_callback_url(url)
    assert check_callback_url(url, allow_private=True) == url


def test_retry_after_seconds_and_dates() -> None:
    assert retry_after_s("3", 0.0) == 3.0
    assert retry_after_s(None, 0.0) is None
    assert retry_after_s("soon", 0.0) is None
    assert retry_after_s("Thu, 01 Jan 1970 00:00:10 GMT", 4.0) == 6.0


# -- WebhookSender against real receivers ----------------------------------------------------------------


def test_webhook_is_signed_and_verifies(receiver: Receiver, sender: WebhookSender, secret: str) -> None:
    data = {
        "id": "abc",
        "status": "succeeded",
        "duration": 11.0,
        "error": None,
        "result_path": "/v1/jobs/abc",
    }
    msg_id = sender.submit(receiver.url, "job.succeeded", data)
    assert msg_id is not None and msg_id.startswith("msg_")
    (hit,) = receiver.wait_for(1)
    assert sender.join(5)
    assert hit.headers["webhook-id"] == msg_id
    assert hit.headers["content-type"] == "application/json"
    payload = verify(secret, hit)
    assert payload["type"] == "job.succeeded" and payload["data"] == data
    assert str(payload["timestamp"]).endswith("Z")
    assert sender.delivered == 1 and sender.failed == 0
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(generate_secret()).verify(hit.body, hit.headers)


def test_webhook_retried_after_500_with_the_same_id(
    receiver: Receiver, sender: WebhookSender, secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.script = [(500, {})]
    with caplog.at_level(logging.WARNING, logger="gpu_transcribe_api.webhooks"):
        msg_id = sender.submit(receiver.url, "job.failed", {"id": "j", "status": "failed", "error": "x"})
        first, second = receiver.wait_for(2)
        assert sender.join(5)
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == msg_id
    assert verify(secret, first) == verify(secret, second)
    assert sender.delivered == 1
    failures = [r.getMessage() for r in caplog.records]
    assert len(failures) == 1, failures
    assert "HTTP 500" in failures[0] and "attempt 1 of 4" in failures[0]
    assert "t0ps3cret" not in failures[0], "the query (which may hold a token) is not logged"


def test_webhook_410_gets_exactly_one_attempt(receiver: Receiver, sender: WebhookSender) -> None:
    receiver.script = [(410, {})]
    sender.submit(receiver.url, "job.succeeded", {"id": "j"})
    assert sender.join(5)
    time.sleep(0.3)  # longer than any wait of the sender's schedule
    assert len(receiver.hits) == 1
    assert sender.failed == 1 and sender.delivered == 0


def test_webhook_gives_up_after_max_attempts(
    receiver: Receiver, sender: WebhookSender, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.default = 503
    with caplog.at_level(logging.WARNING, logger="gpu_transcribe_api.webhooks"):
        sender.submit(receiver.url, "job.succeeded", {"id": "j"})
        assert sender.join(10)
    time.sleep(0.3)
    assert len(receiver.hits) == 4
    assert len({h.headers["webhook-id"] for h in receiver.hits}) == 1
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4 and "giving up" in lines[-1]
    assert sender.failed == 1


def test_webhook_honours_retry_after(receiver: Receiver, sender: WebhookSender) -> None:
    receiver.script = [(429, {"Retry-After": "1"})]
    sender.submit(receiver.url, "job.succeeded", {"id": "j"})
    first, second = receiver.wait_for(2)
    assert second.at_s - first.at_s >= 0.95, "the sender waited the receiver's Retry-After"
    assert sender.join(5)


def test_webhook_to_a_closed_port_is_retried(secret: str, receiver: Receiver) -> None:
    """No answer at all (connection refused) counts as a failure; other callbacks are not held up."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/gone"
    sender = WebhookSender(
        secret, timeout_s=1.0, max_attempts=3, backoff_base_s=0.5, backoff_cap_s=1.0, allow_private=True
    )
    sender.start()
    try:
        sender.submit(dead, "job.failed", {"id": "a"})
        sender.submit(receiver.url, "job.succeeded", {"id": "b"})
        (hit,) = receiver.wait_for(1)
        assert verify(secret, hit)["data"] == {"id": "b"}
        assert sender.join(10)
        assert sender.failed == 1 and sender.delivered == 1
    finally:
        sender.close()


def test_webhook_to_a_private_address_is_refused_at_delivery(
    secret: str, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Without ``allow_private`` the delivery itself refuses a loopback receiver: nothing sent, no retry."""
    sender = WebhookSender(secret, timeout_s=1.0, max_attempts=3, backoff_base_s=0.05, backoff_cap_s=0.1)
    sender.start()
    try:
        with caplog.at_level(logging.WARNING, logger="gpu_transcribe_api.webhooks"):
            sender.submit(receiver.url, "job.succeeded", {"id": "j"})
            assert sender.join(5)
    finally:
        sender.close()
    assert receiver.hits == [] and sender.failed == 1
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "not a public address" in lines[0] and "not retried" in lines[0], lines


def test_webhook_connects_to_the_address_it_checked(
    secret: str, sender: WebhookSender, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name is resolved once per attempt and the request goes to that answer: a second answer
    (127.0.0.2, where nothing listens) is never asked for. The Host header keeps the name."""
    port = int(receiver.url.split(":")[2].split("/")[0])
    resolver = ScriptedResolver(monkeypatch, "callback.test", "127.0.0.1", "127.0.0.2")
    sender.submit(f"http://callback.test:{port}/hooks/jobs", "job.succeeded", {"id": "j"})
    (hit,) = receiver.wait_for(1)
    assert sender.join(5) and sender.delivered == 1
    assert resolver.calls == 1
    assert hit.headers["host"] == f"callback.test:{port}"
    assert verify(secret, hit)["data"] == {"id": "j"}


def test_webhook_to_a_name_that_rebinds_to_loopback_is_refused(
    secret: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked public when the job was submitted, the name answers loopback at delivery: refused then,
    nothing reaches the loopback receiver."""
    port = int(receiver.url.split(":")[2].split("/")[0])
    url = f"http://callback.test:{port}/hooks/jobs"
    resolver = ScriptedResolver(monkeypatch, "callback.test", "93.184.215.14", "127.0.0.1")
    assert check_callback_url(url) == url  # the submission's check sees a public address
    sender = WebhookSender(secret, timeout_s=1.0, max_attempts=3, backoff_base_s=0.05, backoff_cap_s=0.1)
    sender.start()
    try:
        sender.submit(url, "job.succeeded", {"id": "j"})
        assert sender.join(5)
    finally:
        sender.close()
    assert receiver.hits == [] and sender.failed == 1
    assert resolver.calls == 2


def test_webhook_redirect_is_not_followed(receiver: Receiver, sender: WebhookSender) -> None:
    """A 307 counts as a failed attempt (a redirect could lead to a private address): the next attempt goes
    to the same URL, never to the Location."""
    receiver.script = [(307, {"Location": "/elsewhere"})]
    sender.submit(receiver.url, "job.succeeded", {"id": "j"})
    first, second = receiver.wait_for(2)
    assert sender.join(5) and sender.delivered == 1
    assert first.path == second.path == "/hooks/jobs?token=t0ps3cret"
    assert first.headers["webhook-id"] == second.headers["webhook-id"]


def test_webhook_submit_never_blocks(secret: str, receiver: Receiver) -> None:
    """A full queue drops the callback at once instead of waiting; a closed sender drops it too."""
    sender = WebhookSender(secret, queue_size=2)  # not started: nothing drains the queue
    started = time.monotonic()
    ids = [sender.submit(receiver.url, "job.succeeded", {"n": n}) for n in range(5)]
    assert time.monotonic() - started < 0.5
    assert [i is not None for i in ids] == [True, True, False, False, False]
    assert sender.pending == 2 and sender.failed == 3
    sender.close(timeout_s=0.1)
    assert sender.submit(receiver.url, "job.succeeded", {}) is None


# -- /v1/jobs on a real server --------------------------------------------------------------------------

KEY = "test-key-jobs-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
JFK = "en_jfk.flac"
"""11 s of a speech: "And so my fellow Americans, ask not what your country can do for you..."."""
SHORT = "en_librispeech_61-70968-0000.flac"
"""4.9 s of read English: the cheapest real speech to queue twice."""


@contextlib.contextmanager
def serving(config: ServerConfig, engine: object) -> Iterator[tuple[str, Any]]:
    """The core's :func:`live_server` with ``engine`` already loaded; yields ``(base URL, app)`` once the
    model is ready."""
    with live_server(config, reuse_engine(engine)) as server:
        wait_until(lambda: server.state.ready, 30, "the model to be ready")
        yield server.url, server.app


def submit(url: str, clip: Path | bytes, name: str | None = None, **fields: str) -> httpx.Response:
    """``POST /v1/jobs`` with the clip (a path or bytes) as a file called ``name`` (default: its own)."""
    content = clip.read_bytes() if isinstance(clip, Path) else clip
    filename = name or (clip.name if isinstance(clip, Path) else "clip.flac")
    return httpx.post(
        f"{url}/v1/jobs", headers=AUTH, files={"file": (filename, content)}, data=fields, timeout=60
    )


def poll(url: str, job_id: str, timeout_s: float = 240.0) -> dict[str, object]:
    """GET the job until it is finished; return the last answer."""
    answer: dict[str, object] = {}

    def finished() -> bool:
        nonlocal answer
        response = httpx.get(f"{url}/v1/jobs/{job_id}", headers=AUTH, timeout=30)
        assert response.status_code == 200, response.text
        answer = response.json()
        if answer["status"] in ("succeeded", "failed"):
            return True
        time.sleep(0.2)  # a poll every 0.2 s, not every 10 ms: the server shares 2 cores with the engine
        return False

    wait_until(finished, timeout_s, f"job {job_id} to finish")
    return answer


@pytest.fixture(scope="module")
def engine() -> object:
    """whisper-base on the CPU, loaded once for the module."""
    model = find_test_model()
    if model is None:
        pytest.skip("no test model: set GPU_TRANSCRIBE_TEST_MODEL or run `make offline-model`")
    from gpu_transcribe_engine.engine import WhisperEngine

    return WhisperEngine.load(str(model), device="cpu")


@pytest.mark.slow
def test_job_succeeds_with_a_signed_callback_retried_after_500(
    engine: object, receiver: Receiver, secret: str, tmp_path: Path
) -> None:
    """A job runs to ``succeeded``; its result renders as json and srt; the receiver's first answer (500) is
    retried with the same webhook-id; the callback verifies; the upload is gone."""
    receiver.script = [(500, {})]
    config = ServerConfig(
        api_key=KEY,
        device="cpu",
        jobs_dir=tmp_path / "jobs",
        webhook_secret=secret,
        allow_private_callbacks=True,  # the receiver is on loopback
    )
    with serving(config, engine) as (url, app):
        response = submit(
            url, clip_path(JFK), language="en", response_format="srt", callback_url=receiver.url
        )
        assert response.status_code == 202, response.text
        body = response.json()
        assert set(body) == {"id", "status"} and body["status"] == "queued"
        job_id = str(body["id"])
        assert response.headers["location"] == f"/v1/jobs/{job_id}"

        done = poll(url, job_id)
        assert done["status"] == "succeeded", done
        assert done["error"] is None and done["duration"] == pytest.approx(11.0, abs=0.1)
        assert str(done["created_at"]) <= str(done["finished_at"])
        srt = str(done["result"])
        assert done["response_format"] == "srt" and srt.startswith("1\n00:00:00,")
        assert re.search(r"ask not what your country can do for you", srt, re.IGNORECASE), srt

        as_json = httpx.get(f"{url}/v1/jobs/{job_id}?response_format=json", headers=AUTH).json()
        text = as_json["result"]["text"]
        assert "ask not what your country" in text.lower()
        transcript = app.state.jobs.store.result(job_id)
        assert as_json["result"] == openai_body(transcript, "json", "transcribe")
        assert srt == openai_body(transcript, "srt", "transcribe")
        assert not list((tmp_path / "jobs" / job_id).glob("audio*")), "the upload is removed"

        first, second = receiver.wait_for(2)
        assert first.headers["webhook-id"] == second.headers["webhook-id"]
        payload = standardwebhooks.Webhook(secret).verify(second.body, second.headers)
        assert payload["type"] == "job.succeeded"
        assert payload["data"] == {
            "id": job_id,
            "status": "succeeded",
            "duration": done["duration"],
            "error": None,
            "result_path": f"/v1/jobs/{job_id}",
        }
        again = httpx.get(f"{url}{payload['data']['result_path']}", headers=AUTH)
        assert again.json()["result"] == srt
        assert app.state.jobs.sender.join(5)
        metrics = httpx.get(f"{url}/metrics", headers=AUTH).text
        assert 'gpu_transcribe_jobs_finished_total{status="succeeded"} 1.0' in metrics
        assert 'gpu_transcribe_job_callbacks_total{outcome="delivered"} 1.0' in metrics
        assert "gpu_transcribe_jobs_active 0.0" in metrics


@pytest.mark.slow
def test_failed_job_callback_to_410_once_and_expiry(
    engine: object, receiver: Receiver, tmp_path: Path
) -> None:
    """Text named ``.mp3`` fails with one line naming the file; its callback, signed with the secret the
    server wrote to ``--webhook-secret-file``, reaches a 410 receiver exactly once; after ``job_ttl_s`` the
    job answers 404 and its directory is gone."""
    receiver.script = [(410, {})]
    secret_file = tmp_path / "conf" / "webhook-secret"
    jobs_dir = tmp_path / "jobs"
    config = ServerConfig(
        api_key=KEY,
        device="cpu",
        jobs_dir=jobs_dir,
        job_ttl_s=4,
        webhook_secret_file=secret_file,
        allow_private_callbacks=True,
    )
    with serving(config, engine) as (url, app):
        response = submit(url, b"this is not audio\n", name="notes.mp3", callback_url=receiver.url)
        assert response.status_code == 202, response.text
        job_id = str(response.json()["id"])
        done = poll(url, job_id, timeout_s=30)
        assert done["status"] == "failed" and done["result"] is None
        error = str(done["error"])
        assert "notes.mp3" in error and "\n" not in error and str(jobs_dir) not in error

        (hit,) = receiver.wait_for(1)
        secret = secret_file.read_text().strip()
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        payload = standardwebhooks.Webhook(secret).verify(hit.body, hit.headers)
        assert payload["type"] == "job.failed" and payload["data"]["error"] == error
        assert app.state.jobs.sender.join(5)
        time.sleep(0.5)
        assert len(receiver.hits) == 1, "a 410 is not retried"

        wait_until(lambda: not (jobs_dir / job_id).exists(), 30, "the sweeper to remove the job")
        gone = httpx.get(f"{url}/v1/jobs/{job_id}", headers=AUTH)
        assert gone.status_code == 404
        assert gone.json()["error"]["code"] == "job_not_found"


@pytest.mark.slow
def test_unknown_job_bad_fields_and_the_key(engine: object, tmp_path: Path) -> None:
    """404 in OpenAI's shape for an unknown id; 400 naming the field for a bad callback_url,
    response_format or language; 401 without the key."""
    config = ServerConfig(api_key=KEY, device="cpu", jobs_dir=tmp_path / "jobs")
    with serving(config, engine) as (url, _app):
        missing = httpx.get(f"{url}/v1/jobs/AAAAAAAAAAAAAAAAAAAAAA", headers=AUTH)
        assert missing.status_code == 404
        error = missing.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error" and error["code"] == "job_not_found"
        assert httpx.get(f"{url}/v1/jobs/..%2F..%2Fetc", headers=AUTH).status_code == 404

        audio = clip_path(SHORT)
        for fields, param in (
            ({"callback_url": "ftp://example.org/x"}, "callback_url"),
            ({"callback_url": "http://169.254.169.254/latest"}, "callback_url"),
            ({"callback_url": "http://2852039166/latest"}, "callback_url"),  # the same, in decimal
            ({"response_format": "docx"}, "response_format"),
            ({"language": "klingon"}, "language"),
        ):
            bad = submit(url, audio, **fields)
            assert bad.status_code == 400, (fields, bad.text)
            assert bad.json()["error"]["param"] == param
        jobs = [p for p in (tmp_path / "jobs").iterdir() if p.is_dir()]
        assert jobs == [], "no job was created for a bad request"

        assert httpx.get(f"{url}/v1/jobs/AAAAAAAAAAAAAAAAAAAAAA").status_code == 401
        no_key = httpx.post(f"{url}/v1/jobs", files={"file": ("a.flac", audio.read_bytes())})
        assert no_key.status_code == 401


@pytest.mark.slow
def test_jobs_share_the_queue_and_batches_of_synchronous_requests(engine: object, tmp_path: Path) -> None:
    """With ``max_queue`` 2: one job in the engine, then a job and a synchronous request queued; a third job
    is refused with 429 and ``Retry-After``. Once the engine runs, the queued job and the synchronous request
    are transcribed in one engine call (the same batches), and both jobs succeed."""
    gated = GatedEngine(engine)
    config = ServerConfig(api_key=KEY, device="cpu", jobs_dir=tmp_path / "jobs", max_queue=2)
    with serving(config, gated) as (url, app):
        scheduler = app.state.server.scheduler
        first = submit(url, clip_path(SHORT), name="job-1.flac", language="en").json()["id"]
        wait_until(gated.entered.is_set, 30, "the first job to reach the engine")
        second = submit(url, clip_path(SHORT), name="job-2.flac", language="en").json()["id"]
        wait_until(lambda: scheduler.queue_depth == 1, 30, "the second job to be queued")
        answers: list[httpx.Response] = []

        def synchronous() -> None:
            answers.append(
                httpx.post(
                    f"{url}/v1/audio/transcriptions",
                    headers=AUTH,
                    files={"file": ("sync.flac", clip_path(SHORT).read_bytes())},
                    data={"model": "whisper-1", "language": "en"},
                    timeout=240,
                )
            )

        thread = threading.Thread(target=synchronous)
        thread.start()
        wait_until(lambda: scheduler.queue_depth == 2, 30, "the synchronous request to be queued")
        refused = submit(url, clip_path(SHORT), name="job-3.flac", language="en")
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        gated.gate.set()
        thread.join(240)
        assert answers and answers[0].status_code == 200, answers
        for job_id in (first, second):
            done = poll(url, str(job_id))
            assert done["status"] == "succeeded", done
            assert done["response_format"] == "json"
            assert done["result"] == answers[0].json(), "the same audio gives the same text either way"
    assert gated.calls == [["job-1.flac"], ["job-2.flac", "sync.flac"]]
    assert len([p for p in (tmp_path / "jobs").iterdir() if p.is_dir()]) == 2


@pytest.mark.slow
def test_shutdown_fails_a_running_job_and_sends_its_callback(
    engine: object, receiver: Receiver, secret: str, tmp_path: Path
) -> None:
    """A job still in the engine when the server stops is recorded as failed (kept in ``jobs_dir``), and
    its ``job.failed`` callback is delivered before the server exits."""
    gated = GatedEngine(engine)
    jobs_dir = tmp_path / "jobs"
    config = ServerConfig(
        api_key=KEY, device="cpu", jobs_dir=jobs_dir, webhook_secret=secret, allow_private_callbacks=True
    )
    try:
        with serving(config, gated) as (url, app):
            scheduler = app.state.server.scheduler
            job_id = str(submit(url, clip_path(SHORT), callback_url=receiver.url).json()["id"])
            wait_until(gated.entered.is_set, 30, "the job to reach the engine")
    finally:
        gated.gate.set()  # let the held engine call finish before the next test uses the engine
        wait_until(lambda: scheduler.busy == 0, 60, "the engine call to end")
    (hit,) = receiver.wait_for(1)
    payload = standardwebhooks.Webhook(secret).verify(hit.body, hit.headers)
    assert payload["type"] == "job.failed" and payload["data"]["id"] == job_id
    record = JobStore(jobs_dir).get(job_id)
    assert record is not None and record.status == "failed"
    assert record.error == payload["data"]["error"] and "stopped" in str(record.error)
    assert not list((jobs_dir / job_id).glob("audio*"))


@pytest.mark.slow
def test_jobs_waiting_are_bounded_by_count_and_bytes(engine: object, tmp_path: Path) -> None:
    """With ``max_pending_jobs`` 2 and ``max_pending_bytes`` 2.5 uploads: while the first job holds the
    engine, an upload of two more clips' size is refused (bytes), a second job accepted and a third refused
    (count), each 429 in OpenAI's shape with ``Retry-After``, nothing stored for them; once the two finish,
    a job is accepted again."""
    gated = GatedEngine(engine)
    clip = clip_path(SHORT).read_bytes()
    jobs_dir = tmp_path / "jobs"
    config = ServerConfig(
        api_key=KEY,
        device="cpu",
        jobs_dir=jobs_dir,
        max_upload_bytes=5 * len(clip) // 2,
        max_pending_jobs=2,
        max_pending_bytes=5 * len(clip) // 2,
        min_free_disk_bytes=0,
    )
    with serving(config, gated) as (url, _app):
        first = submit(url, clip, name="job-1.flac", language="en")
        assert first.status_code == 202, first.text
        wait_until(gated.entered.is_set, 30, "the first job to reach the engine")
        too_big = submit(url, clip + clip, name="twice.flac", language="en")
        second = submit(url, clip, name="job-2.flac", language="en")
        assert second.status_code == 202, second.text
        too_many = submit(url, clip, name="job-3.flac", language="en")
        for refused, what in ((too_big, "--max-pending-gb"), (too_many, "--max-pending-jobs")):
            assert refused.status_code == 429, refused.text
            assert int(refused.headers["retry-after"]) >= 1
            error = refused.json()["error"]
            assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_error"
            assert what in error["message"], error
        assert len([p for p in jobs_dir.iterdir() if p.is_dir()]) == 2, "nothing stored for the refused"
        gated.gate.set()
        for job in (first, second):
            assert poll(url, str(job.json()["id"]))["status"] == "succeeded"
        again = submit(url, clip, name="job-4.flac", language="en")
        assert again.status_code == 202, again.text
        assert poll(url, str(again.json()["id"]))["status"] == "succeeded"


@pytest.mark.slow
def test_a_job_that_would_fill_the_disk_is_refused(engine: object, tmp_path: Path) -> None:
    """When storing the upload would leave less free space than ``min_free_disk_bytes`` in the jobs
    directory, the job is refused with 507 in OpenAI's shape and nothing is stored."""
    jobs_dir = tmp_path / "jobs"
    jobs_dir.mkdir()
    floor = shutil.disk_usage(jobs_dir).free  # any upload would take the free space under it
    config = ServerConfig(api_key=KEY, device="cpu", jobs_dir=jobs_dir, min_free_disk_bytes=floor)
    with serving(config, engine) as (url, _app):
        refused = submit(url, clip_path(SHORT), language="en")
        assert refused.status_code == 507, refused.text
        error = refused.json()["error"]
        assert error["code"] == "insufficient_storage" and error["type"] == "server_error"
        assert "disk" in error["message"]
        assert [p for p in jobs_dir.iterdir() if p.is_dir()] == []


def test_pinned_transport_keeps_the_name_for_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over https the request goes to the checked address while TLS gets the URL's name: as SNI, and for
    the certificate check (the certificate names ``callback.test`` only, not 127.0.0.1); Host keeps it."""
    resolver = ScriptedResolver(monkeypatch, "callback.test", "127.0.0.1")
    with TlsReceiver(tmp_path, "callback.test") as receiver:
        transport = PinnedTransport(allow_private=True, verify=receiver.client_context())
        with httpx.Client(transport=transport) as client:
            response = client.post(f"https://callback.test:{receiver.port}/hook", content=b"{}")
    assert response.status_code == 204
    assert receiver.sni == ["callback.test"] and receiver.hosts == [f"callback.test:{receiver.port}"]
    assert resolver.calls == 1


@pytest.mark.slow
def test_a_job_keeps_words_prompt_and_subtitle_layout(engine: Any, tmp_path: Path) -> None:
    """A job with timestamp_granularities[]=word, a prompt and line limits: its verbose_json has the engine's
    words for the same options, and its srt the laid-out cues (both rebuilt from the stored result)."""
    from gpu_transcribe_engine.options import TranscribeOptions
    from gpu_transcribe_engine.writers import render, sanitize

    prompt = "A wizard behind the curtain."
    options = TranscribeOptions(
        language="en", word_timestamps=True, prompt=prompt, max_line_width=20, max_line_count=1
    )
    reference = sanitize(engine.transcribe_file(clip_path(SHORT), options))
    assert any(s.words for s in reference.segments)
    config = ServerConfig(api_key=KEY, device="cpu", jobs_dir=tmp_path / "jobs")
    with serving(config, engine) as (url, _app):
        fields = {"language": "en", "prompt": prompt, "max_line_width": "20", "max_line_count": "1"}
        response = httpx.post(
            f"{url}/v1/jobs",
            headers=AUTH,
            files={"file": (SHORT, clip_path(SHORT).read_bytes())},
            data={**fields, "response_format": "verbose_json", "timestamp_granularities[]": "word"},
            timeout=60,
        )
        assert response.status_code == 202, response.text
        job_id = str(response.json()["id"])
        done = poll(url, job_id)
        assert done["status"] == "succeeded", done
        verbose: Any = done["result"]
        srt = httpx.get(f"{url}/v1/jobs/{job_id}?response_format=srt", headers=AUTH).json()["result"]
        too_long = submit(url, clip_path(SHORT), language="en", max_line_width="0")
    expected = [
        {"word": w.word.strip(), "start": w.start_s, "end": w.end_s}
        for s in reference.segments
        for w in s.words
    ]
    assert verbose["words"] == expected
    assert srt == render(reference, "srt")
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "max_line_width"
