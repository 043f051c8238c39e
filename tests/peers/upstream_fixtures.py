"""The fixtures of speaches' and faster-whisper-server's ``tests/conftest.py`` (the same project, renamed:
fedirz/faster-whisper-server became speaches-ai/speaches), adapted once for both packages' conftests, which
import them.

Adapted from speaches-ai/speaches, commit 870e1e16a73452496e99d49f759eabd692a8e0e0, and
fedirz/faster-whisper-server, commit 2ea974d7e48ebaed05e9d31285c46cb0d8699ca7, ``tests/conftest.py``. MIT
License, Copyright (c) 2024 Fedir Zadniprovskyi: see LICENSE in ``speaches/`` and ``faster_whisper_server/``.
Changed for gpu-transcribe (tests/peers/README.md): the fixtures keep their names and shapes but talk to
``gpu-transcribe serve`` over real HTTP (tests/peers/conftest.py's ``peer_server``: uvicorn on 127.0.0.1, the
real whisper-base engine) instead of the app in-process (ASGITransport, mocker-patched Config); the clients'
base URL is that server's; the timeout is 300 s (whisper-base on a shared CPU, not 15 s); every OpenAI client
makes no retries (speaches' choice; faster-whisper-server's kept the client's 2, which would hide a transient
server error); ``audio.wav``, which the tests read from the working directory, is real speech
(tests/peers/audio.py). Fixtures no test here uses (the TestClient ``client``, the commented-out ones, the
Kokoro text-to-speech download) are left out.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
import pytest
from httpx import AsyncClient
from openai import AsyncOpenAI

from tests.fixtures.server import LiveServer

OPENAI_BASE_URL = "https://api.openai.com/v1"
TIMEOUT = httpx.Timeout(300.0)


@pytest.fixture(autouse=True)
def _in_audio_dir(peer_audio_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The tests open `audio.wav` from the working directory (speaches' repository root upstream)."""
    monkeypatch.chdir(peer_audio_dir)
    yield


class AclientFactory(Protocol):
    def __call__(self, config: Any = None) -> AbstractAsyncContextManager[AsyncClient]: ...


@pytest.fixture
async def aclient_factory(peer_server: LiveServer) -> AclientFactory:
    """Returns a context manager that provides an `AsyncClient` instance for `gpu-transcribe serve`."""

    @asynccontextmanager
    async def inner(config: Any = None) -> AsyncGenerator[AsyncClient]:
        assert config is None, "the session's server has one configuration (tests/peers/conftest.py)"
        async with AsyncClient(base_url=peer_server.url, timeout=TIMEOUT) as aclient:
            yield aclient

    return inner


@pytest.fixture
async def aclient(aclient_factory: AclientFactory) -> AsyncGenerator[AsyncClient]:
    async with aclient_factory() as aclient:
        yield aclient


@pytest.fixture
def openai_client(aclient: AsyncClient, peer_server: LiveServer) -> AsyncOpenAI:
    return AsyncOpenAI(
        api_key="cant-be-empty", base_url=f"{peer_server.url}/v1", http_client=aclient, max_retries=0
    )


@pytest.fixture
def actual_openai_client() -> AsyncOpenAI:
    return AsyncOpenAI(
        # `base_url` is provided in case `OPENAI_BASE_URL` is set to a different value
        base_url=OPENAI_BASE_URL,
        max_retries=0,
    )


@pytest.fixture
async def dynamic_openai_client(
    target: Literal["speaches", "openai"], aclient_factory: AclientFactory, peer_server: LiveServer
) -> AsyncGenerator[AsyncOpenAI]:
    assert target in ["speaches", "openai"]
    if target == "openai":
        yield AsyncOpenAI(base_url=OPENAI_BASE_URL, max_retries=0)
    elif target == "speaches":
        async with aclient_factory() as aclient:
            yield AsyncOpenAI(
                api_key="cant-be-empty", base_url=f"{peer_server.url}/v1", http_client=aclient, max_retries=0
            )
