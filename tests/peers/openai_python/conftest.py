# Adapted from openai/openai-python, commit e43b422412a9e96c9cc5192c61fffbe2d7e04836, tests/conftest.py.
# Copyright OpenAI; Apache License 2.0: see LICENSE in this folder. Modified for gpu-transcribe
# (tests/peers/README.md): `base_url` is the package's `gpu-transcribe serve` (tests/peers/conftest.py's
# `peer_server`: uvicorn on 127.0.0.1, the real whisper-base engine) instead of a Prism mock server at
# TEST_API_BASE_URL; no respx2 plugin (the tests reach a real server); coroutine tests run on anyio's plugin
# (tests/peers/conftest.py) instead of pytest-asyncio with a session loop, so this file's
# pytest_collection_modifyitems (it added pytest-asyncio's marker and skipped aiohttp with respx2) is left
# out; the `aiohttp` client variant is skipped when aiohttp (openai's `aiohttp` extra) is not installed.
from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import httpx2
import pytest
from openai import AsyncOpenAI, DefaultAioHttpClient, DefaultAsyncHttpx2Client, DefaultHttpx2Client, OpenAI
from openai._utils import is_dict

from tests.fixtures.server import LiveServer

if TYPE_CHECKING:
    from _pytest.fixtures import FixtureRequest  # pyright: ignore[reportPrivateImportUsage]

pytest.register_assert_rewrite("tests.peers.openai_python.utils")

logging.getLogger("openai").setLevel(logging.DEBUG)

test_http_client = os.environ.get("OPENAI_TEST_HTTP_CLIENT", "httpx2")

api_key = "My API Key"
admin_api_key = "My Admin API Key"


@pytest.fixture(scope="package")
def base_url(peer_server: LiveServer) -> str:
    return f"{peer_server.url}/v1"


@pytest.fixture(scope="package")
def client(request: FixtureRequest, base_url: str) -> Iterator[OpenAI]:
    strict = getattr(request, "param", True)
    if not isinstance(strict, bool):
        raise TypeError(f"Unexpected fixture parameter type {type(strict)}, expected {bool}")

    http_client = DefaultHttpx2Client() if test_http_client == "httpx2" else None

    with OpenAI(
        base_url=base_url,
        api_key=api_key,
        admin_api_key=admin_api_key,
        _strict_response_validation=strict,
        http_client=http_client,
    ) as client:
        yield client


@pytest.fixture(scope="package")
async def async_client(request: FixtureRequest, base_url: str) -> AsyncIterator[AsyncOpenAI]:
    param = getattr(request, "param", True)

    # defaults
    strict = True
    http_client: httpx2.AsyncClient | None = None

    if isinstance(param, bool):
        strict = param
    elif is_dict(param):
        strict = param.get("strict", True)
        assert isinstance(strict, bool)

        http_client_type = param.get("http_client", "httpx2")
        if http_client_type == "aiohttp":
            if importlib.util.find_spec("aiohttp") is None:
                pytest.skip(
                    "aiohttp is not installed (openai's `aiohttp` extra): the aiohttp client is untested"
                )
            http_client = DefaultAioHttpClient()
    else:
        raise TypeError(f"Unexpected fixture parameter type {type(param)}, expected bool or dict")

    if http_client is None and test_http_client == "httpx2":
        http_client = DefaultAsyncHttpx2Client()

    async with AsyncOpenAI(
        base_url=base_url,
        api_key=api_key,
        admin_api_key=admin_api_key,
        _strict_response_validation=strict,
        http_client=http_client,
    ) as client:
        yield client
