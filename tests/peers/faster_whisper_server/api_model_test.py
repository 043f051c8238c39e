# Vendored from fedirz/faster-whisper-server, commit 2ea974d7e48ebaed05e9d31285c46cb0d8699ca7, tests/api_model_test.py.
# MIT License, Copyright (c) 2024 Fedir Zadniprovskyi: see LICENSE in this folder.
# Changed: test_list_models is skipped (the reason is in its mark).
# Fixtures: this folder's conftest.py and tests/peers/conftest.py; see tests/peers/README.md.
import openai
from openai import AsyncOpenAI
import pytest

MODEL_THAT_EXISTS = "Systran/faster-whisper-tiny.en"
MODEL_THAT_DOES_NOT_EXIST = "i-do-not-exist"
MIN_EXPECTED_NUMBER_OF_MODELS = 70  # At the time of the test creation there are 89 models


@pytest.mark.skip(
    reason="counts faster-whisper-server's catalogue of downloadable models (more than 70); gpu-transcribe "
    "serve serves the one model it was started with (and its alias whisper-1): models.list() is checked in "
    "tests/test_server_openai.py"
)
@pytest.mark.asyncio
async def test_list_models(openai_client: AsyncOpenAI) -> None:
    models = (await openai_client.models.list()).data
    assert len(models) > MIN_EXPECTED_NUMBER_OF_MODELS


@pytest.mark.asyncio
async def test_model_exists(openai_client: AsyncOpenAI) -> None:
    model = await openai_client.models.retrieve(MODEL_THAT_EXISTS)
    assert model.id == MODEL_THAT_EXISTS


@pytest.mark.asyncio
async def test_model_does_not_exist(openai_client: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        await openai_client.models.retrieve(MODEL_THAT_DOES_NOT_EXIST)
