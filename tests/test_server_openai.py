"""``gpu-transcribe serve`` against OpenAI's API as the official ``openai`` client (strict mode) and peer
servers' API tests use it: a real uvicorn on loopback, the real whisper-base engine, real speech, and every
answer compared with what ``run --local`` writes for the same audio.

- ``GET /v1/models`` and ``GET /v1/models/{id}``: ``client.models.list()`` and ``retrieve()``.
- ``verbose_json`` segments with numbers for OpenAI's ``TranscriptionSegment`` (strict validation), ``usage``
  with the audio duration, ``vtt`` as ``text/vtt``, ``timestamp_granularities`` in both spellings, the
  detected language for silence.
- ``stream=true``: ``transcript.text.delta`` per segment in time order, then ``transcript.text.done``; a
  client that disconnects stops only its own request's remaining windows.
- Content checks beyond what peers' API tests assert (those tests themselves, speaches',
  faster-whisper-server's and openai-python's, run whole in ``tests/peers/``).

The engine is loaded once for the module and ``run --local`` runs once (a subprocess) on the two clips.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from bench.fixtures import build_long_audio, clip_path, find_test_model, write_wav
from gpu_transcribe_api.config import ServerConfig
from gpu_transcribe_engine.decoding_rules import MAX_SPEECH_PER_WINDOW_S
from gpu_transcribe_engine.engine import AudioRequest, BatchInfo
from gpu_transcribe_engine.errors import TranscriptionCancelledError
from gpu_transcribe_engine.languages import LANGUAGES
from gpu_transcribe_engine.options import TranscribeOptions
from gpu_transcribe_engine.transcript import Segment
from tests.fixtures.server import live_server, reuse_engine, wait_until

CLIP = "en_librispeech_61-70968-0000.flac"
"""4.9 s of read English: one Whisper window."""
LONG_CLIPS = ("en_jfk.flac", CLIP)
"""Placed again and again, with pauses, into :func:`long_wav` (several windows)."""
KEY = "test-key-0123456789"
REPO = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    # openai marks audio.translations.create deprecated; OpenAI's API still serves it, and clients call it.
    pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning"),
]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    """The offline whisper-base checkpoint."""
    model = find_test_model()
    if model is None:
        pytest.skip("no test model: set GPU_TRANSCRIBE_TEST_MODEL or run `make offline-model`")
    return model


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> Any:
    """whisper-base on the CPU, loaded once for the module."""
    from gpu_transcribe_engine.engine import WhisperEngine

    return WhisperEngine.load(str(model_dir), device="cpu")


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 70 s of real English speech with pauses (at least three Whisper windows), as a WAV file."""
    audio = build_long_audio(LONG_CLIPS, min_duration_s=70.0)
    return write_wav(tmp_path_factory.mktemp("long") / "long.wav", audio.samples)


@pytest.fixture(scope="module")
def local_run(model_dir: Path, long_wav: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``gpu-transcribe run --local -l en --format txt,json,srt,vtt`` on :data:`CLIP` and ``long_wav``, in
    a subprocess as a user runs it; returns its output folder."""
    out = tmp_path_factory.mktemp("local-run")
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200", NO_COLOR="1")
    proc = subprocess.run(
        [
            *(
                sys.executable,
                "-m",
                "gpu_transcribe",
                "run",
                "--local",
                "--model",
                str(model_dir),
                "-l",
                "en",
            ),
            *("--format", "txt,json,srt,vtt", "-o", str(out), str(clip_path(CLIP)), str(long_wav)),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return out


def local_json(local_run: Path, stem: str) -> dict[str, Any]:
    """``run --local``'s JSON transcript of the file named ``stem``."""
    return json.loads((local_run / f"{stem}.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def strict_client(port: int, key: str = KEY) -> openai.OpenAI:
    """The official client in strict mode (every answer validated against OpenAI's types), no retries."""
    return openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key=key,
        max_retries=0,
        timeout=300,
        _strict_response_validation=True,
    )


def auth() -> dict[str, str]:
    """The bearer header for :data:`KEY`."""
    return {"Authorization": f"Bearer {KEY}"}


def sse_data(body: str) -> list[dict[str, Any]]:
    """The JSON ``data:`` of every server-sent event in ``body``, in order."""
    return [json.loads(line[len("data: ") :]) for line in body.splitlines() if line.startswith("data: ")]


# --- models ------------------------------------------------------------------------------------------


def test_models_list_and_retrieve_with_the_official_client(engine: Any) -> None:
    """``client.models.list()`` gives the loaded model and ``whisper-1``; ``retrieve()`` answers each (an
    id with a slash too) and 404 (``NotFoundError``) for any other id; the key is required.

    Mirrors speaches' and faster-whisper-server's ``api_model_test`` (``test_model_exists``,
    ``test_model_does_not_exist``; ``test_list_models`` asks for their whole catalogue of 70+ models)."""
    config = ServerConfig(api_key=KEY, model="KBLab/kb-whisper-small")
    with live_server(config, reuse_engine(engine)) as server:
        api = strict_client(server.port)
        listed = api.models.list()
        by_name = api.models.retrieve("KBLab/kb-whisper-small")
        alias = api.models.retrieve("whisper-1")
        with pytest.raises(openai.NotFoundError) as missing:
            api.models.retrieve("i-do-not-exist")
        no_key = httpx.get(f"{server.url}/v1/models")
    assert [model.id for model in listed.data] == ["KBLab/kb-whisper-small", "whisper-1"]
    assert all(model.object == "model" and model.owned_by == "gpu-transcribe" for model in listed.data)
    assert by_name.id == "KBLab/kb-whisper-small" and alias.id == "whisper-1"
    assert by_name.created == alias.created > 1_700_000_000
    assert missing.value.status_code == 404
    assert "i-do-not-exist" in missing.value.message and "whisper-1" in missing.value.message
    assert missing.value.code == "model_not_found"
    assert no_key.status_code == 401


# --- formats -----------------------------------------------------------------------------------------


def test_strict_client_verbose_json_usage_and_formats_equal_run_local(
    engine: Any, local_run: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """In strict mode, ``verbose_json`` (transcription and translation, segment granularity) validates:
    every segment has its window's temperature, avg_logprob, compression_ratio and no_speech_prob and its
    own tokens; ``json`` carries ``usage`` with the audio's duration; ``vtt`` is ``text/vtt`` and ``srt``
    ``text/plain`` (speaches' and faster-whisper-server's ``sse_test``); texts, segments and subtitles equal
    ``run --local``'s files."""
    local = local_json(local_run, Path(CLIP).stem)
    with live_server(ServerConfig(api_key=KEY), reuse_engine(engine)) as server:
        api = strict_client(server.port)
        audio = clip_path(CLIP)
        verbose = api.audio.transcriptions.create(
            model="whisper-1",
            file=audio,
            language="en",
            response_format="verbose_json",
            timestamp_granularities=["segment"],
        )
        translated = api.audio.translations.create(
            model="whisper-1", file=audio, response_format="verbose_json", extra_body={"language": "en"}
        )
        plain = api.audio.transcriptions.create(model="whisper-1", file=audio, language="en")
        vtt = api.audio.transcriptions.with_raw_response.create(
            model="whisper-1", file=audio, language="en", response_format="vtt"
        )
        srt = api.audio.transcriptions.with_raw_response.create(
            model="whisper-1", file=audio, language="en", response_format="srt"
        )
    assert [(s.start, s.end, s.text) for s in verbose.segments or ()] == [
        (s["start_s"], s["end_s"], s["text"]) for s in local["segments"]
    ]
    assert verbose.text == plain.text == local["text"]
    assert verbose.language == "english" and verbose.duration == pytest.approx(local["duration_s"], abs=0.001)
    assert verbose.usage is not None and verbose.usage.type == "duration"
    assert verbose.usage.seconds == pytest.approx(local["duration_s"], abs=0.001)
    assert plain.usage is not None and plain.usage.type == "duration"
    assert plain.usage.seconds == pytest.approx(local["duration_s"], abs=0.001)
    tokenizer = engine.processor.tokenizer
    segments = verbose.segments or []
    assert len(segments) >= 2, "the clip's one window gives two segments"
    for segment in segments:
        assert tokenizer.decode(segment.tokens, skip_special_tokens=True).strip() == segment.text
        assert segment.temperature == 0.0
        assert -1.0 < segment.avg_logprob < 0.0
        assert 0.0 <= segment.no_speech_prob < 0.1
        assert segment.compression_ratio > 0.5
    window = {(s.temperature, s.avg_logprob, s.compression_ratio, s.no_speech_prob) for s in segments}
    assert len(window) == 1, "the segments of one window carry its statistics"
    assert translated.segments and all(s.tokens and s.avg_logprob < 0 for s in translated.segments)
    assert vtt.headers["content-type"] == "text/vtt; charset=utf-8"
    assert vtt.text == (local_run / f"{Path(CLIP).stem}.vtt").read_text(encoding="utf-8")
    assert vtt.text.startswith("WEBVTT\n")
    assert srt.headers["content-type"] == "text/plain; charset=utf-8"
    assert srt.text == (local_run / f"{Path(CLIP).stem}.srt").read_text(encoding="utf-8")


def test_timestamp_granularities_in_both_spellings(engine: Any) -> None:
    """``timestamp_granularities`` counts spelled with or without ``[]``: ``json`` takes every combination
    (speaches' and faster-whisper-server's ``api_timestamp_granularities_test``; granularities shape
    ``verbose_json`` only), ``verbose_json`` with ``segment`` gives segments and no words, and an unknown
    value is refused in either spelling, naming it."""
    with live_server(ServerConfig(api_key=KEY), reuse_engine(engine)) as server:
        api = strict_client(server.port)
        audio = clip_path(CLIP)
        combos: Sequence[list[Any]] = (["segment"], ["word"], ["word", "segment"])
        answers = [
            api.audio.transcriptions.create(
                model="whisper-1",
                file=audio,
                language="en",
                response_format="json",
                timestamp_granularities=g,
            )
            for g in combos
        ]
        verbose = api.audio.transcriptions.create(
            model="whisper-1",
            file=audio,
            language="en",
            response_format="verbose_json",
            timestamp_granularities=["segment"],
        )
        refused = {
            field: httpx.post(
                f"{server.url}/v1/audio/transcriptions",
                files={"file": (CLIP, audio.read_bytes())},
                data={"model": "whisper-1", "response_format": "verbose_json", field: "sentence"},
                headers=auth(),
                timeout=120,
            )
            for field in ("timestamp_granularities", "timestamp_granularities[]")
        }
    assert all("confused" in answer.text.lower() for answer in answers)
    assert verbose.segments and verbose.words is None
    for field, answer in refused.items():
        assert answer.status_code == 400, (field, answer.text)
        assert "'sentence' is not one of segment, word" in answer.json()["error"]["message"], field


def test_silence_reports_the_detected_or_requested_language(engine: Any, tmp_path: Path) -> None:
    """Audio with no speech gives no text, and ``verbose_json`` names the language detected from it (as
    OpenAI's whisper detects it on the first window), or the one asked for; never ``""``."""
    quiet = write_wav(tmp_path / "quiet.wav", np.zeros(3 * 16_000, dtype=np.float32))
    with live_server(ServerConfig(api_key=KEY), reuse_engine(engine)) as server:
        api = strict_client(server.port)
        detected = api.audio.transcriptions.create(
            model="whisper-1", file=quiet, response_format="verbose_json"
        )
        asked = api.audio.transcriptions.create(
            model="whisper-1", file=quiet, response_format="verbose_json", language="sv"
        )
    assert detected.text == "" and not detected.segments
    assert detected.language in LANGUAGES.values(), detected.language
    assert asked.language == "swedish"


# --- streaming ---------------------------------------------------------------------------------------


def test_stream_sends_deltas_in_time_order_then_done_equal_to_run_local(
    engine: Any, long_wav: Path, local_run: Path
) -> None:
    """``stream=True`` in the official client (strict) iterates ``transcript.text.delta`` events, one per
    segment in time order, whose concatenation is the ``transcript.text.done`` text and ``run --local``'s
    text for the same file; ``response_format=text`` streams the same events (speaches' and
    faster-whisper-server's ``sse_test``: every event has data), translations too; a format that cannot
    stream is refused before anything is transcribed."""
    local = local_json(local_run, long_wav.stem)
    assert len(local["segments"]) >= 3
    with live_server(ServerConfig(api_key=KEY), reuse_engine(engine)) as server:
        api = strict_client(server.port)
        events = list(
            api.audio.transcriptions.create(model="whisper-1", file=long_wav, language="en", stream=True)
        )
        with clip_path(CLIP).open("rb") as audio:
            text_stream = httpx.post(
                f"{server.url}/v1/audio/transcriptions",
                files={"file": (CLIP, audio)},
                data={"model": "whisper-1", "response_format": "text", "stream": "true", "language": "en"},
                headers=auth(),
                timeout=120,
            )
        with clip_path(CLIP).open("rb") as audio:
            translation_stream = httpx.post(
                f"{server.url}/v1/audio/translations",
                files={"file": (CLIP, audio)},
                data={"model": "whisper-1", "stream": "true", "language": "en"},
                headers=auth(),
                timeout=120,
            )
        with pytest.raises(openai.BadRequestError) as srt:
            api.audio.transcriptions.create(
                model="whisper-1", file=clip_path(CLIP), response_format="srt", stream=True
            )
        served = server.state.requests_served
    *deltas, done = events
    assert all(event.type == "transcript.text.delta" for event in deltas)
    assert done.type == "transcript.text.done"
    texts = [event.delta for event in deltas]  # type: ignore[union-attr]
    assert texts == [s["text"] if i == 0 else " " + s["text"] for i, s in enumerate(local["segments"])]
    assert "".join(texts) == done.text == local["text"]  # type: ignore[union-attr]
    assert text_stream.status_code == 200
    assert text_stream.headers["content-type"].startswith("text/event-stream")
    text_events = sse_data(text_stream.text)
    assert [e["type"] for e in text_events][-1] == "transcript.text.done" and len(text_events) >= 2
    assert all(len(json.dumps(e)) > 1 for e in text_events)
    assert "confused" in text_events[-1]["text"].lower()
    translated = sse_data(translation_stream.text)
    assert translated[-1]["type"] == "transcript.text.done" and "wizard" in translated[-1]["text"].lower()
    assert srt.value.param == "stream" and "srt" in srt.value.message
    assert served == 3


class PausingEngine:
    """The real engine, decoding one window per batch (``batch_size=1``), that holds its consumer thread
    after the first batch until :attr:`resume` is set.

    Attributes:
        first_batch: set once the first batch is decoded.
        resume: set it to let the engine go on.
        requests: the requests of the last call (their ``cancel`` events).
        batches: every batch decoded.
        results: the last call's results, once it returned.
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.info = engine.info
        self.first_batch = threading.Event()
        self.resume = threading.Event()
        self.requests: list[AudioRequest] = []
        self.batches: list[BatchInfo] = []
        self.results: list[Any] | None = None

    def transcribe_many(
        self, requests: Sequence[AudioRequest], on_batch: Any = None, on_done: Any = None
    ) -> Any:
        """Transcribe with ``batch_size=1``, pausing after the first batch."""
        self.requests = [
            replace(r, options=replace(r.options or TranscribeOptions(), batch_size=1)) for r in requests
        ]

        def paused(info: BatchInfo) -> None:
            self.batches.append(info)
            if on_batch is not None:
                on_batch(info)
            if len(self.batches) == 1:
                self.first_batch.set()
                self.resume.wait(60)

        self.results = self.engine.transcribe_many(self.requests, on_batch=paused, on_done=on_done)
        return self.results


def test_a_streaming_client_that_disconnects_stops_its_remaining_windows(engine: Any, long_wav: Path) -> None:
    """A client that closes its streamed request after the first of its windows was decoded: the engine
    decodes none of the others (the request ends as cancelled), and the server goes on serving."""
    from gpu_transcribe_engine.audio import decode_audio
    from gpu_transcribe_engine.vad import merge_into_windows, speech_timestamps

    windows = merge_into_windows(
        speech_timestamps(decode_audio(long_wav)), max_window_s=MAX_SPEECH_PER_WINDOW_S
    )
    assert len(windows) >= 3
    pausing = PausingEngine(engine)
    with live_server(ServerConfig(api_key=KEY), reuse_engine(pausing)) as server:
        with (
            httpx.Client(timeout=120) as http,
            long_wav.open("rb") as audio,
            http.stream(
                "POST",
                f"{server.url}/v1/audio/transcriptions",
                files={"file": ("long.wav", audio)},
                data={"model": "whisper-1", "stream": "true", "language": "en"},
                headers=auth(),
            ) as response,
        ):
            assert response.status_code == 200
            assert pausing.first_batch.wait(120), "the first window was not decoded"
        cancel = pausing.requests[0].cancel
        assert cancel is not None
        wait_until(cancel.is_set, timeout_s=30, what="the server to cancel the request")
        pausing.resume.set()
        wait_until(lambda: pausing.results is not None, timeout_s=120, what="the engine call to end")
        results, batches = pausing.results, list(pausing.batches)
        after = strict_client(server.port).audio.transcriptions.create(
            model="whisper-1", file=clip_path(CLIP), language="en"
        )
        dropped = httpx.get(f"{server.url}/metrics", headers=auth()).text
    assert len(batches) == 1, f"{len(batches)} of {len(windows)} windows decoded for a client that left"
    assert results is not None and isinstance(results[0], TranscriptionCancelledError)
    assert "confused" in after.text.lower()
    assert "gpu_transcribe_requests_total" in dropped


def test_cancelling_one_request_of_an_engine_call_leaves_the_others(engine: Any, long_wav: Path) -> None:
    """In one ``transcribe_many`` call, a request cancelled after the first batch has none of its other
    windows decoded and ends with ``TranscriptionCancelledError``; the other request is transcribed exactly
    as alone, and its ``on_segments`` callback got its segments."""
    from gpu_transcribe_engine.audio import decode_audio

    long_samples = decode_audio(long_wav)
    short_samples = decode_audio(clip_path(CLIP))
    options = TranscribeOptions(language="en", batch_size=1)
    alone = engine.transcribe_audio(short_samples, options)
    cancel = threading.Event()
    short_delivered: list[list[Segment]] = []
    batches: list[BatchInfo] = []

    def after_batch(info: BatchInfo) -> None:
        batches.append(info)
        cancel.set()

    results = engine.transcribe_many(
        [
            AudioRequest(long_samples, options, audio="long", cancel=cancel),
            AudioRequest(short_samples, options, audio="short", on_segments=short_delivered.append),
        ],
        on_batch=after_batch,
    )
    assert isinstance(results[0], TranscriptionCancelledError) and "long" in str(results[0])
    assert len(batches) == 2, "after the cancel only the other request's window was decoded"
    short = results[1]
    assert [(s.start_s, s.end_s, s.text) for s in short.segments] == [
        (s.start_s, s.end_s, s.text) for s in alone.segments
    ]
    assert [s.decoding for s in short.segments] == [s.decoding for s in alone.segments]
    assert [s.text for window in short_delivered for s in window] == [s.text for s in alone.segments]
