"""The Whisper engine: load a model once, then transcribe many files, each into a Transcript.

Two long-form algorithms, both calling transformers' ``WhisperForConditionalGeneration.generate`` directly:
``sequential`` is OpenAI's (30 s windows, each starting where the previous one's last complete segment
ended, conditioned on the previous text, with OpenAI's temperature fallback); ``batched`` groups the speech
Silero VAD finds into windows of at most 29 s cut at pauses (:mod:`gpu_transcribe_engine.vad`) and decodes
them in batches
(:mod:`gpu_transcribe_engine.whisper_model`). ``auto`` resolves per device
(:func:`gpu_transcribe_engine.device.resolve_algorithm`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gpu_transcribe_engine.audio import SAMPLE_RATE_HZ, decode_audio
from gpu_transcribe_engine.device import (
    CPU_BATCH_SIZE,
    default_batch_size,
    default_dtype,
    resolve_algorithm,
    resolve_device,
)
from gpu_transcribe_engine.errors import GenerationError, ModelLoadError, TranscriptionCancelledError
from gpu_transcribe_engine.hub import check_hub_model, is_hub_id
from gpu_transcribe_engine.options import DEFAULT_MODEL, TranscribeOptions
from gpu_transcribe_engine.transcript import Decoding, Segment, Timings, Transcript

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[float, float], None]
"""Called as ``progress(done_s, duration_s)``: seconds of audio transcribed so far, of the total."""
SegmentsCallback = Callable[[list[Segment]], None]
"""Called as ``on_segments(segments)`` with the segments of one decoded window (``batched``), window after
window in time order, as soon as every earlier window of the request is decoded too; windows without text
are skipped. Times are seconds as decoded (the transcript's are then rounded and clamped)."""

TEMPERATURES: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
"""Temperature fallback schedule of OpenAI's ``transcribe()`` (Radford et al. 2022, section 4.5)."""
COMPRESSION_RATIO_THRESHOLD = 2.4
"""OpenAI's (and faster-whisper's) threshold on the zlib compression ratio of a window's decoded text;
above it the decoding counts as a repetition loop and is redone hotter (``batched``; the ratio is computed
on the text as OpenAI does, :func:`gpu_transcribe_engine.whisper_model.compression_ratio`)."""
TOKEN_COMPRESSION_RATIO_THRESHOLD = 1.35
"""The ``sequential`` algorithm's threshold: transformers' ``generate`` computes the compression ratio on
the token ids (2 bytes each), for which its documentation gives 1.35 as the equivalent of OpenAI's 2.4."""
LOGPROB_THRESHOLD = -1.0
"""OpenAI's threshold on the average token log-probability; below it a window is decoded again."""
NO_SPEECH_THRESHOLD = 0.6
"""OpenAI's threshold on the ``<|nospeech|>`` probability; above it (and below the log-prob threshold)
a window is skipped as silence."""

SAMPLING_SEED = 0
"""Seed of the sampling in temperature-fallback rounds, so transcripts are reproducible."""
MAX_NEW_TOKENS = 220
"""Tokens generated per 30 s window at most. OpenAI's decoder stops at 224 (``n_text_ctx // 2``); 220 keeps
prompt (at most 223 previous tokens + 3 start tokens) plus new tokens within Whisper's 448 positions, which
transformers enforces. A loop on silence then stops after 220 tokens, not 448 (transformers' default)."""

MAX_SPEECH_PER_WINDOW_S = 29.0
"""Speech put in one 30 s Whisper window by the ``batched`` algorithm at most, so at least 1 s of silence
follows it. Decoded once, a window filled to 29.8 s lost its last words ("...behind the curtain on", without
"the left", on the long English test file): Whisper ends its output before speech that touches the end of
its input. 28 s windows fixed that but cut the dense English file more often inside sentences (word error
rate 0.096 against 0.063 with 30 s); 29 s gave 0.064 there and kept the long test file within 2 points
of clip by clip (0.079 vs 0.086). Measured with whisper-base, beam 5, bfloat16, 2 CPU cores."""
HOP_LENGTH = 160
"""Audio samples per log-mel frame (10 ms at 16 kHz)."""
FRAMES_PER_WINDOW = 3000
"""Log-mel frames (10 ms each) in one Whisper input of 30 s."""
SECONDS_PER_FRAME = 0.01


@dataclass(frozen=True)
class ModelInfo:
    """What was loaded, for the ``model_loaded`` event and every
    :class:`~gpu_transcribe_engine.transcript.Transcript`.

    Attributes:
        model: the model id or local directory, as given.
        revision: the revision asked for, or ``None``.
        device: ``cuda`` or ``cpu``.
        dtype: ``float16`` (CUDA), ``bfloat16`` or ``float32`` (CPU); see :meth:`WhisperEngine.load`.
        load_s: wall-clock seconds the load took.
        fast_path: the fast decoding path runs (:mod:`gpu_transcribe_engine.whisper_model`); else
        transformers' own.
        transformers_version: the installed transformers release.
    """

    model: str
    revision: str | None
    device: str
    dtype: str
    load_s: float
    fast_path: bool = False
    transformers_version: str = ""


@dataclass(frozen=True)
class AudioRequest:
    """One recording to transcribe with :meth:`WhisperEngine.transcribe_many`.

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
    """One batch of 30 s windows decoded together by :meth:`WhisperEngine.transcribe_many`.

    Attributes:
        windows: windows in the batch (rows of the encoder input).
        requests: how many different requests those windows came from.
    """

    windows: int
    requests: int


BatchCallback = Callable[[BatchInfo], None]
"""Called once per decoded batch, after it was decoded."""
DoneCallback = Callable[[int, "Transcript | Exception"], None]
"""Called as ``on_done(index, result)`` once per request of :meth:`WhisperEngine.transcribe_many`, as soon as
its result is known (a request whose windows all finished early is answered before the call ends)."""


class _Results:
    """The results of one :meth:`WhisperEngine.transcribe_many` call, passed on as each one is set."""

    def __init__(self, count: int, on_done: DoneCallback | None) -> None:
        self.values: list[Transcript | Exception | None] = [None] * count
        self._on_done = on_done

    def __setitem__(self, slot: int, value: Transcript | Exception) -> None:
        self.values[slot] = value
        if self._on_done is not None:
            self._on_done(slot, value)


@dataclass
class _Pending:
    """A ``batched`` request in :meth:`WhisperEngine._pooled`: its windows, and what is decoded so far."""

    slot: int
    request: AudioRequest
    options: TranscribeOptions
    samples: np.ndarray
    windows: list[Any]
    language: str = ""
    by_window: dict[int, list[Segment]] = field(default_factory=dict)
    done_speech_s: float = 0.0
    fallback_windows: int = 0
    failed: bool = False
    delivered: int = 0
    """Windows handed to ``request.on_segments`` so far (a prefix, in time order)."""

    @property
    def duration_s(self) -> float:
        """The recording's duration in seconds."""
        return self.samples.shape[0] / SAMPLE_RATE_HZ

    @property
    def speech_s(self) -> float:
        """Seconds of audio inside its windows."""
        return sum(w.end_s - w.start_s for w in self.windows)


def quiet_library_output() -> None:
    """Keep the libraries' progress bars and per-call advice out of a long-running process's stderr.

    transformers repeats advisory warnings on every ``generate()`` call (``max_new_tokens`` vs
    ``max_length``, generation config plus arguments): one line per batch in a server's log. Errors still
    reach stderr. The variables are read when transformers is imported, so call this before the first
    :meth:`WhisperEngine.load`; values already set by the user win.
    """
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


class WhisperEngine:
    """A loaded Whisper model that transcribes files one after another.

    Create it with :meth:`load`; then call :meth:`transcribe_file` (or :meth:`transcribe_audio`) per file.
    Not thread-safe: one call at a time. :meth:`transcribe_many` decodes several recordings' windows in
    shared batches (the server's queue calls it with every request waiting).
    """

    def __init__(self, model: Any, processor: Any, info: ModelInfo) -> None:
        """Wrap an already loaded model; use :meth:`load` instead of calling this directly."""
        self.model = model
        self.processor = processor
        self.info = info
        generation_config = model.generation_config
        self._timestamp_begin: int = int(generation_config.no_timestamps_token_id) + 1
        from gpu_transcribe_engine.whisper_model import WindowDecoder

        self.decoder = WindowDecoder(
            model,
            lambda ids: processor.tokenizer.decode(ids, skip_special_tokens=True),
            fast=info.fast_path,
        )
        self._id_to_language: dict[int, str] = {
            int(token_id): token.strip("<|>") for token, token_id in generation_config.lang_to_id.items()
        }

    @classmethod
    def load(
        cls,
        model: str = DEFAULT_MODEL,
        revision: str | None = None,
        device: str = "auto",
        fast: bool | None = None,
        dtype: str | None = None,
    ) -> WhisperEngine:
        """Load a Whisper checkpoint from the Hugging Face hub or a local directory.

        float16 with PyTorch's scaled-dot-product attention (SDPA) on CUDA. On CPU bfloat16 where the CPU
        has bfloat16 instructions (:func:`gpu_transcribe_engine.device.cpu_supports_bfloat16`), else float32
        (float16
        matrix products are slow there). Measured with ``bench/engine.py`` (whisper-base, 2 AMD EPYC cores
        with ``avx512_bf16``): bfloat16 1.6x faster than float32 at the same word error rate (figures in the
        README's performance table). int8 dynamic quantization (``torch.ao``) was measured and not kept:
        of the whole model, English word error rate 0.057 -> 0.103; of the encoder and decoder, 0.083; of
        the encoder alone, Swedish 0.216 -> 0.261, and slower than bfloat16.

        Args:
            model: a hub id (``KBLab/kb-whisper-small``) or a directory holding a transformers Whisper
                checkpoint (config.json, generation_config.json, weights, tokenizer, processor config).
            revision: a branch, tag or commit of the hub repository; ``None`` for the default branch.
            device: ``auto``, ``cpu`` or ``cuda``.
            fast: ``None`` (default) for the fast decoding path on the transformers versions it was
                tested with and the stock path elsewhere (said once on stderr); ``True``/``False`` to force
                one (see :mod:`gpu_transcribe_engine.whisper_model`).
            dtype: ``float16``, ``bfloat16`` or ``float32``; ``None`` for the device's default (see above).

        Raises:
            ModelLoadError: the model cannot be found or is not a Whisper checkpoint; one line naming it.
            HubUnreachableError: a hub id that is not in the local cache while the hub cannot be reached
                (found in a few seconds, :func:`gpu_transcribe_engine.hub.check_hub_model`).
            ValueError: ``device`` is unknown, or ``cuda`` is asked for without a GPU.
        """
        started = time.perf_counter()
        is_directory = not is_hub_id(model)
        if not is_directory:  # a hub id: cached, or the hub reachable (said in seconds, not minutes)
            check_hub_model(model, revision)
        resolved_device = resolve_device(device)
        import torch
        import transformers
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        from gpu_transcribe_engine.whisper_model import (
            GROUPED_ATTENTION,
            fast_path_available,
            register_grouped_attention,
            say_stock_path_once,
        )

        use_fast = fast_path_available() if fast is None else fast
        if use_fast:
            register_grouped_attention()
        elif fast is None:
            say_stock_path_once(transformers.__version__)
        rev = f" (revision {revision})" if revision else ""
        source: str = model
        if is_directory:
            local = Path(model).expanduser()
            if not local.is_dir():
                raise ModelLoadError(
                    f"model directory {model!r} does not exist; pass a directory holding a Whisper "
                    "checkpoint, or a Hugging Face model id such as KBLab/kb-whisper-small"
                )
            source = str(local)
        if dtype is None:
            torch_dtype = getattr(torch, default_dtype(resolved_device))
        elif dtype in ("float16", "bfloat16", "float32"):
            torch_dtype = getattr(torch, dtype)
        else:
            raise ValueError(f"dtype: {dtype!r} is not one of float16, bfloat16, float32")
        try:
            whisper: Any = WhisperForConditionalGeneration.from_pretrained(
                source,
                revision=revision or "main",
                dtype=torch_dtype,
                attn_implementation=GROUPED_ATTENTION if use_fast else "sdpa",
            )
            processor = WhisperProcessor.from_pretrained(source, revision=revision or "main")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(
                f"cannot load Whisper model {model!r}{rev}: {reason}; check the model id and revision, "
                "your network access to huggingface.co, or pass a local directory with the checkpoint"
            ) from exc
        if getattr(whisper.config, "model_type", None) != "whisper":
            raise ModelLoadError(f"{model!r}{rev} is not a Whisper checkpoint; pass a Whisper model")
        gen = whisper.generation_config
        if not getattr(gen, "lang_to_id", None) or getattr(gen, "no_timestamps_token_id", None) is None:
            raise ModelLoadError(
                f"{model!r}{rev}: its generation_config.json lacks lang_to_id or no_timestamps_token_id "
                "(needed for language selection and timestamps); use a complete multilingual checkpoint"
            )
        whisper.to(resolved_device)
        whisper.eval()
        info = ModelInfo(
            model=model,
            revision=revision,
            device=resolved_device,
            dtype=str(torch_dtype).removeprefix("torch."),
            load_s=time.perf_counter() - started,
            fast_path=use_fast,
            transformers_version=transformers.__version__,
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
                self.info.device, self.model, opts.beam_size, MAX_NEW_TOKENS
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

        results = _Results(len(requests), on_done)
        sequential: list[tuple[int, AudioRequest, TranscribeOptions, np.ndarray]] = []
        pooled: list[_Pending] = []
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
                pooled.append(_Pending(slot, request, opts, samples, windows=[]))
        started = time.perf_counter()
        devices = [torch.cuda.current_device()] if self.info.device == "cuda" else []
        # Temperature fallback samples; a fixed seed (inside fork_rng, so the caller's random state is
        # untouched) makes the same audio and options give the same transcript on every run.
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            for slot, request, opts, samples in sequential:
                if _cancelled(request):
                    results[slot] = _cancelled_error(request)
                    continue
                torch.manual_seed(SAMPLING_SEED)
                one_started = time.perf_counter()
                try:
                    segments, language = self._sequential(samples, opts, request.progress)
                except _MODEL_FAILURES as exc:
                    results[slot] = self._generation_error(exc, request.audio, opts)
                    continue
                extra = {"windows": 0, "fallback_windows": 0}
                results[slot] = self._transcript(request, opts, segments, language, one_started, extra)
            if pooled:
                torch.manual_seed(SAMPLING_SEED)
                self._pooled(pooled, results, started, on_batch)
        return [r if r is not None else ValueError("not transcribed") for r in results.values]

    def _transcript(
        self,
        request: AudioRequest,
        opts: TranscribeOptions,
        segments: Sequence[Segment],
        language: str,
        started: float,
        extra: dict[str, Any],
    ) -> Transcript:
        """The :class:`~gpu_transcribe_engine.transcript.Transcript` of a finished request."""
        duration_s = request.samples.shape[0] / SAMPLE_RATE_HZ
        return Transcript(
            segments=tuple(_clean_segments(segments, duration_s)),
            language=language,
            duration_s=duration_s,
            timings=Timings(
                load_s=self.info.load_s,
                decode_s=request.decode_s,
                transcribe_s=time.perf_counter() - started,
            ),
            model=self.info.model,
            revision=self.info.revision,
            device=self.info.device,
            dtype=self.info.dtype,
            options=opts,
            audio=request.audio,
            extra={
                **extra,
                "decoding": "fast" if self.info.fast_path else "stock",
                "transformers": self.info.transformers_version,
            },
        )

    def _generation_error(self, exc: BaseException, audio: str, opts: TranscribeOptions) -> GenerationError:
        """The one-line :class:`~gpu_transcribe_engine.errors.GenerationError` for a model failure on
        ``audio``."""
        error = GenerationError(
            f"{audio or 'audio'}: the Whisper model failed while decoding "
            f"(transformers {self.info.transformers_version or '?'}, {type(exc).__name__}: "
            f"{_first_line(exc)}); try --algorithm {_other(opts.algorithm)}, or reinstall the "
            "versions in the lock file (make venv)"
        )
        error.__cause__ = exc
        return error

    # -- the two algorithms ---------------------------------------------------------------------------

    def _sequential(
        self, samples: np.ndarray, opts: TranscribeOptions, progress: ProgressCallback | None
    ) -> tuple[list[Segment], str]:
        duration_s = samples.shape[0] / SAMPLE_RATE_HZ
        if samples.shape[0] < SAMPLE_RATE_HZ // 100:  # under one 10 ms frame: nothing to hear
            return [], self._fixed_language(opts)
        features = self._features([samples])["input_features"]
        language = self._language(features, opts)

        def monitor(seek_and_max: torch.Tensor) -> None:
            if progress is not None:
                done_frames = float(seek_and_max[0, 0])
                progress(min(duration_s, done_frames * SECONDS_PER_FRAME), duration_s)

        outputs = self.model.generate(
            features,
            **self._generate_kwargs(language, opts),
            monitor_progress=monitor,
        )
        segments = self._segments(outputs["segments"][0], offset_s=0.0)
        if progress is not None:
            progress(duration_s, duration_s)
        return segments, language

    def _pooled(
        self,
        pending: list[_Pending],
        results: _Results,
        started: float,
        on_batch: BatchCallback | None,
    ) -> None:
        """The ``batched`` algorithm over several requests: Silero VAD windows of at most
        :data:`MAX_SPEECH_PER_WINDOW_S`, each decoded once, in batches shared across requests.

        Windows are batched longest first, so a batch holds windows of similar length and few rows idle
        while the longest finishes (a batch decodes until its longest window ends); each request's
        segments are put back in time order. Fills ``results`` at each request's slot.
        """
        from gpu_transcribe_engine.vad import merge_into_windows, speech_timestamps

        groups: dict[tuple[str, str, int], list[_Pending]] = {}
        for item in pending:
            request = item.request
            if self._stop_cancelled(item, results):
                continue
            try:
                item.windows = merge_into_windows(
                    speech_timestamps(item.samples), max_window_s=MAX_SPEECH_PER_WINDOW_S
                )
                item.language = self._window_language(item)
            except _MODEL_FAILURES as exc:
                results[item.slot] = self._generation_error(exc, request.audio, item.options)
                continue
            if not item.windows:
                self._finish(item, results, started)
                continue
            key = (item.language, item.options.task, item.options.beam_size)
            groups.setdefault(key, []).append(item)
        for (language, _task, _beam), items in groups.items():
            rows = [(item, index) for item in items for index in range(len(item.windows))]
            rows.sort(
                key=lambda row: row[0].windows[row[1]].end_s - row[0].windows[row[1]].start_s, reverse=True
            )
            batch_size = min(item.options.batch_size or CPU_BATCH_SIZE for item in items)
            while rows:
                batch, rows = rows[:batch_size], rows[batch_size:]
                self._decode_batch(batch, language, results, started, on_batch)
                rows = [row for row in rows if not self._stop_cancelled(row[0], results)]

    def _stop_cancelled(self, item: _Pending, results: _Results) -> bool:
        """True when ``item`` failed or was cancelled; a newly cancelled one gets its error now, once."""
        if not item.failed and _cancelled(item.request):
            item.failed = True
            results[item.slot] = _cancelled_error(item.request)
        return item.failed

    def _window_language(self, item: _Pending) -> str:
        """The language to decode ``item`` with: asked for, or detected from its longest window (from its
        first 30 s when VAD found no speech, as OpenAI's ``transcribe()`` detects it on the first window;
        ``""`` for audio under one 10 ms frame)."""
        if item.options.language != "auto":
            return item.options.language
        if item.windows:
            longest = max(item.windows, key=lambda w: w.end_s - w.start_s)
            piece = item.samples[longest.start_sample : longest.end_sample]
        else:
            piece = item.samples[: FRAMES_PER_WINDOW * SAMPLE_RATE_HZ // 100]
            if piece.shape[0] < SAMPLE_RATE_HZ // 100:
                return ""
        return self._language(self._features([piece], full_windows=True)["input_features"], item.options)

    def _decode_batch(
        self,
        batch: list[tuple[_Pending, int]],
        language: str,
        results: _Results,
        started: float,
        on_batch: BatchCallback | None,
    ) -> None:
        """Decode one batch of (request, window index) rows; finish every request whose last window it held.

        A model failure fails every request with a window in the batch (their other windows are dropped).
        """
        windows = [item.windows[index] for item, index in batch]
        pieces = [
            item.samples[w.start_sample : w.end_sample] for (item, _), w in zip(batch, windows, strict=True)
        ]
        opts = batch[0][0].options
        frames = [piece.shape[0] // HOP_LENGTH for piece in pieces]
        try:
            features = self._features(pieces, full_windows=True)["input_features"]
            decoded, fell_back, no_speech, alignments = self._decode_windows(features, language, opts, frames)
        except _MODEL_FAILURES as exc:
            for item in {id(item): item for item, _ in batch}.values():
                item.failed = True
                results[item.slot] = self._generation_error(exc, item.request.audio, item.options)
            return
        if on_batch is not None:
            on_batch(BatchInfo(windows=len(batch), requests=len({id(item) for item, _ in batch})))
        touched: dict[int, _Pending] = {}
        finished = zip(batch, windows, decoded, fell_back, no_speech, alignments, strict=True)
        for (item, index), window, result, fallback, no_speech_prob, alignment in finished:
            previous_end_s = item.windows[index - 1].end_s if index > 0 else 0.0
            item.by_window[index] = self._window_segments(
                result, window.start_s, window.end_s, no_speech_prob, alignment, language, previous_end_s
            )
            item.done_speech_s += window.end_s - window.start_s
            item.fallback_windows += int(fallback)
            touched[id(item)] = item
        for item in touched.values():
            self._deliver(item)
            progress = item.request.progress
            if len(item.by_window) == len(item.windows):
                self._finish(item, results, started)
            elif progress is not None:
                progress(
                    min(item.duration_s, item.duration_s * item.done_speech_s / item.speech_s),
                    item.duration_s,
                )

    def _deliver(self, item: _Pending) -> None:
        """Hand ``item``'s decoded windows that follow the ones already handed, in time order, to its
        ``on_segments`` callback (see :data:`SegmentsCallback`)."""
        callback = item.request.on_segments
        while callback is not None and item.delivered in item.by_window:
            segments = item.by_window[item.delivered]
            item.delivered += 1
            if segments:
                try:
                    callback(list(segments))
                except Exception:  # a listener's failure must not fail the other requests of the call
                    logger.exception("%s: the on_segments callback failed", item.request.audio or "audio")

    def _finish(self, item: _Pending, results: _Results, started: float) -> None:
        """Put ``item``'s transcript (segments in time order) in its slot and report it complete."""
        if item.request.progress is not None:
            item.request.progress(item.duration_s, item.duration_s)
        segments = [segment for index in range(len(item.windows)) for segment in item.by_window[index]]
        if item.options.word_timestamps and segments:
            from gpu_transcribe_engine.vad import WORD_VAD, speech_timestamps
            from gpu_transcribe_engine.words import snap_starts_to_speech

            speech = [
                (start / SAMPLE_RATE_HZ, end / SAMPLE_RATE_HZ)
                for start, end in speech_timestamps(item.samples, WORD_VAD)
            ]
            segments = snap_starts_to_speech(segments, speech)
        extra = {"windows": len(item.windows), "fallback_windows": item.fallback_windows}
        language = item.language or self._fixed_language(item.options)
        results[item.slot] = self._transcript(item.request, item.options, segments, language, started, extra)

    def _decode_windows(
        self, features: torch.Tensor, language: str, opts: TranscribeOptions, frames: Sequence[int]
    ) -> tuple[list[Any], list[bool], list[float], list[Any]]:
        """Decode a batch of windows with OpenAI's temperature fallback, per window.

        Each window is decoded with beam search at temperature 0. A window whose text is too repetitive
        (compression ratio above :data:`COMPRESSION_RATIO_THRESHOLD`) or too unsure (average
        log-probability below :data:`LOGPROB_THRESHOLD`) is decoded again by sampling at the next
        temperature of :data:`TEMPERATURES`, alone with the others that failed; a window that is unsure and
        probably silent (no-speech probability above :data:`NO_SPEECH_THRESHOLD`) is not retried and
        gives no text. When every temperature fails, the attempt with the highest average log-probability
        among those under the compression threshold is kept (faster-whisper's rule; OpenAI keeps the last).

        With ``opts.word_timestamps`` the kept texts are then aligned to the audio in one more batched
        decoder pass over the same encoder output
        (:meth:`gpu_transcribe_engine.whisper_model.WindowDecoder.align`).

        Args:
            features: ``(windows, n_mels, 3000)`` log-mel inputs.
            language: language code to decode with.
            opts: the resolved options.
            frames: per window, the log-mel frames holding its audio (the rest is padding).

        Returns:
            Per window, the kept :class:`gpu_transcribe_engine.whisper_model.Decoded` (or ``None`` for
            silence), whether
            it needed a temperature fallback, its ``<|nospeech|>`` probability, and its alignment (``None``
            without word timestamps).
        """
        decoder = self.decoder
        encoder_output = decoder.encode(features)
        cross = decoder.cross_cache(encoder_output)
        no_speech = decoder.no_speech_probs(encoder_output, cross)
        prompt = decoder.prompt(language, opts.task, self._prompt_tokens(opts))
        attempts: list[list[Any]] = [[] for _ in range(features.shape[0])]
        pending = list(range(features.shape[0]))
        kept: list[Any] = [None] * features.shape[0]
        for temperature in TEMPERATURES:
            rows = pending if len(pending) < features.shape[0] else None
            results = decoder.decode(
                encoder_output if rows is None else encoder_output[rows],
                prompt,
                num_beams=opts.beam_size,
                temperature=temperature,
                max_new_tokens=MAX_NEW_TOKENS,
                best_of=opts.beam_size,
                cross=cross if rows is None else decoder.select(cross, rows),
            )
            still: list[int] = []
            for window, result in zip(pending, results, strict=True):
                attempts[window].append(result)
                unsure = result.avg_logprob < LOGPROB_THRESHOLD
                if unsure and no_speech[window] > NO_SPEECH_THRESHOLD:
                    kept[window] = None  # silence: no text, no retry
                elif unsure or result.compression_ratio > COMPRESSION_RATIO_THRESHOLD:
                    still.append(window)
                else:
                    kept[window] = result
            pending = still
            if not pending:
                break
        for window in pending:
            passing = [a for a in attempts[window] if a.compression_ratio <= COMPRESSION_RATIO_THRESHOLD]
            kept[window] = max(passing or attempts[window], key=lambda a: a.avg_logprob)
        alignments: list[Any] = [None] * features.shape[0]
        if opts.word_timestamps:
            texts = [[t for t in d.tokens if t < decoder.eos_id] if d is not None else [] for d in kept]
            sot = decoder.prompt(language, opts.task)
            alignments = decoder.align(encoder_output, cross, sot, texts, frames)
        return kept, [len(a) > 1 for a in attempts], [float(p) for p in no_speech], alignments

    def _window_segments(
        self,
        decoded: Any,
        start_s: float,
        end_s: float,
        no_speech_prob: float,
        alignment: Any = None,
        language: str = "",
        previous_end_s: float = 0.0,
    ) -> list[Segment]:
        """Segments of one decoded window, times offset by its start and kept inside it; each carries the
        window's decode statistics and its own tokens (:class:`~gpu_transcribe_engine.transcript.Decoding`).

        With an ``alignment`` (:meth:`gpu_transcribe_engine.whisper_model.WindowDecoder.align`) each segment
        gets its words
        (:func:`gpu_transcribe_engine.words.add_words_to_segments`); ``previous_end_s`` is where the previous
        window's
        audio ended (for OpenAI's rule on the first word after a pause).
        """
        from gpu_transcribe_engine.whisper_model import split_segments

        if decoded is None:
            return []
        tokenizer = self.processor.tokenizer
        eos_id = self.decoder.eos_id
        out: list[Segment] = []
        token_lists: list[list[int]] = []
        for rel_start, rel_end, tokens in split_segments(decoded.tokens, self._timestamp_begin):
            text = tokenizer.decode(tokens, skip_special_tokens=True).strip()
            seg_start = min(start_s + rel_start, end_s)
            seg_end = end_s if rel_end is None else min(start_s + rel_end, end_s)
            decoding = Decoding(
                tokens=tuple(int(t) for t in tokens),
                temperature=float(decoded.temperature),
                avg_logprob=float(decoded.avg_logprob),
                compression_ratio=float(decoded.compression_ratio),
                no_speech_prob=float(no_speech_prob),
            )
            out.append(Segment(seg_start, max(seg_start, seg_end), text, decoding=decoding))
            token_lists.append([t for t in tokens if t < eos_id])
        if alignment is not None:
            from gpu_transcribe_engine.words import add_words_to_segments, word_timings

            matrix, probs = alignment
            texts = [t for tokens in token_lists for t in tokens]
            timings = word_timings(matrix, texts, probs, language, self._decode_raw, eos_id)
            out = add_words_to_segments(out, token_lists, timings, start_s, previous_end_s)
        return [segment for segment in out if segment.text]

    def _prompt_tokens(self, opts: TranscribeOptions) -> list[int]:
        """The text tokens of ``opts.prompt``, after a space as OpenAI encodes a prompt; empty for none."""
        if not opts.prompt:
            return []
        ids = self.processor.tokenizer.encode(" " + opts.prompt.strip(), add_special_tokens=False)
        return [int(t) for t in ids]

    def _decode_raw(self, ids: list[int]) -> str:
        """The tokenizer's text of ``ids``, special tokens kept (for splitting words)."""
        return str(self.processor.tokenizer.decode(ids, skip_special_tokens=False))

    # -- helpers ----------------------------------------------------------------------------------------

    def _features(self, pieces: Sequence[np.ndarray], full_windows: bool = False) -> Any:
        """Log-mel features of each piece (model dtype, on the model's device), with a frame mask.

        Args:
            pieces: 1-D float32 16 kHz samples each.
            full_windows: pad every piece (each at most 30 s) with zeros to 30 s, as Whisper was trained
                (the ``batched`` windows); else keep the whole pieces, padded to the longest (``sequential``).

        Returns:
            A ``BatchFeature`` with ``input_features`` ``(len(pieces), n_mels, frames)`` (3000 frames with
            ``full_windows``) and ``attention_mask`` ``(len(pieces), frames)``.
        """
        extractor = self.processor.feature_extractor
        inputs = extractor(
            list(pieces),
            sampling_rate=SAMPLE_RATE_HZ,
            truncation=full_windows,
            padding="max_length" if full_windows else "longest",
            return_attention_mask=True,
            return_tensors="pt",
            device=self.info.device,
        )
        dtype = self.model.get_encoder().conv1.weight.dtype
        inputs["input_features"] = inputs["input_features"].to(self.info.device, dtype=dtype)
        inputs["attention_mask"] = inputs["attention_mask"].to(self.info.device)
        return inputs

    def _generate_kwargs(self, language: str, opts: TranscribeOptions) -> dict[str, Any]:
        """``generate`` arguments for OpenAI's long-form rules with temperature fallback; a prompt
        conditions the first window (OpenAI's ``initial_prompt``), later ones follow the previous text."""
        extra: dict[str, Any] = {}
        if opts.prompt:
            import torch

            from gpu_transcribe_engine.whisper_model import MAX_PREVIOUS_TOKENS

            prev = int(self.model.generation_config.prev_sot_token_id)
            ids = [prev, *self._prompt_tokens(opts)[-MAX_PREVIOUS_TOKENS:]]
            extra = {
                "prompt_ids": torch.tensor(ids, device=self.info.device),
                "prompt_condition_type": "first-segment",
            }
        return {
            **extra,
            "language": language,
            "task": opts.task,
            "return_timestamps": True,
            "return_segments": True,
            "condition_on_prev_tokens": True,
            "temperature": TEMPERATURES,
            "compression_ratio_threshold": TOKEN_COMPRESSION_RATIO_THRESHOLD,
            "logprob_threshold": LOGPROB_THRESHOLD,
            "no_speech_threshold": NO_SPEECH_THRESHOLD,
            "num_beams": opts.beam_size,
            "max_new_tokens": MAX_NEW_TOKENS,
        }

    def _fixed_language(self, opts: TranscribeOptions) -> str:
        """The language to report when nothing was decoded: the one asked for, or ``""`` for ``auto``."""
        return "" if opts.language == "auto" else opts.language

    def _language(self, features: torch.Tensor, opts: TranscribeOptions) -> str:
        """The language code to decode with: ``opts.language``, or detected from the first 30 s."""
        if opts.language != "auto":
            return opts.language
        first = features[:1, :, :FRAMES_PER_WINDOW]
        if first.shape[-1] < FRAMES_PER_WINDOW:
            first = _pad_last(first, FRAMES_PER_WINDOW - first.shape[-1])
        token_id = int(self.model.detect_language(first)[0])
        return self._id_to_language.get(token_id, "en")

    def _segments(self, raw: Sequence[dict[str, Any]], offset_s: float) -> list[Segment]:
        """Turn ``generate``'s segment dicts (``start``, ``end`` in seconds, ``tokens``) into segments."""
        tokenizer = self.processor.tokenizer
        out: list[Segment] = []
        for item in raw:
            tokens = [int(t) for t in item["tokens"].tolist() if int(t) < self._timestamp_begin]
            text = tokenizer.decode(tokens, skip_special_tokens=True).strip()
            if not text:
                continue
            start_s = float(item["start"]) + offset_s
            end_s = float(item["end"]) + offset_s
            decoding = Decoding(tokens=tuple(tokens))
            out.append(Segment(start_s=start_s, end_s=max(start_s, end_s), text=text, decoding=decoding))
        return out


_MODEL_FAILURES = (RuntimeError, TypeError, ValueError, IndexError, KeyError, AttributeError)
"""What transformers and torch raise when decoding fails (out of memory, a shape or API mismatch)."""


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _cancelled(request: AudioRequest) -> bool:
    """True when ``request``'s cancel event is set."""
    return request.cancel is not None and request.cancel.is_set()


def _cancelled_error(request: AudioRequest) -> TranscriptionCancelledError:
    """The error a cancelled request ends with."""
    return TranscriptionCancelledError(f"{request.audio or 'audio'}: the transcription was cancelled")


def _other(algorithm: str) -> str:
    """The other long-form algorithm, suggested when one fails."""
    return "sequential" if algorithm == "batched" else "batched"


def _pad_last(tensor: torch.Tensor, amount: int) -> torch.Tensor:
    """``tensor`` with ``amount`` zeros appended along its last axis."""
    import torch.nn.functional as F

    return F.pad(tensor, (0, amount))


def _clean_segments(segments: Sequence[Segment], duration_s: float) -> list[Segment]:
    """Segments with times rounded to milliseconds, inside ``[0, duration_s]``, starts non-decreasing."""
    out: list[Segment] = []
    last_start = 0.0
    for seg in segments:
        start = min(max(seg.start_s, last_start, 0.0), duration_s)
        end = min(max(seg.end_s, start), duration_s)
        words = tuple(
            replace(
                word,
                start_s=round(min(max(word.start_s, 0.0), duration_s), 3),
                end_s=round(min(max(word.end_s, word.start_s, 0.0), duration_s), 3),
            )
            for word in seg.words
        )
        out.append(replace(seg, start_s=round(start, 3), end_s=round(end, 3), words=words))
        last_start = start
    return out
