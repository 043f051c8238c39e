"""The engine's speed parts that need no model: the stage clock, the decoding-step attention and the loop
stop (the whole engine runs on real speech in ``tests/test_engine.py``)."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from gpu_transcribe_engine.fast_path import decode_step_attention, grouped_sdpa_attention
from gpu_transcribe_engine.logits_rules import (
    LOOP_CHECK_EVERY,
    LOOP_MIN_TOKENS,
    LoopStop,
    Sampler,
    TimestampRules,
    compression_ratio,
)
from gpu_transcribe_engine.stages import STAGES, StageClock


def test_stage_clock_counts_each_stage_and_a_call_share() -> None:
    clock = StageClock()
    before = clock.totals()
    with clock.stage("encoder"):
        time.sleep(0.02)
    with clock.stage("decoder"):
        time.sleep(0.01)
    share = clock.since(before)
    assert set(share) == set(STAGES)
    assert share["encoder"] >= 0.015 and share["decoder"] >= 0.005
    assert share["encoder"] > share["decoder"] and share["fallback"] == 0.0
    later = clock.totals()
    with clock.stage("encoder"):
        pass
    assert clock.since(later)["encoder"] < 0.01  # only what came after ``later``
    with pytest.raises(KeyError, match="unknown engine stage 'decode'"), clock.stage("decode"):
        pass


def test_stage_clock_synchronizes_at_the_end_of_each_stage() -> None:
    calls: list[str] = []
    clock = StageClock(lambda: calls.append("sync"))
    with clock.stage("vad"):
        assert calls == []
    assert calls == ["sync"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_step_attention_is_sdpa(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(6, 4, 1, 16, generator=generator).to(dtype)
    key = torch.randn(6, 4, 9, 16, generator=generator).to(dtype)
    value = torch.randn(6, 4, 9, 16, generator=generator).to(dtype)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    expected = F.scaled_dot_product_attention(query.float(), key.float(), value.float(), scale=0.3)
    got = decode_step_attention(query, key, value, None, 0.3)
    assert got.dtype == dtype and got.shape == (6, 4, 1, 16)
    torch.testing.assert_close(got.float(), expected, atol=tolerance, rtol=tolerance)
    allowed = torch.ones(6, 1, 1, 12, dtype=torch.bool)  # longer than the keys: cut to 9
    allowed[:, :, :, 5:] = False
    masked = F.scaled_dot_product_attention(
        query.float(), key.float(), value.float(), attn_mask=allowed[..., :9], scale=0.3
    )
    torch.testing.assert_close(
        decode_step_attention(query, key, value, allowed, 0.3).float(), masked, atol=tolerance, rtol=tolerance
    )
    additive = torch.zeros(6, 1, 1, 9).masked_fill(~allowed[..., :9], -float("inf"))
    torch.testing.assert_close(
        decode_step_attention(query, key, value, additive, 0.3).float(),
        masked,
        atol=tolerance,
        rtol=tolerance,
    )


def test_grouped_attention_of_a_step_matches_each_windows_own_attention() -> None:
    """The beams of a window (rows in groups of 3) against its one cross-attention row, as the fast path
    decodes: the same as every beam attending to a copy of its window's keys."""
    generator = torch.Generator().manual_seed(1)
    query = torch.randn(6, 4, 1, 16, generator=generator)
    key = torch.randn(2, 4, 30, 16, generator=generator)
    value = torch.randn(2, 4, 30, 16, generator=generator)
    out, _ = grouped_sdpa_attention(torch.nn.Module(), query, key, value, None, scaling=0.25)
    expected = F.scaled_dot_product_attention(
        query, key.repeat_interleave(3, dim=0), value.repeat_interleave(3, dim=0), scale=0.25
    )
    torch.testing.assert_close(out, expected.transpose(1, 2), atol=1e-5, rtol=1e-5)


def test_loop_stop_ends_only_looping_rows_at_its_checks() -> None:
    eos = 100
    speech = (
        "four score and seven years ago our fathers brought forth on this continent a new nation conceived "
        "in liberty and dedicated to the proposition that all men are created equal now we are engaged in "
        "a great civil war testing whether that nation or any nation so conceived can long endure"
    )
    words = {index + 1: word + " " for index, word in enumerate(speech.split())}
    stop = LoopStop(
        begin_index=2, eos_id=eos, decode_text=lambda ids: "".join(words[i] for i in ids), threshold=2.4
    )
    generated = LOOP_MIN_TOKENS + (-LOOP_MIN_TOKENS) % LOOP_CHECK_EVERY
    loop = [1, 2] * (generated // 2)
    varied = list(range(1, generated + 1))
    finished = [*varied[:-1], eos]
    assert compression_ratio("".join(words[i] for i in loop)) > 2.4
    assert compression_ratio("".join(words[i] for i in varied)) < 2.4
    ids = torch.tensor([[50, 51, *loop], [50, 51, *varied], [50, 51, *finished]])
    scores = stop(ids, torch.zeros(3, eos + 5))
    assert scores[0].argmax() == eos and torch.isinf(scores[0, :eos]).all()
    assert not torch.isinf(scores[1]).any() and not torch.isinf(scores[2]).any()
    early = ids[:, :-1]  # one step before a check: not looked at
    assert not torch.isinf(stop(early, torch.zeros(3, eos + 5))).any()


def test_timestamp_rules_give_transformers_scores_at_every_step() -> None:
    """Rows decoded step by step by sampling from random scores under transformers' own
    ``WhisperTimeStampLogitsProcessor``: at every step our vectorised rule gives exactly its scores (text,
    timestamp pairs, the end token, the first-timestamp limit and the timestamp-probability rule all
    occur along the way)."""
    from types import SimpleNamespace

    from transformers.generation.logits_process import WhisperTimeStampLogitsProcessor

    eos, no_timestamps, vocab = 50, 52, 90  # text 0-49, specials 50-52, timestamps 53-89
    begin = no_timestamps + 1
    config = SimpleNamespace(
        no_timestamps_token_id=no_timestamps,
        eos_token_id=eos,
        bos_token_id=eos,
        max_initial_timestamp_index=5,
        _detect_timestamp_from_logprob=True,
    )
    prompt = [51, 7, 8]
    theirs = WhisperTimeStampLogitsProcessor(config, begin_index=len(prompt))  # type: ignore[arg-type]
    ours = TimestampRules(len(prompt), begin, eos, no_timestamps, 5)
    generator = torch.Generator().manual_seed(3)
    ids = torch.tensor([prompt] * 12)
    seen_pairs = 0
    for _ in range(40):
        scores = torch.randn(12, vocab, generator=generator) * 3
        scores[:, begin:] += torch.linspace(-2.0, 2.0, 12)[:, None]  # rows that favour timestamps more
        expected = theirs(ids, scores)
        torch.testing.assert_close(ours(ids, scores.clone()), expected, rtol=0, atol=0)
        probs = torch.softmax(expected.float(), dim=-1)
        picked = torch.multinomial(probs, 1, generator=generator)
        picked[picked == eos] = 0  # keep every row going (the end token is allowed, tested above)
        ids = torch.cat([ids, picked], dim=1)
        seen_pairs += int(((ids[:, -1] >= begin) & (ids[:, -2] >= begin)).sum())
    assert seen_pairs > 0 and (ids[:, len(prompt) :] < eos).any()


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sampler_draws_from_the_tempered_distribution_and_keeps_untempered_logprobs(
    temperature: float,
) -> None:
    """20,000 draws of rows whose probabilities are known: each token's frequency is its probability at
    the temperature (within 4 standard errors), a suppressed token is never drawn, and the kept
    log-probabilities are those of the scores without the temperature (OpenAI's)."""
    torch.manual_seed(0)
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])
    scores = probs.log().repeat(20_000, 1)  # the suppressed token at -inf, as the rules leave it
    sampler = Sampler(temperature)
    out = sampler(torch.zeros((20_000, 3), dtype=torch.long), scores.clone())
    tokens = out.argmax(dim=-1)
    assert bool((out.isinf().sum(dim=-1) == 4).all()), "every row keeps exactly one choice"
    expected = probs ** (1 / temperature) / (probs ** (1 / temperature)).sum()
    counts = torch.bincount(tokens, minlength=5).float() / 20_000
    error = (expected * (1 - expected) / 20_000).sqrt()
    assert bool((counts - expected).abs().le(4 * error + 1e-9).all()), (counts, expected)
    assert counts[4] == 0.0
    (kept,) = sampler.logprobs
    assert torch.allclose(kept, probs.log()[tokens])


def test_sampler_is_reproducible_from_the_seed_and_refuses_temperature_zero() -> None:
    scores = torch.randn(6, 51865)
    draws = []
    for _ in range(2):
        torch.manual_seed(7)
        draws.append(Sampler(0.6)(torch.zeros((6, 1), dtype=torch.long), scores.clone()).argmax(dim=-1))
    assert torch.equal(draws[0], draws[1])
    with pytest.raises(ValueError, match="temperature"):
        Sampler(0.0)


def test_a_round_keeps_its_most_probable_sample_that_is_not_a_loop() -> None:
    from gpu_transcribe_engine.whisper_model import Decoded, best_sample

    loop = Decoded((1, 1, 1), avg_logprob=-0.1, compression_ratio=9.0, temperature=0.2)
    plain = Decoded((1, 2, 3), avg_logprob=-0.6, compression_ratio=1.1, temperature=0.2)
    likelier = Decoded((1, 2, 4), avg_logprob=-0.4, compression_ratio=1.2, temperature=0.2)
    assert best_sample([loop, plain, likelier], loop_threshold=2.4) is likelier
    assert best_sample([loop, plain], loop_threshold=None) is loop  # OpenAI's rule
    assert best_sample([loop], loop_threshold=2.4) is loop  # only loops: the most probable
    with pytest.raises(ValueError):
        best_sample([])
