"""``gpu-transcribe serve`` for real: uvicorn on loopback, the real whisper-base engine, real speech, and the
official ``openai`` client (``tests/fixtures/server.py`` runs the server).

- Every ``response_format`` through the openai client equals what the engine gives for the same clip
  (``srt``/``vtt`` byte for byte as ``run --local`` writes them), and concurrent requests share batches.
- ``/transcribe``, ``/v1/audio/translations``, ``/health`` (503 while the model loads, then 200) and
  ``/metrics``.
- A full queue answers 429 with ``Retry-After``; a client that leaves while its request waits drops it.
- The key (401), the upload limit (413), a text file named ``.mp3`` (400), an unknown timestamp
  granularity (400); no upload is left on disk; each error is one log line.
- ``verbose_json`` with word timestamps and a prompt through the openai client equals the engine's
  transcript with the same options (what ``run --local --word-timestamps --prompt`` writes); readable
  subtitles and ``/transcribe``'s words likewise.
- The idle and lifetime power-off run their command; a non-loopback bind without a key is refused; the
  ``serve`` command end to end in a process; ``--help`` imports no server library.

The engine is loaded once for the module; each test's server reuses it. Tests that run the model are
marked ``slow``.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from typer.testing import CliRunner

from bench.fixtures import clip_path, find_test_model
from gpu_transcribe_api.config import ServerConfig
from gpu_transcribe_api.formats import openai_body
from gpu_transcribe_engine.options import TranscribeOptions
from gpu_transcribe_engine.writers import render, sanitize
from tests.fixtures.server import GatedEngine, live_server, reuse_engine, wait_until

CLIP = "en_librispeech_61-70968-0000.flac"
"""4.9 s of read English: one Whisper window."""
KEY = "test-key-0123456789"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def engine() -> Any:
    """whisper-base on the CPU, loaded once for the module."""
    model = find_test_model()
    if model is None:
        pytest.skip("no test model: set GPU_TRANSCRIBE_TEST_MODEL or run `make offline-model`")
    from gpu_transcribe_engine.engine import WhisperEngine

    return WhisperEngine.load(str(model), device="cpu")


@pytest.fixture(scope="module")
def speech() -> Path:
    """:data:`CLIP`, the shortest real speech at hand that decodes quickly (cut mid-word, Whisper falls back
    through every temperature and takes far longer)."""
    return clip_path(CLIP)


def client(port: int, key: str = KEY) -> openai.OpenAI:
    """The official client against the live server; no retries, so each call is one request."""
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=120)


def _multipart_stream(field: str, filename: str, chunks: int, chunk_bytes: int) -> Iterator[bytes]:
    """A valid multipart body (boundary ``b``) with one file part of ``chunks`` x ``chunk_bytes`` zeros,
    sent chunked (no Content-Length)."""
    yield (
        f'--b\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    for _ in range(chunks):
        yield bytes(chunk_bytes)
    yield b"\r\n--b--\r\n"


def metric(text: str, name: str) -> float:
    """The value of one sample line (``name`` with its labels, as exposed) in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics:\n{text}")


@pytest.mark.slow
def test_openai_formats_match_the_engine_and_concurrent_requests_share_batches(
    engine: Any, tmp_path: Path
) -> None:
    """Five requests at once, one per response_format: each answer is the engine's transcript of the clip
    in that format, and /metrics shows a batch decoded for several requests."""
    reference = engine.transcribe_file(clip_path(CLIP), TranscribeOptions(language="en"))
    clean = sanitize(reference)
    assert clean.text, "the reference transcript is empty"
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    config = ServerConfig(upload_dir=uploads, batch_wait_s=0.5)
    formats = ("json", "text", "srt", "vtt", "verbose_json")
    answers: dict[str, Any] = {}
    with live_server(config, reuse_engine(engine)) as server:
        api = client(server.port)

        def ask(fmt: str) -> None:
            with clip_path(CLIP).open("rb") as audio:
                answers[fmt] = api.audio.transcriptions.create(
                    model="whisper-1",
                    file=audio,
                    language="en",
                    response_format=fmt,  # type: ignore[arg-type]
                    timestamp_granularities=["segment"] if fmt == "verbose_json" else openai.omit,
                )

        threads = [threading.Thread(target=ask, args=(fmt,)) for fmt in formats]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        metrics = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    assert set(answers) == set(formats)
    assert answers["json"].text == clean.text
    assert answers["text"] == clean.text + "\n"
    assert answers["srt"] == render(reference, "srt")
    assert answers["vtt"] == render(reference, "vtt")
    verbose = answers["verbose_json"]
    assert verbose.language == "english"
    assert verbose.duration == pytest.approx(reference.duration_s, abs=0.001)
    assert [(s.start, s.end, s.text) for s in verbose.segments] == [
        (s.start_s, s.end_s, s.text) for s in clean.segments
    ]
    assert (
        verbose.model_dump()["segments"] == openai_body(reference, "verbose_json", "transcribe")["segments"]
    )
    assert list(uploads.iterdir()) == [], "an upload was left on disk"
    count = metric(metrics, "gpu_transcribe_batch_requests_count")
    single = metric(metrics, 'gpu_transcribe_batch_requests_bucket{le="1.0"}')
    assert count > single, f"no batch held windows of more than one request:\n{metrics}"
    assert (
        metric(metrics, 'gpu_transcribe_requests_total{route="/v1/audio/transcriptions",status="200"}') == 5
    )


@pytest.mark.slow
# openai marks audio.translations.create deprecated (OpenAI's own API still serves it, and clients call it).
@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
def test_transcribe_and_translation_routes_health_and_metrics(engine: Any, speech: Path) -> None:
    """/transcribe answers text, duration, language, model, timings and segments; /v1/audio/translations
    answers with the task (English into English: Swedish costs whisper-base 20 s here); /health and
    /metrics count them."""
    with live_server(ServerConfig(), reuse_engine(engine)) as server:
        with speech.open("rb") as audio:
            answer = httpx.post(
                f"{server.url}/transcribe",
                files={"audio": ("clip.flac", audio)},
                data={"language": "en"},
                timeout=120,
            )
        with speech.open("rb") as audio:
            translated = client(server.port).audio.translations.create(
                model="whisper-1", file=audio, response_format="verbose_json", extra_body={"language": "en"}
            )
        health = httpx.get(f"{server.url}/health")
        metrics = httpx.get(f"{server.url}/metrics").text
    assert translated.task == "translate"  # type: ignore[attr-defined]
    assert translated.language == "english"  # type: ignore[attr-defined]
    assert "wizard" in translated.text.lower() and translated.segments  # type: ignore[attr-defined]
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {
        "transcription", "duration", "language", "model", "processing_time", "gpu_memory_used", "segments"
    }  # fmt: skip
    assert "confused" in body["transcription"].lower()
    assert body["duration"] == pytest.approx(4.905, abs=0.01)
    assert body["language"] == "en"
    assert body["model"] == ServerConfig().model
    assert body["processing_time"] > 0
    assert body["gpu_memory_used"] is None  # CPU
    assert body["segments"] and {"start", "end", "text"} == set(body["segments"][0])
    assert health.status_code == 200
    facts = health.json()
    assert facts["status"] == "ok" and facts["model_loaded"] is True and facts["device"] == "cpu"
    assert facts["requests_served"] == 2 and facts["queue_depth"] == 0
    assert facts["gpu_available"] is False and facts["memory_usage"]["rss_bytes"] > 0
    assert facts["idle_s"] >= 0 and facts["uptime_s"] > 0
    assert metric(metrics, 'gpu_transcribe_requests_total{route="/transcribe",status="200"}') == 1
    assert metric(metrics, "gpu_transcribe_audio_seconds_total") == pytest.approx(2 * 4.905, abs=0.01)
    assert metric(metrics, "gpu_transcribe_transcription_seconds_count") == 2
    assert metric(metrics, "gpu_transcribe_batch_windows_count") >= 1
    assert metric(metrics, "gpu_transcribe_queue_depth") == 0


@pytest.mark.slow
def test_transcribe_takes_the_audio_as_file_too(engine: Any, speech: Path) -> None:
    """/transcribe takes OpenAI's field name ``file`` as well as ``audio``; neither, or both, is a 400 naming
    the field."""
    with live_server(ServerConfig(), reuse_engine(engine)) as server:
        with speech.open("rb") as audio:
            as_file = httpx.post(
                f"{server.url}/transcribe",
                files={"file": ("clip.flac", audio)},
                data={"language": "en"},
                timeout=120,
            )
        neither = httpx.post(f"{server.url}/transcribe", data={"language": "en"}, timeout=30)
        both = httpx.post(
            f"{server.url}/transcribe",
            files={"audio": ("a.flac", b"x"), "file": ("b.flac", b"x")},
            timeout=30,
        )
    assert as_file.status_code == 200, as_file.text
    assert "confused" in as_file.json()["transcription"].lower()
    assert neither.status_code == 400, neither.text
    assert neither.json()["error"]["param"] == "audio"
    assert neither.json()["error"]["message"].startswith("audio: this field is required")
    assert both.status_code == 400 and both.json()["error"]["param"] == "file", both.text


@pytest.mark.slow
def test_health_is_503_until_the_model_is_loaded(engine: Any, speech: Path) -> None:
    """While the loader runs, /health and the API answer 503 (the API with Retry-After); then 200."""
    release = threading.Event()

    def slow_loader(_config: ServerConfig) -> Any:
        release.wait(30)
        return engine

    with live_server(ServerConfig(), slow_loader) as server:
        loading = httpx.get(f"{server.url}/health")
        with speech.open("rb") as audio, pytest.raises(openai.InternalServerError) as refused:
            client(server.port).audio.transcriptions.create(model="whisper-1", file=audio)
        assert httpx.get(f"{server.url}/livez").status_code == 200
        release.set()
        wait_until(lambda: httpx.get(f"{server.url}/health").status_code == 200, what="/health 200")
        loaded = httpx.get(f"{server.url}/health").json()
    assert loading.status_code == 503
    assert loading.json()["status"] == "loading" and loading.json()["model_loaded"] is False
    assert refused.value.status_code == 503
    assert refused.value.response.headers["retry-after"]
    assert "loading" in refused.value.message
    assert loaded["model_loaded"] is True


@pytest.mark.slow
def test_full_queue_is_429_with_retry_after_and_calls_are_capped(engine: Any, speech: Path) -> None:
    """With the engine busy and two requests queued (max_queue 2), the next is refused: 429, Retry-After,
    OpenAI's error shape (the client raises RateLimitError). The queued two (4.9 s each) are then handed
    to the engine in separate calls, as max_call_audio_s (6 s) caps a call; all three are answered."""
    gated = GatedEngine(engine)
    results: list[Any] = []
    config = ServerConfig(max_queue=2, max_call_audio_s=6.0)
    with live_server(config, reuse_engine(gated)) as server:
        api = client(server.port)

        def ask(name: str) -> None:
            with speech.open("rb") as audio:
                results.append(
                    api.audio.transcriptions.create(model="whisper-1", file=(name, audio), language="en")
                )

        first = threading.Thread(target=ask, args=("first.flac",))
        first.start()
        assert gated.entered.wait(30), "the first request never reached the engine"
        queued = [threading.Thread(target=ask, args=(f"queued-{n}.flac",)) for n in (1, 2)]
        for thread in queued:
            thread.start()
        wait_until(lambda: server.state.queue_depth == 2, what="two queued requests")
        with speech.open("rb") as audio, pytest.raises(openai.RateLimitError) as refused:
            api.audio.transcriptions.create(model="whisper-1", file=audio)
        gated.gate.set()
        for thread in (first, *queued):
            thread.join(120)
    assert int(refused.value.response.headers["retry-after"]) >= 1
    error = refused.value.response.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and "queue is full" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    assert len(results) == 3 and all("confused" in r.text.lower() for r in results)
    assert [len(call) for call in gated.calls] == [1, 1, 1], gated.calls


@pytest.mark.slow
def test_a_client_that_disconnects_while_waiting_is_dropped(engine: Any, speech: Path) -> None:
    """A request whose client closes the connection while it waits in the queue is never transcribed."""
    gated = GatedEngine(engine)
    with live_server(ServerConfig(), reuse_engine(gated)) as server:
        api = client(server.port)
        first = threading.Thread(
            target=lambda: api.audio.transcriptions.create(model="whisper-1", file=speech.open("rb"))
        )
        first.start()
        assert gated.entered.wait(30)
        with speech.open("rb") as audio, pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{server.url}/v1/audio/transcriptions",
                files={"file": ("leaver.wav", audio)},
                data={"model": "whisper-1"},
                timeout=httpx.Timeout(30, read=1.0),
            )
        wait_until(  # not just an empty queue: under load the upload may still be decoding at this point
            lambda: (
                metric(httpx.get(f"{server.url}/metrics").text, "gpu_transcribe_dropped_requests_total") == 1
            ),
            timeout_s=30,
            what="the request to be dropped",
        )
        gated.gate.set()
        first.join(120)
        metrics = httpx.get(f"{server.url}/metrics").text
        served = server.state.requests_served
    assert gated.calls == [[CLIP]], "the abandoned request reached the engine"
    assert served == 1
    assert metric(metrics, "gpu_transcribe_dropped_requests_total") == 1


@pytest.mark.slow
def test_key_upload_limit_and_bad_requests(
    engine: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """401 without or with a wrong key (AuthenticationError), /health open; 413 over the upload limit;
    400 for a text file named .mp3 (naming it) and for an unknown granularity; every error one log line, every
    upload removed."""
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    not_audio = tmp_path / "notes.mp3"
    not_audio.write_text("these are meeting notes, not a recording\n")
    config = ServerConfig(api_key=KEY, max_upload_bytes=200_000, upload_dir=uploads)
    caplog.set_level(logging.WARNING, logger="gpu_transcribe_api")
    with live_server(config, reuse_engine(engine)) as server:
        wait_until(lambda: server.state.ready, what="the engine")
        no_key = httpx.post(f"{server.url}/v1/audio/transcriptions", files={"file": ("a.mp3", b"x")})
        with pytest.raises(openai.AuthenticationError) as wrong_key:
            client(server.port, key="wrong").audio.transcriptions.create(model="whisper-1", file=not_audio)
        public = httpx.get(f"{server.url}/health")
        metrics_without_key = httpx.get(f"{server.url}/metrics")
        api = client(server.port)
        with pytest.raises(openai.APIStatusError) as too_large:
            api.audio.transcriptions.create(model="whisper-1", file=clip_path("en_jfk.flac"))  # 1.1 MB
        chunked = httpx.post(  # no Content-Length: the guard counts the chunks as they are read
            f"{server.url}/transcribe",
            content=_multipart_stream("audio", "big.wav", chunks=8, chunk_bytes=65_536),
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "multipart/form-data; boundary=b"},
        )
        with pytest.raises(openai.BadRequestError) as bad_audio:
            api.audio.transcriptions.create(model="whisper-1", file=not_audio)
        with pytest.raises(openai.BadRequestError) as words:
            api.audio.transcriptions.create(
                model="whisper-1",
                file=not_audio,
                response_format="verbose_json",
                timestamp_granularities=["character"],  # type: ignore[list-item]
            )
        no_file = httpx.post(
            f"{server.url}/v1/audio/transcriptions",
            data={"model": "whisper-1"},
            headers={"Authorization": f"Bearer {KEY}"},
        )
    assert no_key.status_code == 401
    assert no_key.json()["error"]["code"] == "invalid_api_key"
    assert no_key.headers["www-authenticate"] == "Bearer"
    assert wrong_key.value.status_code == 401
    assert public.status_code == 200
    assert metrics_without_key.status_code == 401
    assert too_large.value.status_code == 413
    assert "--max-upload-mb" in too_large.value.message
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "upload_too_large"
    assert "notes.mp3" in bad_audio.value.message and "not an audio file" in bad_audio.value.message
    assert bad_audio.value.param == "file"
    assert "'character' is not one of segment, word" in words.value.message
    assert no_file.status_code == 400
    assert no_file.json()["error"] == {
        "message": "file: this field is required",
        "type": "invalid_request_error",
        "param": "file",
        "code": None,
    }
    assert list(uploads.iterdir()) == []
    errors = [r.getMessage() for r in caplog.records if r.name == "gpu_transcribe_api"]
    assert len(errors) == 8, errors  # 401 x 3 (one /metrics), 413 x 2, 400 audio, 400 word, 400 no file
    assert all("\n" not in line for line in errors)


@pytest.mark.slow
def test_idle_and_lifetime_power_off_run_the_command(engine: Any, tmp_path: Path) -> None:
    """With --idle-stop-min and --max-lifetime-h (in seconds here) the power-off command runs, with the
    reason in its environment; the command comes from $GPU_TRANSCRIBE_POWEROFF_COMMAND."""
    marks: dict[str, Path] = {}
    for kind, limits in (("idle", {"idle_stop_s": 0.5}), ("lifetime", {"max_lifetime_s": 1.0})):
        marks[kind] = tmp_path / f"{kind}.off"
        command = f"sh -c 'echo \"$GPU_TRANSCRIBE_POWEROFF_REASON\" > {marks[kind]}'"
        config = ServerConfig(**limits).with_env({"GPU_TRANSCRIBE_POWEROFF_COMMAND": command})  # type: ignore[arg-type]
        with live_server(config, reuse_engine(engine)):
            wait_until(marks[kind].exists, timeout_s=10, what=f"the {kind} power-off")
    assert marks["idle"].read_text().startswith("idle: no request for")
    assert marks["lifetime"].read_text().startswith("max-lifetime: up")


@pytest.mark.slow
def test_the_serve_command_end_to_end(tmp_path: Path) -> None:
    """`gpu-transcribe serve` as a process: key from --api-key-file, a transcription through the openai
    client, the idle power-off after --idle-stop-min (0.1 min), a clean shutdown on SIGTERM."""
    model = find_test_model()
    if model is None:
        pytest.skip("no test model: set GPU_TRANSCRIBE_TEST_MODEL or run `make offline-model`")
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    off = tmp_path / "off"
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        GPU_TRANSCRIBE_POWEROFF_COMMAND=f"sh -c 'echo \"$GPU_TRANSCRIBE_POWEROFF_REASON\" > {off}'",
    )
    env.pop("GPU_TRANSCRIBE_API_KEY", None)
    command = [sys.executable, "-m", "gpu_transcribe", "serve", "--port", "0", "--model", str(model)]
    command += ["--device", "cpu", "--api-key-file", str(key_file), "--idle-stop-min", "0.1"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr or ()), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("Uvicorn running on" in line for line in lines), what="uvicorn to listen")
        found = re.search(r"Uvicorn running on (http://127\.0\.0\.1:(\d+))", "".join(lines))
        assert found is not None, "".join(lines)
        url, port = found[1], int(found[2])
        wait_until(lambda: httpx.get(f"{url}/health").status_code == 200, timeout_s=120, what="the model")
        answer = client(port).audio.transcriptions.create(
            model="whisper-1", file=clip_path(CLIP), language="en"
        )
        wait_until(off.exists, timeout_s=30, what="the idle power-off")
    finally:
        process.terminate()
        status = process.wait(30)
        reader.join(5)
    assert "wizard" in answer.text.lower()
    reason = off.read_text()
    assert reason.startswith("idle: no request for") and "limit 6 s" in reason, "".join(lines)
    log = "".join(lines)
    assert log.index("POST /v1/audio/transcriptions") < log.index("powering off (idle"), log
    assert "max_new_tokens" not in log, log  # transformers' per-call advice stays out of the server's log
    assert status == -signal.SIGTERM, "".join(lines)  # uvicorn re-raises the signal after a clean shutdown
    assert "Application shutdown complete" in "".join(lines)


def test_serve_refuses_a_public_bind_without_a_key(tmp_path: Path) -> None:
    """`serve --bind 0.0.0.0` without a key: one error line, exit status 2, nothing started."""
    from gpu_transcribe.cli.main import app

    result = CliRunner().invoke(app, ["serve", "--bind", "0.0.0.0"], env={"GPU_TRANSCRIBE_API_KEY": None})
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --bind 0.0.0.0"), result.output
    assert "--api-key-file" in lines[0]


def test_serve_refuses_a_model_directory_that_does_not_exist(tmp_path: Path) -> None:
    """`serve --model ./missing`: one error line naming it, exit status 2, before any server starts."""
    from gpu_transcribe.cli.main import app

    missing = tmp_path / "missing"
    result = CliRunner().invoke(app, ["serve", "--model", str(missing)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --model {missing}: no such directory"), lines


def test_serve_refuses_a_webhook_secret_file_without_a_usable_secret(tmp_path: Path) -> None:
    """A secret file holding something else: one error line naming the file, exit status 2; the file kept."""
    from gpu_transcribe.cli.main import app

    secret_file = tmp_path / "secret"
    secret_file.write_text("hunter2\n", encoding="utf-8")
    result = CliRunner().invoke(
        app, ["serve", "--webhook-secret-file", str(secret_file), "--jobs-dir", str(tmp_path / "jobs")]
    )
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --webhook-secret-file {secret_file}"), lines
    assert "whsec_" in lines[0] and "hunter2" not in lines[0]
    assert secret_file.read_text(encoding="utf-8") == "hunter2\n"
    assert not (tmp_path / "jobs").exists()


def test_serve_refuses_a_pending_limit_under_the_upload_limit(tmp_path: Path) -> None:
    """`--max-pending-gb` below `--max-upload-mb`: no upload that size could ever be accepted as a job; one
    error line naming both, exit status 2, nothing started."""
    from gpu_transcribe.cli.main import app

    result = CliRunner().invoke(app, ["serve", "--max-pending-gb", "0.1", "--max-upload-mb", "200"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --max-pending-gb 0.1 is less than --max-upload-mb")


def test_an_unknown_decoding_loop_is_refused_by_both_entry_points() -> None:
    """`--decode-loop` takes auto, eager or compiled; anything else is one line naming the option."""
    from gpu_transcribe.cli.main import app
    from gpu_transcribe_api.config import ServerConfig, ServerConfigError

    result = CliRunner().invoke(app, ["serve", "--decode-loop", "static"])
    assert result.exit_code == 2 and "--decode-loop" in result.output, result.output
    with pytest.raises(ServerConfigError, match=r"^--decode-loop: 'static' is not one of auto, eager"):
        ServerConfig(decode_loop="static").checked()
    assert ServerConfig().decode_loop == "auto"


def test_both_entry_points_offer_the_same_options_with_the_same_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`gpu-transcribe serve` and `python -m gpu_transcribe_api` are built from one declaration: the same
    flags in --help, and with no arguments the same values reach the config."""
    import re

    import gpu_transcribe.cli.serve as cli_serve
    from gpu_transcribe.cli.main import app
    from gpu_transcribe_api.__main__ import build_parser
    from gpu_transcribe_api.config import ServerConfigError
    from gpu_transcribe_api.serve_options import SERVE_OPTIONS

    declared = {flag for option in SERVE_OPTIONS for flag in option.flags if flag.startswith("--")}
    typer_help = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200).output
    argparse_help = build_parser().format_help()
    flags = re.compile(r"--[a-z][a-z-]*")
    assert set(flags.findall(typer_help)) - {"--help"} == declared
    assert set(flags.findall(argparse_help)) - {"--help"} == declared

    seen: list[dict[str, object]] = []

    def capture(values: dict[str, object]) -> None:
        seen.append(dict(values))
        raise ServerConfigError("captured")

    monkeypatch.setattr(cli_serve, "config_from_options", capture)
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2 and "captured" in result.output, result.output
    assert seen == [vars(build_parser().parse_args([]))]
    assert seen[0] == {option.name: option.default for option in SERVE_OPTIONS}


def test_help_imports_no_server_libraries() -> None:
    """`gpu-transcribe --help` and `serve --help` stay fast: no FastAPI, uvicorn, Prometheus or torch."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from gpu_transcribe.cli.main import app\n"
        "for args in (['--help'], ['serve', '--help']):\n"
        "    result = CliRunner().invoke(app, args)\n"
        "    assert result.exit_code == 0, result.output\n"
        "heavy = ('fastapi', 'starlette', 'uvicorn', 'prometheus_client', 'torch', 'numpy')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.fixture(autouse=True)
def _no_stray_threads() -> Iterator[None]:
    """Each test's server is stopped by the end of the test (the uvicorn thread it started is gone)."""
    before = set(threading.enumerate())
    yield
    names = [t.name for t in threading.enumerate() if t.name == "uvicorn" and t not in before]
    assert not names, f"servers still running: {names}"


@pytest.mark.slow
def test_words_prompt_and_subtitle_layout_match_the_engine(engine: Any, tmp_path: Path) -> None:
    """verbose_json with timestamp_granularities[]=word and a prompt (official client), srt with line limits
    and /transcribe with word_timestamps: each equals what the engine gives for the same clip and options
    (the files ``run --local`` writes are rendered from the same transcript)."""
    prompt = "A wizard behind the curtain."
    options = TranscribeOptions(language="en", word_timestamps=True, prompt=prompt)
    reference = sanitize(engine.transcribe_file(clip_path(CLIP), options))
    assert reference.segments and all(s.words for s in reference.segments)
    layout = TranscribeOptions(language="en", max_line_width=20, max_line_count=1)
    subtitles = engine.transcribe_file(clip_path(CLIP), layout)
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    with live_server(ServerConfig(api_key=KEY, upload_dir=uploads), reuse_engine(engine)) as server:
        api = client(server.port)
        with clip_path(CLIP).open("rb") as audio:
            verbose = api.audio.transcriptions.create(
                model="whisper-1",
                file=audio,
                language="en",
                prompt=prompt,
                response_format="verbose_json",
                timestamp_granularities=["word", "segment"],
            )
        with clip_path(CLIP).open("rb") as audio:
            srt_body = api.audio.transcriptions.create(
                model="whisper-1",
                file=audio,
                language="en",
                response_format="srt",
                extra_body={"max_line_width": 20, "max_line_count": 1},
            )
        with clip_path(CLIP).open("rb") as audio:
            simple = httpx.post(
                f"{server.url}/transcribe",
                files={"audio": (CLIP, audio)},
                data={"language": "en", "prompt": prompt, "word_timestamps": "true"},
                headers={"Authorization": f"Bearer {KEY}"},
                timeout=120,
            )
    expected = [(w.word.strip(), w.start_s, w.end_s) for s in reference.segments for w in s.words]
    assert verbose.words is not None
    assert [(w.word, w.start, w.end) for w in verbose.words] == expected
    assert verbose.text == reference.text
    assert srt_body == render(subtitles, "srt")
    assert all(len(line) <= 20 for line in str(srt_body).splitlines() if line and "-->" not in line)
    assert simple.status_code == 200, simple.text
    words = [(w["word"], w["start"], w["end"]) for s in simple.json()["segments"] for w in s["words"]]
    assert words == expected
