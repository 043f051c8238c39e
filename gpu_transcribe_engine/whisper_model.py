"""Decode 30-second Whisper windows in batches, once each, with transformers' public generation API.

:class:`WindowDecoder` runs the encoder once per batch of windows, reads each window's ``<|nospeech|>``
probability and decodes the batch in one ``generate`` call (beam search, or sampling for the temperature
fallback) with OpenAI's timestamp rules. On the transformers versions in
:data:`~gpu_transcribe_engine.fast_path.TESTED_TRANSFORMERS` the beams of a window share its cross-attention
keys and values (:mod:`gpu_transcribe_engine.fast_path`); on any other transformers 5 release the same
decoding runs on transformers' own classes (:func:`~gpu_transcribe_engine.fast_path.fast_path_available`),
and word alignment reads the cross-attention weights through transformers' public ``output_attentions``
instead of its attention modules (:meth:`WindowDecoder.align`).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch
from transformers import DynamicCache, EncoderDecoderCache, LogitsProcessorList
from transformers.generation.utils import GenerationMixin
from transformers.modeling_outputs import BaseModelOutput

from gpu_transcribe_engine.fast_path import (
    SharedCrossAttentionCache,
    fast_path_available,
)
from gpu_transcribe_engine.logits_rules import (
    LoopStop,
    Sampler,
    SuppressTokens,
    TimestampRules,
    compression_ratio,
)

if TYPE_CHECKING:
    from gpu_transcribe_engine.compiled_decoding import CompiledDecoding

MAX_PREVIOUS_TOKENS = 223
"""Previous-text (prompt) tokens kept at most: OpenAI's decoder keeps ``n_text_ctx // 2 - 1`` of them, so
with the start tokens and the generated ones the sequence stays within Whisper's 448 positions."""
PUBLIC_ALIGN_BUDGET_BYTES = 1 << 30
"""Attention weights and logits one forward pass of the public alignment path may return at most (bytes):
every decoder layer's and head's cross-attention weights come back, for large-v3 about 230 MB per window
of 120 positions in float16, so the windows are aligned in groups (:meth:`WindowDecoder._public_chunks`)."""
WEIGHT_FLOOR = 1e-30
"""Smallest attention weight taken as it is before its logarithm (float16 weights far from the speech can
be 0)."""


@dataclass(frozen=True)
class Decoded:
    """One window's decoding.

    Attributes:
        tokens: the generated token ids after the prompt (text and timestamp tokens; no end token).
        avg_logprob: sum of the tokens' log-probabilities (end token included) divided by their count,
            OpenAI's ``avg_logprob``.
        compression_ratio: UTF-8 bytes of the text over its zlib-compressed size (OpenAI's rule).
        temperature: 0.0 for beam search, else the sampling temperature.
    """

    tokens: tuple[int, ...]
    avg_logprob: float
    compression_ratio: float
    temperature: float


def best_sample(samples: Sequence[Decoded], loop_threshold: float | None = None) -> Decoded:
    """The sample a best-of-N round keeps: the highest average log-probability (OpenAI's ``best_of``), among
    the samples whose compression ratio is at most ``loop_threshold`` when any is (a repetition loop is
    often the most probable sample, and keeping it fails the round although another sample passed; see
    :data:`gpu_transcribe_engine.decoding_rules.SAMPLES_SKIP_LOOPS`). ``None``: OpenAI's rule alone.

    Raises:
        ValueError: no samples.
    """
    if not samples:
        raise ValueError("best_sample: no samples")

    def rank(decoded: Decoded) -> tuple[bool, float]:
        looping = loop_threshold is not None and decoded.compression_ratio > loop_threshold
        return (not looping, decoded.avg_logprob)

    return max(samples, key=rank)


class WindowDecoder:
    """Encodes and decodes batches of Whisper windows (log-mel inputs of exactly 3000 frames).

    Args:
        model: a loaded ``WhisperForConditionalGeneration``; for the fast path, loaded with
            ``attn_implementation=GROUPED_ATTENTION``
            (:func:`~gpu_transcribe_engine.fast_path.register_grouped_attention`).
        decode_text: the tokenizer's ``decode`` (skipping special tokens), for the compression ratio.
        fast: use the shared cross-attention cache
            (:func:`~gpu_transcribe_engine.fast_path.fast_path_available`).
        compiled: the compiled decoding loop
            (:class:`~gpu_transcribe_engine.compiled_decoding.CompiledDecoding`, fast path only): the
            cross-attention caches are written into its buffer, and :meth:`decode` runs compiled over the
            last one written; ``None`` for the eager loop.
    """

    def __init__(
        self,
        model: Any,
        decode_text: Callable[[list[int]], str],
        fast: bool,
        compiled: CompiledDecoding | None = None,
    ) -> None:
        """Keep the model; read the special token ids from its generation config."""
        self.model = model
        self.fast = fast
        self.compiled = compiled if fast else None
        self._decode_text = decode_text
        gen = model.generation_config
        self.generation_config = gen
        # generate() would build its own (slower) suppression processors from these; ours replace them.
        # A None here alone is not enough: generate() fills a field left at its default from the model's
        # config, so decode() also passes suppress_tokens=None and begin_suppress_tokens=None explicitly.
        self._generate_config = copy.deepcopy(gen)
        self._generate_config.suppress_tokens = None
        self._generate_config.begin_suppress_tokens = None
        self._generate_config.max_length = None
        self._suppress = list(gen.suppress_tokens or ())
        self._suppress_at_begin = list(gen.begin_suppress_tokens or ())
        self._vocab_size = int(model.config.vocab_size)
        self.no_timestamps_id = int(gen.no_timestamps_token_id)
        self.timestamp_begin = self.no_timestamps_id + 1
        self.no_speech_id = self.no_timestamps_id - 1  # <|nocaptions|>/<|nospeech|>, as OpenAI's decoder
        self.eos_id = int(gen.eos_token_id)
        self.sot_id = int(gen.decoder_start_token_id)
        self._language_ids: dict[str, int] = {
            token.strip("<|>"): int(token_id) for token, token_id in (gen.lang_to_id or {}).items()
        }

    def prompt(self, language: str, task: str, previous: Sequence[int] = ()) -> list[int]:
        """``<|startoftranscript|><|lang|><|task|>`` (timestamps on), OpenAI's decoder prompt.

        With ``previous`` text tokens (a user's prompt), OpenAI's form for previous text comes first:
        ``<|startofprev|>`` and the last :data:`MAX_PREVIOUS_TOKENS` of them.
        """
        gen = self.generation_config
        start = [self.sot_id, int(gen.lang_to_id[f"<|{language}|>"]), int(gen.task_to_id[task])]
        if not previous:
            return start
        return [int(gen.prev_sot_token_id), *list(previous)[-MAX_PREVIOUS_TOKENS:], *start]

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        """Encoder output ``(batch, 1500, d_model)`` of log-mel ``features`` ``(batch, n_mels, 3000)``."""
        encoder: Any = self.model.get_encoder()
        return encoder(features).last_hidden_state

    def cross_cache(self, encoder_output: torch.Tensor) -> DynamicCache | None:
        """The decoder's cross-attention keys and values for ``encoder_output``, one row per window.

        Each decoder layer's ``encoder_attn`` projects the encoder output as ``WhisperAttention`` does
        (``k_proj``/``v_proj``, split into heads); a cache holding them is read instead of computed.
        ``None`` on the stock path, where transformers computes them (once per beam).
        """
        if not self.fast:
            return None
        cache = DynamicCache()
        rows = encoder_output.shape[0]
        for index, layer in enumerate(self.model.model.decoder.layers):
            attn = layer.encoder_attn
            shape = (rows, -1, attn.num_heads, attn.head_dim)
            key = attn.k_proj(encoder_output).view(shape).transpose(1, 2).contiguous()
            value = attn.v_proj(encoder_output).view(shape).transpose(1, 2).contiguous()
            cache.update(key, value, index)
            if self.compiled is not None:  # into the compiled loop's fixed buffer, layer by layer
                self.compiled.adopt_cross(cache, index)
        return cache

    @staticmethod
    def select(cross: DynamicCache | None, rows: list[int]) -> DynamicCache | None:
        """The rows ``rows`` (window indices) of a cross-attention cache from :meth:`cross_cache`."""
        if cross is None:
            return None
        picked = DynamicCache()
        layers: list[Any] = list(cross.layers)
        index = torch.tensor(rows, dtype=torch.long, device=layers[0].keys.device)
        for number, layer in enumerate(layers):
            picked.update(layer.keys.index_select(0, index), layer.values.index_select(0, index), number)
        return picked

    def _cache(self, cross: DynamicCache | None) -> EncoderDecoderCache | None:
        if cross is None:
            return None
        return SharedCrossAttentionCache(DynamicCache(), cross)

    def no_speech_probs(self, encoder_output: torch.Tensor, cross: DynamicCache | None) -> list[float]:
        """Per window, the probability of ``<|nospeech|>`` after ``<|startoftranscript|>`` (OpenAI's rule;
        :meth:`first_step`'s first half)."""
        return self.first_step(encoder_output, cross)[0]

    def first_step(
        self, encoder_output: torch.Tensor, cross: DynamicCache | None
    ) -> tuple[list[float], list[str]]:
        """Per window, the ``<|nospeech|>`` probability and the most probable language after
        ``<|startoftranscript|>``: one decoder step, read twice (OpenAI's ``detect_language`` takes the
        language token with the highest logit at that position).

        Returns:
            ``(no-speech probabilities, language codes)``, one each per window (codes such as ``sv``).
        """
        rows = encoder_output.shape[0]
        sot = torch.full((rows, 1), self.sot_id, dtype=torch.long, device=encoder_output.device)
        # The fast path (transformers 5.24) names the forward's cache argument ``cache``.
        cache_kwargs = {} if cross is None else {"cache": self._cache(cross), "use_cache": True}
        out = self.model(
            encoder_outputs=BaseModelOutput(last_hidden_state=encoder_output),
            decoder_input_ids=sot,
            **cache_kwargs,
        )
        logits = out.logits[:, 0, :].float()
        probs = logits.softmax(dim=-1)[:, self.no_speech_id]
        codes = list(self._language_ids)
        ids = torch.tensor([self._language_ids[code] for code in codes], device=logits.device)
        best = logits.index_select(-1, ids).argmax(dim=-1).tolist()
        return [float(p) for p in probs], [codes[index] for index in best]

    def decode(
        self,
        encoder_output: torch.Tensor,
        prompt: list[int] | list[list[int]],
        num_beams: int,
        temperature: float,
        max_new_tokens: int,
        best_of: int = 5,
        cross: DynamicCache | None = None,
        loop_threshold: float | None = None,
        loop_min_tokens: int = 0,
        loop_rank_threshold: float | None = None,
    ) -> list[Decoded]:
        """Decode every window once: beam search at temperature 0, else best-of-``best_of`` sampling.

        Args:
            encoder_output: ``(batch, 1500, d_model)`` from :meth:`encode`.
            prompt: decoder prompt from :meth:`prompt`, the same for every window, or one per window (all
                of one length: windows of different languages differ in their language token only).
            num_beams: beams at temperature 0 (1: greedy search).
            temperature: 0.0 for beam search; above 0, sampling at that temperature.
            max_new_tokens: generated tokens per window at most.
            best_of: samples drawn per window when sampling; the one with the highest average
                log-probability is kept (OpenAI's ``best_of``, default 5).
            cross: :meth:`cross_cache` of ``encoder_output`` (fast path), or ``None``.
            loop_threshold: end a row's decoding early once its text's compression ratio is above this
                (:class:`LoopStop`); ``None`` to decode every row to its end token or ``max_new_tokens``.
            loop_min_tokens: tokens a row has before :class:`LoopStop` looks at it (at least
                :data:`LOOP_MIN_TOKENS`).
            loop_rank_threshold: when sampling, a sample whose compression ratio is above this (a
                repetition loop) ranks below every sample under it, whatever their log-probabilities;
                ``None`` for OpenAI's rank by average log-probability alone.

        Returns:
            One :class:`Decoded` per window, in order.

        Raises:
            ValueError: per-window prompts of different lengths, or not one per window.
        """
        rows = encoder_output.shape[0]
        given_per_window = bool(prompt) and isinstance(prompt[0], list)
        if given_per_window:
            prompts = [list(p) for p in cast(list[list[int]], prompt)]
        else:
            prompts = [list(cast(list[int], prompt))] * rows
        lengths = sorted({len(p) for p in prompts})
        if len(prompts) != rows or len(lengths) != 1:
            raise ValueError(f"decode: {len(prompts)} prompts of lengths {lengths} for {rows} windows")
        prompt_len = lengths[0]
        ids = torch.tensor(prompts, dtype=torch.long, device=encoder_output.device)
        device = encoder_output.device
        processors = LogitsProcessorList(
            [
                SuppressTokens(self._suppress_at_begin, self._vocab_size, device, only_at=prompt_len),
                SuppressTokens(self._suppress, self._vocab_size, device),
                TimestampRules(
                    prompt_len,
                    self.timestamp_begin,
                    self.eos_id,
                    self.no_timestamps_id,
                    getattr(self.generation_config, "max_initial_timestamp_index", None),
                ),
            ]
        )
        if loop_threshold is not None:
            processors.append(
                LoopStop(prompt_len, self.eos_id, self._decode_text, loop_threshold, loop_min_tokens)
            )
        sampling = temperature > 0.0
        beam = not sampling and num_beams > 1
        samples = max(1, best_of) if sampling else 1
        sampler = Sampler(temperature) if sampling else None
        if sampler is not None:
            # each window's samples are consecutive rows, as generate lays out num_return_sequences; the
            # fast path's cross-attention cache stays one row per window (its attention groups the rows)
            processors.append(sampler)
            ids = ids.repeat_interleave(samples, dim=0)
            encoder_output = encoder_output.repeat_interleave(samples, dim=0)
        kwargs: dict[str, Any] = {
            "generation_config": self._generate_config,
            "encoder_outputs": BaseModelOutput(last_hidden_state=encoder_output),
            "decoder_input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "logits_processor": processors,
            "max_new_tokens": max_new_tokens,
            "return_dict_in_generate": True,
            "output_scores": not sampling,  # the beam score is returned only with them
            "pad_token_id": self.eos_id,
            "num_beams": num_beams if beam else 1,
            "do_sample": False,  # sampling is the Sampler processor's, greedy search takes its choice
            "suppress_tokens": None,  # SuppressTokens above applies them (see __init__)
            "begin_suppress_tokens": None,
        }
        if beam:
            kwargs["length_penalty"] = 1.0
        compiled_steps: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if self.compiled is not None and cross is not None and self.compiled.owns(cross):
            kwargs["cache"] = self.compiled.cache(cross, ids.shape[0] * (num_beams if beam else 1))
            kwargs["disable_compile"] = True  # generate's own compile of greedy/sampling would nest ours
            compiled_steps = self.compiled.steps()
        elif (cache := self._cache(cross)) is not None:
            kwargs["cache"] = cache  # the fast path runs on transformers 5.24, which names it ``cache``
        with compiled_steps:
            out = GenerationMixin.generate(self.model, **kwargs)
        if beam:
            # transformers' beam score: sum of log-probabilities over the generated length (end token
            # included) to the power length_penalty = 1.0, which is OpenAI's avg_logprob
            averages = [float(s) for s in out.sequences_scores]
        elif sampler is not None:
            steps = torch.stack(sampler.logprobs, dim=1)
            averages = []
        else:
            steps = self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
            averages = []
        candidates: list[Decoded] = []
        for row, sequence in enumerate(out.sequences.tolist()):
            generated = sequence[prompt_len:]
            ended = self.eos_id in generated
            length = generated.index(self.eos_id) + 1 if ended else len(generated)
            tokens = tuple(generated[: length - 1] if ended else generated)
            avg_logprob = averages[row] if beam else float(steps[row, :length].float().sum()) / max(1, length)
            text = self._decode_text([t for t in tokens if t < self.eos_id])
            candidates.append(Decoded(tokens, avg_logprob, compression_ratio(text), temperature))

        return [
            best_sample(candidates[w * samples : (w + 1) * samples], loop_rank_threshold) for w in range(rows)
        ]

    def align(
        self,
        encoder_output: torch.Tensor,
        cross: DynamicCache | None,
        sot: list[int],
        texts: Sequence[Sequence[int]],
        num_frames: Sequence[int],
    ) -> list[tuple[Any, list[float]] | None]:
        """Cross-attention alignment of each window's decoded text, for word timestamps
        (:mod:`gpu_transcribe_engine.words`).

        The decoder reads ``sot + <|notimestamps|> + text + <|endoftext|>`` of every window in a batched,
        teacher-forced forward pass over the encoder output, OpenAI's ``find_alignment``. How the alignment
        heads' weights are read depends on the transformers release
        (:func:`~gpu_transcribe_engine.fast_path.fast_path_available`): on the tested ones, hooks on the
        heads' layers keep the cross-attention's input and the weights are recomputed from it
        (:meth:`_attention_internal`: any attention implementation, and on the fast path the cross-attention
        cache the decoding computed); on any other, transformers' public ``output_attentions=True`` with the
        eager attention for that pass (:meth:`_attention_public`).

        A separate read rather than the beam search's own cross-attention, by measurement (whisper-base,
        2-core CPU; README, "Word timestamps"): weights collected at every step of the search cost the same
        time and were less accurate on built speech with known word starts (95th percentile start error
        0.383 s against 0.181 s), since the search runs with timestamp tokens in the sequence.

        Args:
            encoder_output: ``(windows, 1500, d_model)``.
            cross: :meth:`cross_cache` of ``encoder_output``, or ``None`` (stock path).
            sot: the start sequence (:meth:`prompt`).
            texts: per window, its text token ids (no timestamps); empty for a window without text.
            num_frames: per window, log-mel frames holding its audio (100 per second, at most 3000).

        Returns:
            Per window ``(matrix, token_probs)``: :func:`gpu_transcribe_engine.words.alignment_matrix` and
            the decoder's probability of each text token; ``None`` for a window without text.

        Raises:
            ValueError: the model's generation config has no ``alignment_heads``.
        """
        given = getattr(self.generation_config, "alignment_heads", None) or ()
        heads = [(int(layer), int(head)) for layer, head in given]
        if not heads:
            raise ValueError("word timestamps: the model's generation_config.json has no alignment_heads")
        wanted = [row for row, text in enumerate(texts) if text]
        results: list[tuple[Any, list[float]] | None] = [None] * len(texts)
        if not wanted:
            return results
        sequences = [[*sot, self.no_timestamps_id, *texts[row], self.eos_id] for row in wanted]
        longest = max(len(seq) for seq in sequences)
        device = encoder_output.device
        ids = torch.tensor([seq + [self.eos_id] * (longest - len(seq)) for seq in sequences], device=device)
        start = len(sot)
        if not fast_path_available():
            for chunk in self._public_chunks(len(wanted), longest):
                scores, logits = self._attention_public(
                    encoder_output[[wanted[i] for i in chunk]], ids[chunk], heads
                )
                for index, position in enumerate(chunk):
                    row = wanted[position]
                    text_logits = logits[index, start : start + len(texts[row]), : self.eos_id].float()
                    results[row] = self._aligned(
                        scores[index], text_logits, start, texts[row], num_frames[row]
                    )
            return results
        every = len(wanted) == encoder_output.shape[0]
        rows_output = encoder_output if every else encoder_output[wanted]
        rows_cross = cross if every else self.select(cross, wanted)
        hidden, scores = self._attention_internal(rows_output, rows_cross, ids, heads)
        weight = self.model.proj_out.weight[: self.eos_id].float()
        for index, row in enumerate(wanted):
            text_logits = hidden[index, start : start + len(texts[row])].float() @ weight.T
            results[row] = self._aligned(scores[index], text_logits, start, texts[row], num_frames[row])
        return results

    @staticmethod
    def _aligned(
        scores: torch.Tensor, text_logits: torch.Tensor, start: int, text: Sequence[int], num_frames: int
    ) -> tuple[Any, list[float]]:
        """One window's ``(alignment matrix, token probabilities)`` from its heads' attention ``scores``
        ``(heads, positions, 1500)`` (before the softmax over frames) and its text positions' logits
        ``(text tokens, text vocabulary)``."""
        from gpu_transcribe_engine.words import alignment_matrix

        frames = max(1, min(int(num_frames), 2 * scores.shape[-1]) // 2)
        weights = scores[:, : start + len(text) + 2, :frames].softmax(dim=-1)
        picked = torch.tensor(list(text), device=text_logits.device)
        probs = text_logits.softmax(dim=-1).gather(-1, picked[:, None])[:, 0]
        return alignment_matrix(weights, start), [float(p) for p in probs]

    def _attention_internal(
        self, rows_output: torch.Tensor, rows_cross: DynamicCache | None, ids: torch.Tensor, heads: list[Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's last hidden states ``(rows, positions, d_model)`` and the alignment heads' scores
        ``(rows, heads, positions, 1500)`` (query times key, before the softmax), read from transformers'
        ``WhisperAttention`` modules (``encoder_attn``'s projections, and the cache's keys on the fast path):
        for the releases in :data:`~gpu_transcribe_engine.fast_path.TESTED_TRANSFORMERS` only."""
        decoder: Any = self.model.model.decoder
        captured: dict[int, torch.Tensor] = {}

        def keep(layer: int) -> Callable[..., None]:
            def hook(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                captured[layer] = args[0] if args else kwargs["hidden_states"]

            return hook

        handles = [
            decoder.layers[layer].encoder_attn.register_forward_pre_hook(keep(layer), with_kwargs=True)
            for layer in sorted({layer for layer, _ in heads})
        ]
        try:
            cache_kwargs = {} if rows_cross is None else {"cache": self._cache(rows_cross), "use_cache": True}
            hidden = self.model.model(
                encoder_outputs=BaseModelOutput(last_hidden_state=rows_output),
                decoder_input_ids=ids,
                **cache_kwargs,
            ).last_hidden_state
        finally:
            for handle in handles:
                handle.remove()
        rows, positions = ids.shape
        scores = []
        for layer, head in heads:
            attn = decoder.layers[layer].encoder_attn
            query = attn.q_proj(captured[layer]) * attn.scaling
            query = query.view(rows, positions, attn.num_heads, attn.head_dim)[:, :, head]
            if rows_cross is not None:
                cached: list[Any] = list(rows_cross.layers)
                key = cached[layer].keys[:, head]
            else:
                key = attn.k_proj(rows_output).view(rows, -1, attn.num_heads, attn.head_dim)[:, :, head]
            scores.append(query.float() @ key.float().transpose(-1, -2))
        return hidden, torch.stack(scores, dim=1)

    def _public_chunks(self, rows: int, positions: int) -> list[list[int]]:
        """Row indices in groups whose attention weights and logits from :meth:`_attention_public` (every
        layer and head is returned, not only the alignment heads) fit :data:`PUBLIC_ALIGN_BUDGET_BYTES`."""
        config = self.model.config
        per_position = config.decoder_layers * config.decoder_attention_heads * 1500 + config.vocab_size
        per_row = per_position * positions * self.model.dtype.itemsize
        size = max(1, PUBLIC_ALIGN_BUDGET_BYTES // per_row)
        return [list(range(first, min(rows, first + size))) for first in range(0, rows, size)]

    def _attention_public(
        self, rows_output: torch.Tensor, ids: torch.Tensor, heads: list[Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits ``(rows, positions, vocab)`` and the alignment heads' scores ``(rows, heads, positions,
        1500)`` (log-weights: their softmax over any span of frames is the weights renormalised there) through
        transformers' public API: the model's forward with ``output_attentions=True`` gives each layer's
        ``cross_attentions`` ``(rows, heads, positions, 1500)``, which only the eager attention returns, so
        the model runs eager for this pass (``set_attn_implementation``) and is set back after it."""
        restore = self.model.config._attn_implementation
        self.model.set_attn_implementation("eager")
        try:
            out = self.model(
                encoder_outputs=BaseModelOutput(last_hidden_state=rows_output),
                decoder_input_ids=ids,
                output_attentions=True,
            )
        finally:
            self.model.set_attn_implementation(restore)
        weights = torch.stack([out.cross_attentions[layer][:, head] for layer, head in heads], dim=1)
        return weights.float().clamp_min(WEIGHT_FLOOR).log(), out.logits


TIME_PRECISION_S = 0.02
"""Seconds per timestamp token step (``<|0.00|>``, ``<|0.02|>``, ...), Whisper's timestamp resolution."""


def split_segments(
    tokens: Sequence[int], timestamp_begin: int
) -> list[tuple[float, float | None, list[int]]]:
    """Cut a window's tokens into segments at its timestamp tokens, as OpenAI's decoder lays them out.

    ``<|0.00|> text <|2.40|><|2.40|> text <|5.00|>`` gives ``(0.0, 2.4, text)`` and ``(2.4, 5.0, text)``.
    Text after the last timestamp (a window cut mid-sentence, or ``max_new_tokens`` reached) becomes a
    segment whose end is ``None``: the caller ends it at the window's end.

    Args:
        tokens: generated ids after the prompt; ids ``>= timestamp_begin`` are timestamps.
        timestamp_begin: id of ``<|0.00|>``.

    Returns:
        ``(start_s, end_s or None, text token ids)`` per segment with text, in order; times relative to
        the window's start.
    """
    segments: list[tuple[float, float | None, list[int]]] = []
    start: float | None = None
    text: list[int] = []
    for token in tokens:
        if token < timestamp_begin:
            text.append(token)
            continue
        time_s = (token - timestamp_begin) * TIME_PRECISION_S
        if text:  # a timestamp after text closes the segment (text before any timestamp starts at 0)
            segments.append((start if start is not None else 0.0, time_s, text))
            start, text = None, []
        else:  # a timestamp after a timestamp (or first) opens the next segment
            start = time_s
    if text:
        segments.append((start if start is not None else 0.0, None, text))
    return segments
