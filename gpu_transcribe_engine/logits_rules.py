"""The rules applied to the decoder's scores at every step of the ``generate`` calls of
:class:`gpu_transcribe_engine.whisper_model.WindowDecoder`, as transformers ``LogitsProcessor`` objects:
token suppression (:class:`SuppressTokens`), OpenAI's timestamp rules (:class:`TimestampRules`), the early
end of repetition loops (:class:`LoopStop`), temperature sampling (:class:`Sampler`), and OpenAI's
compression ratio (:func:`compression_ratio`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

import torch
from transformers import LogitsProcessor

LOOP_MIN_TOKENS = 40
"""Generated tokens before :class:`LoopStop` first looks: about 150 characters, where normal speech
compresses by a ratio near 1 and a loop well above OpenAI's 2.4."""
LOOP_CHECK_EVERY = 8
"""Decoding steps between two checks of :class:`LoopStop` (each decodes every row's text)."""


class SuppressTokens(LogitsProcessor):
    """Sets the scores of fixed token ids to ``-inf``, at every step or only at the first generated one.

    The rule of transformers' ``SuppressTokensLogitsProcessor`` and ``SuppressTokensAtBeginLogitsProcessor``
    (OpenAI's ``SuppressTokens`` and ``SuppressBlank``), with the vocabulary mask built once instead of by
    ``torch.isin`` over the vocabulary at every step: measured 55 ms per step for 35 rows on 2 CPU cores.

    Args:
        token_ids: ids to suppress.
        vocab_size: size of the score rows.
        device: where the scores live.
        only_at: when given, suppress only when the sequences are this long (the prompt's length: the first
            generated token).
    """

    def __init__(
        self, token_ids: Sequence[int], vocab_size: int, device: torch.device, only_at: int | None = None
    ) -> None:
        """Build the mask once."""
        self.mask = torch.zeros(vocab_size, dtype=torch.bool, device=device)
        self.mask[[t for t in token_ids if 0 <= t < vocab_size]] = True
        self.only_at = only_at

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """``scores`` ``(rows, vocab)`` with the masked ids at ``-inf`` (a new tensor)."""
        if self.only_at is not None and input_ids.shape[1] != self.only_at:
            return scores
        return scores.masked_fill(self.mask[: scores.shape[-1]], -float("inf"))  # type: ignore[return-value]


class TimestampRules(LogitsProcessor):
    """OpenAI's timestamp rules (``ApplyTimestampRules`` in ``whisper/decoding.py``), the rule of
    transformers' ``WhisperTimeStampLogitsProcessor`` computed for every row at once.

    For each row: ``<|notimestamps|>`` is never chosen; timestamps come in pairs (after one timestamp that
    follows text, only a timestamp or the end; after two, only text); timestamps never decrease (nor repeat,
    but for the one closing a pair); the first token is a timestamp of at most ``max_initial_index``; and
    when the timestamps' total probability exceeds that of the most probable text token, a timestamp is
    chosen. transformers' processor walks the rows and their tokens in Python at every step: on 2 CPU cores,
    40 rows cost 5.7 ms per step, a tenth of a beam-search step of whisper-base
    (``tests/test_engine_speed_parts.py`` checks both give the same scores).

    Args:
        begin_index: length of the prompt (where generated tokens start).
        timestamp_begin: id of ``<|0.00|>`` (every id from it on is a timestamp).
        eos_id: the end token (ids below it are text).
        no_timestamps_id: id of ``<|notimestamps|>``.
        max_initial_index: the first timestamp's largest index (50: 1.0 s), or ``None`` for no limit.
    """

    def __init__(
        self,
        begin_index: int,
        timestamp_begin: int,
        eos_id: int,
        no_timestamps_id: int,
        max_initial_index: int | None,
    ) -> None:
        """Keep the token ids."""
        self.begin_index = begin_index
        self.timestamp_begin = timestamp_begin
        self.eos_id = eos_id
        self.no_timestamps_id = no_timestamps_id
        self.max_initial_index = max_initial_index

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """``scores`` ``(rows, vocab)`` with the forbidden tokens at ``-inf`` (changed in place, returned)."""
        begin = self.timestamp_begin
        inf = -float("inf")
        scores[:, self.no_timestamps_id] = inf
        generated = input_ids[:, self.begin_index :]
        length = generated.shape[1]
        if length == 0:
            scores[:, :begin] = inf
            if self.max_initial_index is not None:
                scores[:, begin + self.max_initial_index + 1 :] = inf
        else:
            is_time = generated >= begin
            last = is_time[:, -1]
            penultimate = is_time[:, -2] if length >= 2 else torch.ones_like(last)
            closing = last & ~penultimate  # a timestamp after text: the pair's second, or the end
            scores[(last & penultimate).nonzero()[:, 0], begin:] = inf
            scores[closing.nonzero()[:, 0], : self.eos_id] = inf
            # timestamps never decrease, so the last one is the largest
            latest = torch.where(is_time, generated, torch.full_like(generated, -1)).max(dim=1).values
            lowest = torch.where(closing, latest, latest + 1)
            lowest = torch.where(is_time.any(dim=1), lowest, torch.full_like(lowest, begin))
            times = torch.arange(begin, scores.shape[-1], device=scores.device)
            scores[:, begin:].masked_fill_(times < lowest[:, None], inf)
        # OpenAI compares log-probabilities; both sides share the softmax's normaliser, so the scores do
        timestamp = scores[:, begin:].float().logsumexp(dim=-1)
        best_text = scores[:, :begin].float().max(dim=-1).values
        scores[(timestamp > best_text).nonzero()[:, 0], :begin] = inf
        return scores


class LoopStop(LogitsProcessor):
    """Ends a row's decoding once its text is a repetition loop: every :data:`LOOP_CHECK_EVERY` steps, a row
    whose generated text (at least :data:`LOOP_MIN_TOKENS` tokens) has a compression ratio above
    ``threshold`` (OpenAI's rule, :func:`compression_ratio`) is given only the end token.

    A window's decoding that loops would otherwise run to ``max_new_tokens`` (220 steps) and hold every
    other window of its batch for those steps; its looped text fails the same compression-ratio rule at the
    end, so ending it early changes when the window falls back, not whether (measurements at
    :data:`gpu_transcribe_engine.decoding_rules.STOP_LOOPS`).

    Args:
        begin_index: length of the prompt (where generated tokens start).
        eos_id: the end token, also the first special token (text tokens are below it).
        decode_text: the tokenizer's decoding of text token ids.
        threshold: the compression ratio above which a text is a loop.
    """

    def __init__(
        self,
        begin_index: int,
        eos_id: int,
        decode_text: Callable[[list[int]], str],
        threshold: float,
        min_tokens: int = 0,
    ) -> None:
        """Keep the rule's parameters."""
        self.begin_index = begin_index
        self.eos_id = eos_id
        self.decode_text = decode_text
        self.threshold = threshold
        self.min_tokens = max(min_tokens, LOOP_MIN_TOKENS)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """``scores`` ``(rows, vocab)`` with the looping rows' scores at ``-inf`` but the end token's."""
        generated = input_ids.shape[1] - self.begin_index
        if generated < self.min_tokens or generated % LOOP_CHECK_EVERY:
            return scores
        looping = []
        for row, ids in enumerate(input_ids[:, self.begin_index :].tolist()):
            if ids[-1] == self.eos_id:  # a finished sample, padded with the end token
                continue
            if compression_ratio(self.decode_text([t for t in ids if t < self.eos_id])) > self.threshold:
                looping.append(row)
        if looping:
            scores[looping] = -float("inf")
            scores[looping, self.eos_id] = 0.0
        return scores


class Sampler(LogitsProcessor):
    """Draws each row's next token from ``softmax(scores / temperature)`` and leaves it the only choice, so
    that a greedy ``generate`` (``do_sample=False``) samples; keeps each drawn token's log-probability.

    The draw is by inverse transform: one uniform number per row against the row's cumulative
    probabilities (float64). transformers' own sampling calls ``torch.multinomial``, which on CPU draws an
    exponential number for every vocabulary entry: measured 5.9 ms per step for 5 rows of Whisper's 51,865
    tokens on 2 CPU cores (0.6 ms here), 22 % of the fallback's time on the disfluent English corpus
    recording (2.9 s of 12.9 s). The distribution is the same; the draws, from the same seed, differ.

    The log-probabilities kept are those of OpenAI's ``transcribe()``: ``log_softmax`` of the processed
    scores without the temperature (``whisper/decoding.py``, ``GreedyDecoder.update``). Put it last in the
    processor list.

    Args:
        temperature: above 0.

    Attributes:
        logprobs: one ``(rows,)`` float32 tensor per step, the drawn tokens' log-probabilities (also for
            rows that had already ended; cut them at each row's length).
    """

    def __init__(self, temperature: float) -> None:
        """Keep the temperature; ``logprobs`` starts empty."""
        if temperature <= 0.0:
            raise ValueError(f"Sampler: temperature must be above 0, not {temperature}")
        self.temperature = temperature
        self.logprobs: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """``scores`` ``(rows, vocab)`` with every entry ``-inf`` but each row's drawn token (0)."""
        logits = scores.float()
        probs = (logits / self.temperature).softmax(dim=-1)
        cumulative = probs.double().cumsum(dim=-1)
        draw = torch.rand((logits.shape[0], 1), dtype=torch.float64, device=logits.device)
        tokens = torch.searchsorted(cumulative, draw * cumulative[:, -1:], right=True)
        tokens = tokens.clamp_(max=logits.shape[-1] - 1)
        impossible = probs.gather(1, tokens) <= 0.0  # the draw rounded onto the very end of the row
        if bool(impossible.any()):
            tokens = torch.where(impossible, probs.argmax(dim=-1, keepdim=True), tokens)
        self.logprobs.append(logits.log_softmax(dim=-1).gather(1, tokens).squeeze(1))
        chosen = torch.full_like(scores, -float("inf"))
        return chosen.scatter_(1, tokens, 0.0)  # type: ignore[return-value]


def compression_ratio(text: str) -> float:
    """OpenAI's compression ratio: UTF-8 bytes of ``text`` over their zlib-compressed size; 0 if empty.

    Computed on the text, as OpenAI's ``transcribe()`` and faster-whisper do (threshold 2.4), not on the
    token ids as transformers does (its threshold 1.35).
    """
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0
