"""Errors of the engine. Each has a stable ``code`` that travels in JSON events to the orchestrator."""

from __future__ import annotations


class EngineFailure(Exception):
    """Base of the engine's deliberate errors.

    Attributes:
        code: stable machine-readable code, sent in ``file_failed`` and ``fatal`` events.
    """

    code = "engine_error"


class AudioDecodeError(EngineFailure):
    """The file is not audio we can decode (empty, truncated, text named ``.mp3``, no audio stream)."""

    code = "decode_error"


class ModelLoadError(EngineFailure):
    """The model could not be found or loaded (bad id, no network to the hub, not a Whisper checkpoint)."""

    code = "model_not_found"


class OutputWriteError(EngineFailure):
    """An output file could not be written (unwritable directory, disk full)."""

    code = "output_error"


class BadOptionError(EngineFailure):
    """An option has a value the engine cannot use (unknown language code, bad format name)."""

    code = "bad_option"


class GenerationError(EngineFailure):
    """Whisper's decoding failed inside the model or transformers (one line naming the file and cause)."""

    code = "engine_error"


class HubUnreachableError(ModelLoadError):
    """A model named by its Hugging Face id is not in the local cache, and the hub cannot be reached (no
    network, a firewall, ``HF_HUB_OFFLINE``); the message says to pass a local model directory instead."""

    code = "hub_unreachable"


class TranscriptionCancelledError(EngineFailure):
    """The request was cancelled (its client went away) before all of its audio was transcribed."""

    code = "cancelled"
