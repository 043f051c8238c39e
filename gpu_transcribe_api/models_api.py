"""OpenAI's model listing for ``gpu-transcribe serve``: ``GET /v1/models`` and ``GET /v1/models/{id}``.

The server has one model: the one it was started with (``--model``, its id or directory as given, the same
name ``/health`` and ``/transcribe`` report), listed with ``whisper-1``, the name OpenAI's clients send, as
an alias of it. Tools that list the models before transcribing (``client.models.list()``, editors, chat
front-ends) see both; ``client.models.retrieve(id)`` answers either, and 404 in OpenAI's shape for any other.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gpu_transcribe_api.api_errors import ApiError
from gpu_transcribe_api.config import ServerConfig
from gpu_transcribe_api.dependencies import StateDep
from gpu_transcribe_api.state import ServerState

OPENAI_ALIAS = "whisper-1"
"""The model name OpenAI's clients and documentation send; it names the loaded model here."""
OWNED_BY = "gpu-transcribe"

router = APIRouter()


def model_ids(config: ServerConfig) -> list[str]:
    """The ids the server answers to: the loaded model's, then :data:`OPENAI_ALIAS` (once if equal)."""
    return list(dict.fromkeys([config.model, OPENAI_ALIAS]))


def model_object(state: ServerState, model_id: str) -> dict[str, Any]:
    """OpenAI's model object ``{"id", "object": "model", "created" (Unix seconds: when the application was
    created, which is when the server started), "owned_by": "gpu-transcribe"}``."""
    return {"id": model_id, "object": "model", "created": state.created_unix_s, "owned_by": OWNED_BY}


@router.get("/v1/models")
async def list_models(state: StateDep) -> dict[str, Any]:
    """The loaded model and its alias ``whisper-1``: ``{"object": "list", "data": [...]}``."""
    return {
        "object": "list",
        "data": [model_object(state, model_id) for model_id in model_ids(state.config)],
    }


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(state: StateDep, model_id: str) -> dict[str, Any]:
    """One model by id (an id with slashes, ``KBLab/kb-whisper-small``, included); 404 for others."""
    ids = model_ids(state.config)
    if model_id not in ids:
        raise ApiError(
            404,
            f"model {model_id!r} does not exist; this server serves {' and '.join(map(repr, ids))}",
            param="model",
            code="model_not_found",
        )
    return model_object(state, model_id)
