"""What the peers' own API tests (vendored under ``tests/peers/``, see its README.md) run against: one
``gpu-transcribe serve`` for all of ``tests/peers/``, a real uvicorn on 127.0.0.1 with the real whisper-base
engine (``GPU_TRANSCRIBE_TEST_MODEL``), and real speech where their tests send ``audio.wav`` or
``b"Example data"``. The fixtures are package-scoped, so the server stops after the package's last test
and the rest of the suite, which checks that no server outlives its test, never sees it.

Each peer's ``conftest.py`` keeps its upstream fixtures' names and shapes and points them at
:func:`peer_server`. This file supplies what their test runners did:

- async tests (``pytest.mark.asyncio`` in speaches' tests, every coroutine test in openai-python's, which
  its conftest marks) run on anyio's pytest plugin, the async runner this environment has, one asyncio
  event loop for the whole package (openai-python's ``loop_scope="session"``: every test that shares it);
- ``requires_openai`` tests call the real OpenAI API with a real key: skipped, as their CI deselects them;
- every test is marked ``slow``: each runs the model (about a second a request on two CPU cores).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.fixtures import clip_path, find_test_model, write_wav
from gpu_transcribe_api.config import ServerConfig
from tests.fixtures.server import LiveServer, live_server, reuse_engine
from tests.peers.audio import PEER_CLIP

PEER_MODEL_ID = "Systran/faster-whisper-tiny.en"
"""The model id speaches' and faster-whisper-server's tests send and retrieve: the package's server is
started with it as ``--model`` and serves the test checkpoint under that id (and ``whisper-1``, the alias it
always answers to)."""


def pytest_configure(config: pytest.Config) -> None:
    """Register the peers' markers: ``asyncio`` (pytest-asyncio's, run here by anyio) and
    ``requires_openai`` (speaches' and faster-whisper-server's: the test calls the real OpenAI API)."""
    config.addinivalue_line("markers", "asyncio: run by anyio's plugin here (tests/peers/conftest.py)")
    config.addinivalue_line("markers", "requires_openai: calls the real OpenAI API (skipped here)")


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    """Every coroutine test under ``tests/peers/`` runs on anyio's plugin (it asks for ``anyio_backend``),
    as pytest-asyncio's auto mode (openai-python) and its ``asyncio`` marker (speaches) ran them upstream."""
    if (
        isinstance(collector, pytest.Module | pytest.Class)
        and collector.istestfunction(obj, name)
        and inspect.iscoroutinefunction(obj)
    ):
        pytest.mark.usefixtures("anyio_backend")(obj)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the peers' tests ``slow``, skip those that need the real OpenAI API, and ignore the
    ``DeprecationWarning`` openai raises for ``audio.translations.create`` (OpenAI still serves it; speaches'
    and faster-whisper-server's test settings ignore every ``DeprecationWarning``)."""
    peers = Path(__file__).parent
    for item in items:
        if peers not in item.path.parents:
            continue
        item.add_marker(pytest.mark.slow)
        item.add_marker(pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning"))
        if item.get_closest_marker("requires_openai") is not None:
            item.add_marker(
                pytest.mark.skip(
                    reason="requires_openai: sends the request to the real OpenAI API (api.openai.com) with "
                    "an OpenAI key, to record OpenAI's own behaviour; no network and no key here"
                )
            )


@pytest.fixture(scope="package")
def anyio_backend() -> str:
    """asyncio, once for tests/peers/ (openai-python's async client fixture lives as long)."""
    return "asyncio"


@pytest.fixture(scope="package")
def peer_engine() -> Any:
    """whisper-base on the CPU, loaded once for tests/peers/."""
    model = find_test_model()
    if model is None:
        pytest.skip("no test model: set GPU_TRANSCRIBE_TEST_MODEL or run `make offline-model`")
    from gpu_transcribe_engine.engine import WhisperEngine

    return WhisperEngine.load(str(model), device="cpu")


@pytest.fixture(scope="package")
def peer_server(peer_engine: Any) -> Iterator[LiveServer]:
    """``gpu-transcribe serve --model`` :data:`PEER_MODEL_ID` on 127.0.0.1 (no key, as on loopback by
    default), reusing :func:`peer_engine`; its base URL is ``peer_server.url``."""
    with live_server(ServerConfig(model=PEER_MODEL_ID), reuse_engine(peer_engine)) as server:
        yield server


@pytest.fixture(scope="package")
def peer_audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``audio.wav``: :data:`PEER_CLIP` as 16 kHz 16-bit WAV, where speaches' tests read the
    file they send (``Path("audio.wav")`` in the working directory)."""
    from gpu_transcribe_engine.audio import decode_audio

    folder = tmp_path_factory.mktemp("peer-audio")
    write_wav(folder / "audio.wav", decode_audio(clip_path(PEER_CLIP)))
    return folder
