"""Async jobs (issue 11): the job store on disk, signed webhooks to real loopback receivers, and the
``/v1/jobs`` routes on a real uvicorn with a real Whisper model.

Receivers are ``http.server`` servers on 127.0.0.1 in threads; signatures are checked with the
``standardwebhooks`` library, as a receiver would.
"""

from __future__ import annotations

import io
import json
import logging
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import standardwebhooks

from remote.options import TranscribeOptions
from remote.server.jobs import RESTART_ERROR, JobStore, transcript_from_dict
from remote.server.webhooks import (
    WebhookSender,
    check_callback_url,
    check_secret,
    generate_secret,
    load_or_create_secret,
    retry_after_s,
)
from remote.transcript import Segment, Timings, Transcript

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
                rec.hits.append(Hit(time.monotonic(), {k.lower(): v for k, v in self.headers.items()}, body))
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
    """A started sender with a fast schedule (waits of at most 0.05, 0.1, ... s) and 2 s per attempt."""
    s = WebhookSender(secret, timeout_s=2.0, max_attempts=4, backoff_base_s=0.05, backoff_cap_s=0.2)
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
    store = JobStore(tmp_path, ttl_s=0.3)
    done = store.create(io.BytesIO(b"x"), filename="a.wav")
    store.mark_succeeded(done.id, make_transcript())
    running = store.create(io.BytesIO(b"y"), filename="b.wav")
    store.mark_running(running.id)
    assert store.get(done.id) is not None
    time.sleep(0.4)
    assert store.get(done.id) is None, "an expired job reads as unknown even before a sweep"
    assert not (tmp_path / done.id).exists()
    assert store.get(running.id) is not None, "unfinished jobs never expire"

    store.mark_failed(running.id, "boom")
    store.start_sweeper(interval_s=0.05)
    try:
        deadline = time.monotonic() + 5
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
    (tmp_path / "Zm9vYmFyYmF6cXV4cXV1eA").mkdir()  # an id-like directory without a record

    second = JobStore(tmp_path, ttl_s=3600)
    assert second.result(done.id) == make_transcript()
    record = second.get(left.id)
    assert record is not None and record.status == "failed" and record.error == RESTART_ERROR
    assert second.audio_path(left.id) is None
    assert not (tmp_path / "Zm9vYmFyYmF6cXV4cXV1eA").exists()


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


def test_callback_url_must_be_http_with_a_host() -> None:
    assert check_callback_url(" https://example.org/hook ") == "https://example.org/hook"
    assert check_callback_url("http://127.0.0.1:8080/x?y=1") == "http://127.0.0.1:8080/x?y=1"
    for bad in ("ftp://example.org/x", "file:///etc/passwd", "example.org/hook", "http:///x", ""):
        with pytest.raises(ValueError, match="callback_url"):
            check_callback_url(bad)
    with pytest.raises(ValueError, match="link-local"):
        check_callback_url("http://169.254.169.254/latest/meta-data/")


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
    with caplog.at_level(logging.WARNING, logger="remote.server.webhooks"):
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
    with caplog.at_level(logging.WARNING, logger="remote.server.webhooks"):
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
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/gone"
    sender = WebhookSender(secret, timeout_s=1.0, max_attempts=3, backoff_base_s=0.5, backoff_cap_s=1.0)
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
