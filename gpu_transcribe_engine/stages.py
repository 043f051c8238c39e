"""Where the engine's time goes: wall seconds per stage of a transcription, for the transcript's
``extra["stages_s"]`` and ``bench/engine.py``'s breakdown.

The stages are those of the ``batched`` algorithm (:mod:`gpu_transcribe_engine.batched`): ``vad`` (Silero
VAD and the windows), ``language`` (detection, when the language is ``auto``), ``features`` (log-mel),
``encoder``, ``decoder`` (the no-speech probabilities and the decoding at temperature 0), ``fallback`` (the
decodings at the higher temperatures of OpenAI's fallback) and ``align`` (the word-timing pass). On CUDA each
stage ends with ``torch.cuda.synchronize()`` so that its seconds are the GPU's work, not only its launch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STAGES: tuple[str, ...] = ("vad", "language", "features", "encoder", "decoder", "fallback", "align")
"""The stage names, in the order a window goes through them."""


class StageClock:
    """Accumulates wall seconds per stage name over the engine's lifetime.

    A request's share is the difference of two :meth:`totals` (:meth:`since`); requests decoded in the same
    batches share those seconds (each is given the whole of its call's), so the figures describe a call,
    not a file, when several files are transcribed together.

    Args:
        synchronize: called at the end of each stage before the clock is read (``torch.cuda.synchronize`` on
            CUDA, so asynchronous GPU work is counted in the stage that launched it); ``None`` on CPU.
    """

    def __init__(self, synchronize: Callable[[], None] | None = None) -> None:
        """Start every stage at zero seconds."""
        self._synchronize = synchronize
        self._seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Count the wall seconds of the ``with`` body in stage ``name`` (one of :data:`STAGES`).

        Raises:
            KeyError: ``name`` is not a stage.
        """
        if name not in self._seconds:
            raise KeyError(f"unknown engine stage {name!r}; the stages are {', '.join(STAGES)}")
        started = time.perf_counter()
        try:
            yield
        finally:
            if self._synchronize is not None:
                self._synchronize()
            self._seconds[name] += time.perf_counter() - started

    def totals(self) -> dict[str, float]:
        """Seconds per stage so far (a copy), every stage of :data:`STAGES` present."""
        return dict(self._seconds)

    def since(self, earlier: dict[str, float]) -> dict[str, float]:
        """Seconds per stage since ``earlier`` (a :meth:`totals`), rounded to milliseconds."""
        return {name: round(self._seconds[name] - earlier.get(name, 0.0), 3) for name in STAGES}
