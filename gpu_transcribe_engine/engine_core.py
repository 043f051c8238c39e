"""The part of the Whisper engine both long-form algorithms use: :class:`EngineCore` holds the loaded model,
its processor and :class:`~gpu_transcribe_engine.whisper_model.WindowDecoder`, computes log-mel features,
detects the language, tokenizes a prompt and assembles a finished request's
:class:`~gpu_transcribe_engine.transcript.Transcript`. The algorithms build on it
(:mod:`gpu_transcribe_engine.batched`, :mod:`gpu_transcribe_engine.sequential`), and
:class:`gpu_transcribe_engine.engine.WhisperEngine` on them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from gpu_transcribe_engine import decoding_rules as rules
from gpu_transcribe_engine.audio import SAMPLE_RATE_HZ
from gpu_transcribe_engine.engine_types import AudioRequest, ModelInfo
from gpu_transcribe_engine.errors import GenerationError, TranscriptionCancelledError
from gpu_transcribe_engine.options import TranscribeOptions
from gpu_transcribe_engine.stages import StageClock
from gpu_transcribe_engine.transcript import Segment, Timings, Transcript

if TYPE_CHECKING:
    import torch

MODEL_FAILURES = (RuntimeError, TypeError, ValueError, IndexError, KeyError, AttributeError)
"""What transformers and torch raise when decoding fails (out of memory, a shape or API mismatch)."""


class EngineCore:
    """A loaded Whisper model, its processor and window decoder, and the steps both algorithms share.

    Not thread-safe: one call at a time.
    """

    def __init__(self, model: Any, processor: Any, info: ModelInfo) -> None:
        """Wrap an already loaded model; use :meth:`~gpu_transcribe_engine.engine.WhisperEngine.load`."""
        self.model = model
        self.processor = processor
        self.info = info
        generation_config = model.generation_config
        self._timestamp_begin: int = int(generation_config.no_timestamps_token_id) + 1
        from gpu_transcribe_engine.whisper_model import WindowDecoder

        compiled = None
        if info.decode_loop == "compiled":
            from gpu_transcribe_engine.compiled_decoding import CompiledDecoding

            compiled = CompiledDecoding(model)
        self.decoder = WindowDecoder(
            model,
            lambda ids: processor.tokenizer.decode(ids, skip_special_tokens=True),
            fast=info.fast_path,
            compiled=compiled,
        )
        self._id_to_language: dict[int, str] = {
            int(token_id): token.strip("<|>") for token, token_id in generation_config.lang_to_id.items()
        }
        self.clock = StageClock(_synchronize(info.device))
        """Seconds per stage (:mod:`gpu_transcribe_engine.stages`); a transcript's share is in its
        ``extra["stages_s"]``."""

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
            segments=tuple(clean_segments(segments, duration_s)),
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
                "decode_loop": self.info.decode_loop,
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

    def _prompt_tokens(self, opts: TranscribeOptions) -> list[int]:
        """The text tokens of ``opts.prompt``, after a space as OpenAI encodes a prompt; empty for none."""
        if not opts.prompt:
            return []
        ids = self.processor.tokenizer.encode(" " + opts.prompt.strip(), add_special_tokens=False)
        return [int(t) for t in ids]

    def _decode_raw(self, ids: list[int]) -> str:
        """The tokenizer's text of ``ids``, special tokens kept (for splitting words)."""
        return str(self.processor.tokenizer.decode(ids, skip_special_tokens=False))

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

    def _fixed_language(self, opts: TranscribeOptions) -> str:
        """The language to report when nothing was decoded: the one asked for, or ``""`` for ``auto``."""
        return "" if opts.language == "auto" else opts.language

    def _language(self, features: torch.Tensor, opts: TranscribeOptions) -> str:
        """The language code to decode with: ``opts.language``, or detected from the first 30 s."""
        if opts.language != "auto":
            return opts.language
        first = features[:1, :, : rules.FRAMES_PER_WINDOW]
        if first.shape[-1] < rules.FRAMES_PER_WINDOW:
            first = _pad_last(first, rules.FRAMES_PER_WINDOW - first.shape[-1])
        token_id = int(self.model.detect_language(first)[0])
        return self._id_to_language.get(token_id, "en")


def _synchronize(device: str) -> Any:
    """``torch.cuda.synchronize`` on ``cuda`` (stage times then include the GPU's queued work), else
    ``None``."""
    if device != "cuda":
        return None
    import torch

    return torch.cuda.synchronize


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def is_cancelled(request: AudioRequest) -> bool:
    """True when ``request``'s cancel event is set."""
    return request.cancel is not None and request.cancel.is_set()


def cancelled_error(request: AudioRequest) -> TranscriptionCancelledError:
    """The error a cancelled request ends with."""
    return TranscriptionCancelledError(f"{request.audio or 'audio'}: the transcription was cancelled")


def _other(algorithm: str) -> str:
    """The other long-form algorithm, suggested when one fails."""
    return "sequential" if algorithm == "batched" else "batched"


def _pad_last(tensor: torch.Tensor, amount: int) -> torch.Tensor:
    """``tensor`` with ``amount`` zeros appended along its last axis."""
    import torch.nn.functional as F

    return F.pad(tensor, (0, amount))


def clean_segments(segments: Sequence[Segment], duration_s: float) -> list[Segment]:
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
