"""transformers' Whisper with waste-free paths for beam search and OpenAI's long-form rules.

:class:`FastWhisperForConditionalGeneration` is ``WhisperForConditionalGeneration`` (transformers 5)
computing the same tokens with less work. Each change removes work that gives identical results:

1. **One encoder pass per window, not two.** With ``no_speech_threshold`` set, transformers'
   ``WhisperNoSpeechDetection`` runs the whole model again on the window at the first decoding step
   (to read the ``<|nospeech|>`` probability at the start-of-transcript position), encoder included,
   and on the whole batch's windows even in a fallback round that decodes only some of them (so its
   probabilities are then read at the wrong rows). Here the detector is given, at every decoding
   attempt, the encoder output that attempt just computed, for exactly its windows. On 2 CPU cores
   the encoder costs about 1.5 s per 30 s window for whisper-base.
2. **Beams share the encoder output.** ``generate`` copies the encoder output once per beam
   (``repeat_interleave``) and every decoder layer then projects each copy to cross-attention keys and
   values: five identical projections of 1500 positions with 5 beams, and five times the cache to read
   at every step. Here the encoder output is not copied; the cross-attention layers
   (:class:`GroupedCrossAttention`) attend from all beams of an input to that input's single set of keys
   and values.
3. **No reordering of the cross-attention cache.** At every beam-search step transformers 5 gathers the
   cross-attention cache along the beams too, though beams of one input share it; only the
   self-attention cache is reordered here (as transformers 4 did).

4. **Fallback rounds reuse the encoder output** of the windows they decode again
   (:class:`_EncoderRowCache`): about 1.5 s saved per window redone, on 2 CPU cores.
5. **OpenAI's repetition check**: the compression ratio of the decoded *text* (threshold 2.4), not of
   the token ids (see :meth:`_retrieve_compression_ratio`).
6. **Fallback decisions stay on their windows** (a correctness fix, see :meth:`generate_with_fallback`).

The equivalence (same tokens as the stock class) is checked by ``tests/test_engine.py``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from transformers import WhisperForConditionalGeneration
from transformers.cache_utils import EncoderDecoderCache
from transformers.generation.logits_process import WhisperNoSpeechDetection
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.whisper.modeling_whisper import WhisperAttention


class GroupedCrossAttention(WhisperAttention):
    """Decoder cross-attention whose keys/values may have fewer rows than its queries.

    Queries have ``batch * beams`` rows (in beam-major groups, as ``generate`` lays them out); keys and
    values are computed from an encoder output with ``batch`` rows, once, and cached. Each group of
    ``beams`` query rows attends to its input's keys/values in one scaled-dot-product-attention call.
    Used only as the ``encoder_attn`` of decoder layers (a class swap keeps the loaded weights).
    """

    def forward(  # type: ignore[override]
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        past_key_values: Any = None,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend from ``hidden_states`` (``(batch * beams, q_len, d_model)``) to the encoder output.

        Args:
            hidden_states: decoder states, shape ``(batch * beams, q_len, d_model)``.
            key_value_states: encoder output, shape ``(batch, 1500, d_model)``; ``batch`` must divide the
                query rows.
            past_key_values: the ``EncoderDecoderCache`` of ``generate``, or ``None``.
            attention_mask: must be ``None`` (Whisper's cross-attention has no mask).
            output_attentions: must be ``False``.
            kwargs: ignored.

        Returns:
            ``(output, None)``, output of shape ``(batch * beams, q_len, d_model)``.
        """
        if key_value_states is None or attention_mask is not None or output_attentions:
            output, weights = super().forward(
                hidden_states, key_value_states, past_key_values, attention_mask, output_attentions, **kwargs
            )[:2]
            return output, weights
        rows, q_len = hidden_states.shape[:2]
        heads, head_dim = self.num_heads, self.head_dim
        query = (self.q_proj(hidden_states) * self.scaling).view(rows, q_len, heads, head_dim).transpose(1, 2)

        layer = int(self.layer_idx or 0)  # set on every decoder layer's attention
        cache: Any = None
        is_updated = False
        if isinstance(past_key_values, EncoderDecoderCache):
            is_updated = bool(past_key_values.is_updated.get(layer))
            past_key_values.is_updated[layer] = True
            cache = past_key_values.cross_attention_cache
        key: torch.Tensor
        value: torch.Tensor
        if cache is not None and is_updated:
            key = cache.layers[layer].keys
            value = cache.layers[layer].values
        else:
            kv_rows = key_value_states.shape[0]
            key = (
                self.k_proj(key_value_states).view(kv_rows, -1, heads, head_dim).transpose(1, 2).contiguous()
            )
            value = (
                self.v_proj(key_value_states).view(kv_rows, -1, heads, head_dim).transpose(1, 2).contiguous()
            )
            if cache is not None:
                key, value = cache.update(key, value, layer)

        inputs = key.shape[0]
        if rows % inputs:
            raise RuntimeError(f"cross-attention: {rows} query rows for {inputs} encoder rows")
        group = rows // inputs
        if group > 1:  # (inputs*group, H, q, D) -> (inputs, H, group*q, D): one call per input
            query = query.reshape(inputs, group, heads, q_len, head_dim).transpose(1, 2)
            query = query.reshape(inputs, heads, group * q_len, head_dim)
        out = F.scaled_dot_product_attention(query, key, value, scale=1.0)
        if group > 1:
            out = out.reshape(inputs, heads, group, q_len, head_dim).transpose(1, 2)
            out = out.reshape(rows, heads, q_len, head_dim)
        out = out.transpose(1, 2).reshape(rows, q_len, heads * head_dim)
        return self.out_proj(out), None


class _EncoderRowCache:
    """Wraps the encoder's ``forward``: rows already encoded by its last call are not encoded again.

    A temperature-fallback round decodes again only the windows that failed, and transformers stacks
    their features into a new tensor and runs the encoder on it; those rows were encoded a moment
    before. A row counts as the same only if ``torch.equal`` says its features are identical, so a hit
    returns exactly what the encoder would compute.
    """

    def __init__(self, forward: Any) -> None:
        self._forward = forward
        self._features: torch.Tensor | None = None
        self._hidden: torch.Tensor | None = None

    def __call__(self, input_features: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        plain = not args and not any(kwargs.get(k) for k in ("output_attentions", "output_hidden_states"))
        if plain and self._features is not None and self._hidden is not None:
            rows = self._lookup(input_features)
            if rows is not None:
                return BaseModelOutput(last_hidden_state=self._hidden[rows])
        output = self._forward(input_features, *args, **kwargs)
        if plain:
            self._features, self._hidden = input_features, output.last_hidden_state
        return output

    def _lookup(self, features: torch.Tensor) -> list[int] | None:
        cached = self._features
        assert cached is not None
        if features.shape[1:] != cached.shape[1:] or features.dtype != cached.dtype:
            return None
        rows: list[int] = []
        for row in features:
            match = next((j for j in range(cached.shape[0]) if torch.equal(row, cached[j])), None)
            if match is None:
                return None
            rows.append(match)
        return rows

    def clear(self) -> None:
        """Forget the cached rows (frees their memory)."""
        self._features = self._hidden = None


class FastWhisperForConditionalGeneration(WhisperForConditionalGeneration):
    """``WhisperForConditionalGeneration`` without repeated encoder passes and per-beam copies.

    Load it like the stock class (``from_pretrained``); :meth:`enable_fast_paths` runs after loading.
    ``generate`` returns the same tokens as the stock class (for one input; for a batch, the same as
    the stock class would give with the fallback bookkeeping fixed).
    """

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """Load as ``WhisperForConditionalGeneration.from_pretrained`` does, then enable the fast paths."""
        model = super().from_pretrained(*args, **kwargs)
        model.enable_fast_paths()
        return model

    def enable_fast_paths(self) -> None:
        """Swap :class:`GroupedCrossAttention` into the decoder layers, wrap the encoder (idempotent)."""
        for layer in self.model.decoder.layers:
            if type(layer.encoder_attn) is WhisperAttention:
                layer.encoder_attn.__class__ = GroupedCrossAttention
        encoder = self.model.encoder
        if not isinstance(encoder.forward, _EncoderRowCache):
            encoder.forward = _EncoderRowCache(encoder.forward)

    def clear_encoder_cache(self) -> None:
        """Free the encoder rows kept for fallback rounds (call when a file is done)."""
        forward = self.model.encoder.forward
        if isinstance(forward, _EncoderRowCache):
            forward.clear()

    def _retrieve_logit_processors(
        self, generation_config: Any, logits_processor: Any, begin_index: int, num_beams: int, device: Any
    ) -> Any:
        """transformers' processors; remembers its ``WhisperNoSpeechDetection`` to feed it per attempt."""
        processors = super()._retrieve_logit_processors(
            generation_config, logits_processor, begin_index, num_beams, device
        )
        self._no_speech_detector = next(
            (p for p in processors or () if isinstance(p, WhisperNoSpeechDetection)), None
        )
        return processors

    def _expand_inputs_for_generation(  # type: ignore[override]
        self,
        expand_size: int = 1,
        is_encoder_decoder: bool = False,
        input_ids: torch.LongTensor | None = None,
        **model_kwargs: Any,
    ) -> tuple[torch.LongTensor | None, dict[str, Any]]:
        """Expand the decoder inputs per beam as transformers does, but not the encoder output.

        Called once per decoding attempt, after the encoder ran: the no-speech detector gets this
        attempt's encoder output and decoder prompt (see the module docstring, change 1).
        """
        encoder_outputs = model_kwargs.pop("encoder_outputs", None)
        detector = getattr(self, "_no_speech_detector", None)
        if detector is not None and encoder_outputs is not None and input_ids is not None:
            inputs: dict[str, Any] = {"input_ids": input_ids, "encoder_outputs": encoder_outputs}
            if model_kwargs.get("decoder_attention_mask") is not None:
                inputs["decoder_attention_mask"] = model_kwargs["decoder_attention_mask"]
            prepared = {**self.prepare_inputs_for_generation(**inputs), **inputs}
            prepared.pop("input_ids", None)
            prepared.pop("past_key_values", None)
            detector.inputs = prepared
        input_ids, model_kwargs = super()._expand_inputs_for_generation(  # type: ignore[misc]
            expand_size=expand_size, is_encoder_decoder=False, input_ids=input_ids, **model_kwargs
        )
        if encoder_outputs is not None:
            model_kwargs["encoder_outputs"] = encoder_outputs
        return input_ids, model_kwargs

    def generate_with_fallback(self, *args: Any, **kwargs: Any) -> Any:
        """transformers' temperature fallback, with the skip decision of each window kept on that window.

        transformers 5.23 stores the "skip as silence" decision of a fallback round under the round's own
        index (``should_skip[i]``) instead of the window's (``should_skip[fallback_index_map[i]]``): in a
        batch where only window 7 was decoded again, its decision lands on window 0, which can drop
        window 0's speech. The decisions are recorded here (:meth:`_need_fallback`) and replayed onto the
        right windows, following transformers' own rule for which windows go to the next round.
        """
        self._fallback_log: list[tuple[float | None, int, bool, bool]] = []
        sequences, outputs, should_skip, condition, output_type = super().generate_with_fallback(
            *args, **kwargs
        )
        return (
            sequences,
            outputs,
            _replay_should_skip(self._fallback_log, len(should_skip)),
            condition,
            output_type,
        )

    def _need_fallback(
        self,
        seek_sequence: Any,
        seek_outputs: Any,
        index: int,
        logits_processor: Any,
        generation_config: Any,
        vocab_size: int,
        temperature: float | None,
    ) -> tuple[bool, bool]:
        """transformers' decision for one window of one round, recorded for :meth:`generate_with_fallback`."""
        needs_fallback, should_skip = super()._need_fallback(
            seek_sequence, seek_outputs, index, logits_processor, generation_config, vocab_size, temperature
        )
        log = getattr(self, "_fallback_log", None)
        if log is not None:
            log.append((temperature, index, bool(needs_fallback), bool(should_skip)))
        return needs_fallback, should_skip

    def set_text_decoder(self, decode: Callable[[list[int]], str]) -> None:
        """Give the model its tokenizer's ``decode`` so the repetition check runs on text (change 5)."""
        self._decode_text = decode

    def _retrieve_compression_ratio(self, tokens: torch.Tensor, vocab_size: int) -> float:  # type: ignore[override]
        """OpenAI's compression ratio: UTF-8 bytes of the decoded text over their zlib-compressed size.

        transformers compresses the token ids (2 bytes each) instead and suggests a threshold of 1.35 in
        place of OpenAI's 2.4. Measured here, that flags real, repeated speech as a loop: a 30 s window
        holding the same JFK sentence twice scored 1.53-1.75 on token ids at every temperature, so the
        fallback ran to temperature 1.0 and kept a truncated sample. On text, with OpenAI's 2.4 (also
        faster-whisper's), it is accepted as decoded at temperature 0.
        """
        decode = getattr(self, "_decode_text", None)
        if decode is None:
            return float(super()._retrieve_compression_ratio(tokens, vocab_size))
        text_tokens = [int(t) for t in tokens.tolist() if int(t) < self.generation_config.eos_token_id]
        data = decode(text_tokens).encode("utf-8")
        return len(data) / len(zlib.compress(data)) if data else 0.0

    @staticmethod
    def _reorder_cache(past_key_values: Any, beam_idx: torch.Tensor) -> Any:
        """Reorder the self-attention cache along the beams; the shared cross-attention cache stays."""
        past_key_values.self_attention_cache.reorder_cache(beam_idx)
        return past_key_values


def _replay_should_skip(log: list[tuple[float | None, int, bool, bool]], windows: int) -> list[bool]:
    """Per window, the skip decision of the last round that decoded it.

    Args:
        log: ``(temperature, index in round, needs_fallback, should_skip)`` in call order; a round's
            indices run 0, 1, ... over the windows it decoded, and the windows that needed a fallback go,
            in order, to the next round (transformers' ``fallback_index_map``).
        windows: windows in the batch.

    Returns:
        ``should_skip`` indexed by window.
    """
    skip = [False] * windows
    mapping = list(range(windows))
    round_entries: list[tuple[int, bool, bool]] = []

    def close_round() -> list[int]:
        return [mapping[i] for i, needs, _ in round_entries if needs]

    for _temperature, index, needs, should in log:
        if index == 0 and round_entries:
            mapping = close_round()
            round_entries = []
        if index < len(mapping):
            skip[mapping[index]] = should
        round_entries.append((index, needs, should))
    return skip
