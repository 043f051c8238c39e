"""The ``sequential`` long-form algorithm: OpenAI's (30 s windows, each starting where the previous one's last
complete segment ended, conditioned on the previous text, with OpenAI's temperature fallback), run by
transformers' ``WhisperForConditionalGeneration.generate``. One request at a time; its transcript comes
whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gpu_transcribe_engine import decoding_rules as rules
from gpu_transcribe_engine.audio import SAMPLE_RATE_HZ
from gpu_transcribe_engine.engine_core import EngineCore
from gpu_transcribe_engine.engine_types import ProgressCallback
from gpu_transcribe_engine.options import TranscribeOptions
from gpu_transcribe_engine.transcript import Decoding, Segment

if TYPE_CHECKING:
    import torch


class SequentialDecoding(EngineCore):
    """The ``sequential`` algorithm on the engine's model (:meth:`_sequential`)."""

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
                progress(min(duration_s, done_frames * rules.SECONDS_PER_FRAME), duration_s)

        outputs = self.model.generate(
            features,
            **self._generate_kwargs(language, opts),
            monitor_progress=monitor,
        )
        segments = self._segments(outputs["segments"][0], offset_s=0.0)
        if progress is not None:
            progress(duration_s, duration_s)
        return segments, language

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
            "temperature": rules.TEMPERATURES,
            "compression_ratio_threshold": rules.TOKEN_COMPRESSION_RATIO_THRESHOLD,
            "logprob_threshold": rules.LOGPROB_THRESHOLD,
            "no_speech_threshold": rules.NO_SPEECH_THRESHOLD,
            "num_beams": opts.beam_size,
            "max_new_tokens": rules.MAX_NEW_TOKENS,
        }

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
