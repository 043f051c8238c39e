# Adapted from speaches-ai/speaches, commit 870e1e16a73452496e99d49f759eabd692a8e0e0, tests/conftest.py. MIT
# License, Copyright (c) 2024 Fedir Zadniprovskyi: see LICENSE in this folder. Changed for gpu-transcribe
# (tests/peers/README.md): the fixtures keep their names and shapes but talk to `gpu-transcribe serve` over
# real HTTP (tests/peers/conftest.py's `peer_server`: uvicorn on 127.0.0.1, the real whisper-base engine)
# instead of speaches' app in-process (ASGITransport, mocker-patched Config); the clients' base URL is that
# server's; the timeout is 300 s (whisper-base on a shared CPU, not 15 s); "pulling" a model checks that the
# server has it (GET /v1/models/{id}; it serves one model, loaded at start); `audio.wav`, which the tests
# read from the working directory, is real speech (tests/peers/audio.py). Fixtures no test here uses (the
# TestClient `client`, the commented-out ones) are left out.
# The fixtures shared with faster-whisper-server's conftest are in tests/peers/upstream_fixtures.py.
import pytest
from httpx import AsyncClient

from tests.peers.upstream_fixtures import (  # noqa: F401 (pytest registers imported fixtures)
    OPENAI_BASE_URL,
    TIMEOUT,
    AclientFactory,
    _in_audio_dir,
    aclient,
    aclient_factory,
    actual_openai_client,
    dynamic_openai_client,
    openai_client,
)


@pytest.fixture
async def pull_model_without_cleanup(
    request: pytest.FixtureRequest,
    aclient: AsyncClient,  # noqa: F811 (the imported fixture, requested by name)
) -> None:
    res = await aclient.get(f"/v1/models/{request.param}")
    res.raise_for_status()
