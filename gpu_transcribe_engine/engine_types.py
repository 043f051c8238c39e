"""What goes into and comes out of :class:`gpu_transcribe_engine.engine.WhisperEngine`: the loaded model's
:class:`ModelInfo`, one :class:`AudioRequest` per recording, the callbacks, and the :class:`Results` of one
:meth:`~gpu_transcribe_engine.engine.WhisperEngine.transcribe_many` call. Imports nothing heavy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gpu_transcribe_engine.options import TranscribeOptions
from gpu_transcribe_engine.transcript import Segment, Transcript

ProgressCallback = Callable[[float, float], None]
"""Called as ``progress(done_s, duration_s)``: seconds of audio transcribed so far, of the total."""
SegmentsCallback = Callable[[list[Segment]], None]
"""Called as ``on_segments(segments)`` with the segments of one decoded window (``batched``), window after
window in time order, as soon as every earlier window of the request is decoded too; windows without text
are skipped. Times are seconds as decoded (the transcript's are then rounded and clamped)."""


@dataclass(frozen=True)
class ModelInfo:
    """What was loaded, for the ``model_loaded`` event and every
    :class:`~gpu_transcribe_engine.transcript.Transcript`.

    Attributes:
        model: the model id or local directory, as given.
        revision: the revision asked for, or ``None``.
        device: ``cuda`` or ``cpu``.
        dtype: ``float16`` (CUDA), ``bfloat16`` or ``float32`` (CPU); see
            :func:`gpu_transcribe_engine.loading.load_model`.
        load_s: wall-clock seconds the load took.
        fast_path: the fast decoding path runs (:mod:`gpu_transcribe_engine.whisper_model`); else
        transformers' own.
        transformers_version: the installed transformers release.
        decode_loop: ``eager`` or ``compiled``
            (:func:`gpu_transcribe_engine.compiled_decoding.resolve_decode_loop`).
    """

    model: str
    revision: str | None
    device: str
    dtype: str
    load_s: float
    fast_path: bool = False
    transformers_version: str = ""
    decode_loop: str = "eager"


@dataclass(frozen=True)
class AudioRequest:
    """One recording to transcribe with :meth:`~gpu_transcribe_engine.engine.WhisperEngine.transcribe_many`.

    Attributes:
        samples: 1-D float32 samples at 16 kHz in [-1, 1], shape ``(num_samples,)``.
        options: how to transcribe; ``None`` for the defaults.
        audio: a name for the recording (its path, or an upload's file name), kept in the transcript and in
            error messages.
        decode_s: seconds already spent decoding it, recorded in the timings.
        progress: optional callback, see :data:`ProgressCallback`.
        on_segments: optional callback, see :data:`SegmentsCallback` (the ``sequential`` algorithm does not
            call it: its transcript comes whole).
        cancel: when given and set, the request's windows not yet decoded are dropped and its result is
            :class:`~gpu_transcribe_engine.errors.TranscriptionCancelledError`; the other requests of the
            call go on.
    """

    samples: np.ndarray
    options: TranscribeOptions | None = None
    audio: str = ""
    decode_s: float = 0.0
    progress: ProgressCallback | None = None
    on_segments: SegmentsCallback | None = None
    cancel: threading.Event | None = None


@dataclass(frozen=True)
class BatchInfo:
    """One batch of 30 s windows decoded together by
    :meth:`~gpu_transcribe_engine.engine.WhisperEngine.transcribe_many`.

    Attributes:
        windows: windows in the batch (rows of the encoder input).
        requests: how many different requests those windows came from.
    """

    windows: int
    requests: int


BatchCallback = Callable[[BatchInfo], None]
"""Called once per decoded batch, after it was decoded."""
DoneCallback = Callable[[int, "Transcript | Exception"], None]
"""Called as ``on_done(index, result)`` once per request of
:meth:`~gpu_transcribe_engine.engine.WhisperEngine.transcribe_many`, as soon as its result is known (a request
whose windows all finished early is answered before the call ends)."""


class Results:
    """The results of one :meth:`~gpu_transcribe_engine.engine.WhisperEngine.transcribe_many` call, passed on
    as each one is set."""

    def __init__(self, count: int, on_done: DoneCallback | None) -> None:
        self.values: list[Transcript | Exception | None] = [None] * count
        self._on_done = on_done

    def __setitem__(self, slot: int, value: Transcript | Exception) -> None:
        self.values[slot] = value
        if self._on_done is not None:
            self._on_done(slot, value)
