"""The Whisper engine: load a model once, then transcribe many files, each into a Transcript.

Two long-form algorithms, both calling transformers' ``WhisperForConditionalGeneration.generate`` directly:
``sequential`` is OpenAI's (30 s windows, each starting where the previous one's last complete segment
ended, conditioned on the previous text, with OpenAI's temperature fallback;
:mod:`gpu_transcribe_engine.sequential`); ``batched`` groups the speech Silero VAD finds into windows of at
most 29 s cut at pauses (:mod:`gpu_transcribe_engine.vad`) and decodes them in batches
(:mod:`gpu_transcribe_engine.batched`, :mod:`gpu_transcribe_engine.whisper_model`). ``auto`` resolves per
device (:func:`gpu_transcribe_engine.device.resolve_algorithm`).

The engine's inputs, outputs and callbacks are in :mod:`gpu_transcribe_engine.engine_types` (importable here
too), OpenAI's thresholds in :mod:`gpu_transcribe_engine.decoding_rules`, the loading in
:mod:`gpu_transcribe_engine.loading`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from gpu_transcribe_engine import decoding_rules as rules
from gpu_transcribe_engine.audio import decode_audio
from gpu_transcribe_engine.batched import BatchedDecoding, Pending
from gpu_transcribe_engine.device import default_batch_size, resolve_algorithm
from gpu_transcribe_engine.engine_core import MODEL_FAILURES, cancelled_error, is_cancelled
from gpu_transcribe_engine.engine_types import (
    AudioRequest,
    BatchCallback,
    BatchInfo,
    DoneCallback,
    ModelInfo,
    ProgressCallback,
    Results,
    SegmentsCallback,
)
from gpu_transcribe_engine.loading import load_model, quiet_library_output
from gpu_transcribe_engine.options import DEFAULT_MODEL, TranscribeOptions
from gpu_transcribe_engine.sequential import SequentialDecoding
from gpu_transcribe_engine.transcript import Transcript

__all__ = [
    "AudioRequest",
    "BatchCallback",
    "BatchInfo",
    "DoneCallback",
    "ModelInfo",
    "ProgressCallback",
    "SegmentsCallback",
    "WhisperEngine",
    "quiet_library_output",
]


class WhisperEngine(BatchedDecoding, SequentialDecoding):
    """A loaded Whisper model that transcribes files one after another.

    Create it with :meth:`load`; then call :meth:`transcribe_file` (or :meth:`transcribe_audio`) per file.
    Not thread-safe: one call at a time. :meth:`transcribe_many` decodes several recordings' windows in
    shared batches (the server's queue calls it with every request waiting).
    """

    @classmethod
    def load(
        cls,
        model: str = DEFAULT_MODEL,
        revision: str | None = None,
        device: str = "auto",
        fast: bool | None = None,
        dtype: str | None = None,
        decode_loop: str = "auto",
    ) -> WhisperEngine:
        """Load a Whisper checkpoint from the Hugging Face hub or a local directory
        (:func:`gpu_transcribe_engine.loading.load_model`: the arguments, the dtype chosen per device, the
        errors raised).

        Raises:
            ModelLoadError: the model cannot be found or is not a Whisper checkpoint; one line naming it.
            HubUnreachableError: a hub id that is not in the local cache while the hub cannot be reached.
            ValueError: ``device`` is unknown, or ``cuda`` is asked for without a GPU; ``decode_loop`` is
                unknown, or ``compiled`` off the fast path.
        """
        whisper, processor, info = load_model(
            model,
            revision=revision,
            device=device,
            fast=fast,
            dtype=dtype,
            decode_loop=decode_loop,
        )
        return cls(whisper, processor, info)

    @property
    def can_time_words(self) -> bool:
        """True when the model's generation config names the alignment heads word timestamps need."""
        return bool(getattr(self.model.generation_config, "alignment_heads", None))

    def resolve_options(self, options: TranscribeOptions) -> TranscribeOptions:
        """Validate ``options`` and resolve ``algorithm`` and ``batch_size`` for this engine's device.

        ``sequential`` decodes one window at a time, so its batch size resolves to 1. A subtitle layout
        (``max_line_width``...) turns word timestamps on with ``batched`` when the model has alignment heads
        (else the lines are split in proportion to the text,
        :func:`gpu_transcribe_engine.writers.subtitle_cues`).

        Raises:
            ValueError: an option is out of range, or word timestamps are asked of a model without
                alignment heads or with ``sequential``; the message names the option.
        """
        opts = options.validated()
        algorithm = resolve_algorithm(opts.algorithm, self.info.device)
        if opts.word_timestamps:
            if not self.can_time_words:
                raise ValueError(
                    f"--word-timestamps: model {self.info.model!r} has no alignment_heads in its "
                    "generation_config.json, so its words cannot be timed; use a model that has them "
                    "(OpenAI's Whisper checkpoints do) or leave word timestamps off"
                )
            if algorithm == "sequential":
                raise ValueError("--word-timestamps: use --algorithm batched (or auto); sequential has none")
        elif opts.subtitle_layout and algorithm != "sequential" and self.can_time_words:
            # subtitle lines are split at word times when the model can give them
            opts = replace(opts, word_timestamps=True)
        if algorithm == "sequential":
            batch_size = 1
        else:
            batch_size = opts.batch_size or default_batch_size(
                self.info.device, self.model, opts.beam_size, rules.MAX_NEW_TOKENS
            )
        return replace(opts, algorithm=algorithm, batch_size=batch_size)  # type: ignore[arg-type]

    def transcribe_file(
        self,
        path: str | os.PathLike[str],
        options: TranscribeOptions | None = None,
        progress: ProgressCallback | None = None,
    ) -> Transcript:
        """Decode and transcribe one audio file.

        Args:
            path: any audio file :func:`gpu_transcribe_engine.audio.decode_audio` reads.
            options: how to transcribe; ``None`` for the defaults (Swedish, ``auto`` algorithm).
            progress: optional callback, see :data:`ProgressCallback`.

        Returns:
            The transcript, its timings (``decode_s`` included) and the resolved options.

        Raises:
            AudioDecodeError: the file cannot be decoded.
            ValueError: an option is out of range.
        """
        opts = self.resolve_options(options or TranscribeOptions())
        started = time.perf_counter()
        samples = decode_audio(path)
        decode_s = time.perf_counter() - started
        return self.transcribe_audio(
            samples, opts, progress=progress, audio=os.fspath(path), decode_s=decode_s
        )

    def transcribe_audio(
        self,
        samples: np.ndarray,
        options: TranscribeOptions | None = None,
        progress: ProgressCallback | None = None,
        audio: str = "",
        decode_s: float = 0.0,
    ) -> Transcript:
        """Transcribe decoded audio.

        Args:
            samples: 1-D float32 samples at 16 kHz in [-1, 1], shape ``(num_samples,)``.
            options: how to transcribe; ``None`` for the defaults.
            progress: optional callback, see :data:`ProgressCallback`.
            audio: the input path to record in the transcript.
            decode_s: seconds already spent decoding, recorded in the timings.

        Returns:
            The transcript; segments in time order, times within ``[0, duration_s]``; no segments for
            silence.

        Raises:
            ValueError: an option is out of range, or ``samples`` is not 1-D.
            GenerationError: the model failed while decoding.
        """
        request = AudioRequest(samples, options, audio=audio, decode_s=decode_s, progress=progress)
        result = self.transcribe_many([request])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def transcribe_many(
        self,
        requests: Sequence[AudioRequest],
        on_batch: BatchCallback | None = None,
        on_done: DoneCallback | None = None,
    ) -> list[Transcript | Exception]:
        """Transcribe several recordings at once, the ``batched`` ones' windows decoded in shared batches.

        The windows of every ``batched`` request with the same language, task and beam size are pooled,
        sorted longest first and decoded in batches of the smallest batch size those requests resolve to,
        so a server with several short requests waiting fills a batch that one request alone would leave
        mostly empty (Triton's dynamic batching and Ray Serve's ``@serve.batch`` do the same across
        requests). ``sequential`` requests are decoded one after another. A request decoded alone gives
        the same transcript as :meth:`transcribe_audio`; pooled, a window that needs a temperature fallback
        may sample differently.

        Args:
            requests: the recordings, see :class:`AudioRequest`.
            on_batch: optional callback, called after each decoded batch (see :class:`BatchInfo`).
            on_done: optional callback, called once per request as soon as its result is known (see
                :data:`DoneCallback`); a server answers each request then, not when the whole call ends.

        Returns:
            One entry per request, in order: its :class:`~gpu_transcribe_engine.transcript.Transcript`
            (``transcribe_s``
            counts from the start of this call to the end of its last window), or the exception that
            stopped it (``ValueError`` for a bad option or samples that are not 1-D,
            :class:`~gpu_transcribe_engine.errors.GenerationError` when the model failed on a batch holding
            its windows).
            One request's failure does not stop the others.
        """
        import torch

        results = Results(len(requests), on_done)
        sequential: list[tuple[int, AudioRequest, TranscribeOptions, np.ndarray]] = []
        pooled: list[Pending] = []
        for slot, request in enumerate(requests):
            try:
                opts = self.resolve_options(request.options or TranscribeOptions())
                if request.samples.ndim != 1:
                    raise ValueError(f"audio samples must be 1-D (mono), got shape {request.samples.shape}")
            except ValueError as exc:
                results[slot] = exc
                continue
            samples = np.ascontiguousarray(request.samples, dtype=np.float32)
            if opts.algorithm == "sequential":
                sequential.append((slot, request, opts, samples))
            else:
                pooled.append(Pending(slot, request, opts, samples, windows=[]))
        started = time.perf_counter()
        devices = [torch.cuda.current_device()] if self.info.device == "cuda" else []
        # Temperature fallback samples; a fixed seed (inside fork_rng, so the caller's random state is
        # untouched) makes the same audio and options give the same transcript on every run.
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            for slot, request, opts, samples in sequential:
                if is_cancelled(request):
                    results[slot] = cancelled_error(request)
                    continue
                torch.manual_seed(rules.SAMPLING_SEED)
                one_started = time.perf_counter()
                try:
                    segments, language = self._sequential(samples, opts, request.progress)
                except MODEL_FAILURES as exc:
                    results[slot] = self._generation_error(exc, request.audio, opts)
                    continue
                extra = {"windows": 0, "fallback_windows": 0}
                results[slot] = self._transcript(request, opts, segments, language, one_started, extra)
            if pooled:
                torch.manual_seed(rules.SAMPLING_SEED)
                self._pooled(pooled, results, started, on_batch)
        return [r if r is not None else ValueError("not transcribed") for r in results.values]
