"""The compiled decoding loop (:mod:`gpu_transcribe_engine.compiled_decoding`) against the eager one, with the
real whisper-base model on real Swedish speech (CPU, float32).

The loop is compiled by ``torch.compile`` with dynamo's ``eager`` backend here: dynamo captures the decoder
step with its static cache and guards exactly as for inductor (the CUDA default), without inductor's code
generation (20-32 s on this machine's 2 cores, the module's docstring), so the test checks the wrapper, the
static and cross-attention caches, beam search's in-place reordering and the captured graph's tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from bench.fixtures import SWEDISH_CLIPS, clip_path, find_test_model
from gpu_transcribe_engine.compiled_decoding import (
    GROUPED_STATIC_ATTENTION,
    CompiledDecoding,
    StaticSharedCache,
    resolve_decode_loop,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engines() -> tuple[Any, Any]:
    """Two float32 CPU engines on whisper-base: the eager loop, and the compiled loop (dynamo, eager
    backend)."""
    from gpu_transcribe_engine.engine import WhisperEngine

    found = find_test_model()
    if found is None:
        pytest.skip("no test model: set GPU_TRANSCRIBE_TEST_MODEL or run `make offline-model`")
    eager = WhisperEngine.load(str(found), device="cpu", fast=True, dtype="float32", decode_loop="eager")
    compiled = WhisperEngine.load(str(found), device="cpu", fast=True, dtype="float32", decode_loop="eager")
    compiled.decoder.compiled = CompiledDecoding(compiled.model, {"backend": "eager", "mode": None})
    assert eager.info.decode_loop == "eager" and eager.decoder.compiled is None
    return eager, compiled


def _decode(engine: Any, clips: list[Path], num_beams: int, temperature: float) -> list[tuple[int, ...]]:
    from gpu_transcribe_engine.audio import decode_audio

    pieces = [decode_audio(clip) for clip in clips]
    features = engine._features(pieces, full_windows=True)["input_features"]
    decoder = engine.decoder
    with torch.inference_mode():
        torch.manual_seed(0)
        encoder_output = decoder.encode(features)
        cross = decoder.cross_cache(encoder_output)
        decoded = decoder.decode(
            encoder_output, decoder.prompt("sv", "transcribe"), num_beams, temperature, 48, cross=cross
        )
    return [d.tokens for d in decoded]


@pytest.mark.parametrize(
    ("num_beams", "temperature", "windows"),
    [(5, 0.0, 2), (1, 0.0, 2), (5, 0.4, 2), (5, 0.0, 1)],
    ids=["beam-search", "greedy", "sampling", "beam-search-one-window"],
)
def test_the_compiled_loop_decodes_the_eager_loops_tokens(
    engines: tuple[Any, Any], num_beams: int, temperature: float, windows: int
) -> None:
    """Beam search, greedy search and best-of sampling (same seed) on real Swedish windows give identical
    tokens through the static cache and the captured step, and the steps did run compiled."""
    eager, compiled = engines
    clips = [clip_path(c) for c in SWEDISH_CLIPS[:windows]]
    steps_before = compiled.decoder.compiled.compiled_steps
    expected = _decode(eager, clips, num_beams, temperature)
    got = _decode(compiled, clips, num_beams, temperature)
    assert got == expected
    assert all(len(tokens) > 5 for tokens in got)
    assert compiled.decoder.compiled.compiled_steps - steps_before >= max(len(t) for t in got)
    assert compiled.model.config._attn_implementation == GROUPED_STATIC_ATTENTION


def test_a_batch_shape_reuses_its_static_cache_and_cross_buffers(engines: tuple[Any, Any]) -> None:
    """The second decoding of a shape writes into the first one's tensors (what CUDA graphs replay)."""
    _eager, compiled = engines
    loop: CompiledDecoding = compiled.decoder.compiled
    with torch.inference_mode():  # as the engine decodes
        cross = compiled.decoder.cross_cache(torch.randn(2, 1500, compiled.model.config.d_model))
        first = loop.cache(cross, rows=10)
        layer: Any = first.self_attention_cache.layers[0]
        if not layer.is_initialized:
            layer.lazy_initialization(torch.zeros(10, 8, 1, 64), torch.zeros(10, 8, 1, 64))
        layer.keys.fill_(1.0)
        second = loop.cache(cross, rows=10)
        assert second.self_attention_cache is first.self_attention_cache
        assert float(layer.keys.abs().sum()) == 0.0  # reset between uses
        first_cross: Any = first.cross_attention_cache.layers[0]
        second_cross: Any = second.cross_attention_cache.layers[0]
        given: Any = next(iter(cross.layers))
        assert second_cross.keys.data_ptr() == first_cross.keys.data_ptr() != given.keys.data_ptr()
        assert torch.equal(second_cross.keys, given.keys)
        with pytest.raises(ValueError, match="3 decoder rows for 2 windows"):
            loop.cache(cross, rows=3)


def test_beam_reordering_permutes_the_static_rows_in_place() -> None:
    """``reorder_cache`` moves rows within the static tensors, keeping their addresses."""
    from transformers import DynamicCache, StaticCache, WhisperConfig

    config = WhisperConfig(d_model=16, decoder_attention_heads=2, decoder_layers=1, max_target_positions=8)
    static = StaticCache(config, max_cache_len=8)
    cache = StaticSharedCache(static, DynamicCache())
    keys = torch.arange(3, dtype=torch.float32).view(3, 1, 1, 1).expand(3, 2, 1, 8).contiguous()
    static.update(keys, keys.clone(), 0)
    layer: Any = static.layers[0]
    address = layer.keys.data_ptr()
    cache.reorder_cache(torch.tensor([2, 2, 0]))
    assert layer.keys.data_ptr() == address
    assert layer.keys[:, 0, 0, 0].tolist() == [2.0, 2.0, 0.0]
    assert layer.values[:, 0, 0, 0].tolist() == [2.0, 2.0, 0.0]


def test_auto_compiles_only_long_lived_processes_on_cuda() -> None:
    """``auto``: eager on CPU and for one-shot runs; compiled for a server or worker on CUDA; ``compiled``
    refused off the fast path, in one line naming the option."""
    assert resolve_decode_loop("auto", "cpu", fast=True, long_lived=True) == "eager"
    assert resolve_decode_loop("auto", "cuda", fast=True, long_lived=False) == "eager"
    assert resolve_decode_loop("auto", "cuda", fast=True, long_lived=True) == "compiled"
    assert resolve_decode_loop("auto", "cuda", fast=False, long_lived=True) == "eager"
    assert resolve_decode_loop("compiled", "cpu", fast=True) == "compiled"
    with pytest.raises(ValueError, match=r"^--decode-loop compiled: needs the engine's fast decoding path"):
        resolve_decode_loop("compiled", "cuda", fast=False)
    with pytest.raises(ValueError, match=r"^--decode-loop: 'static' is not one of auto, eager, compiled"):
        resolve_decode_loop("static", "cuda", fast=True)


def test_the_engine_command_refuses_a_compiled_loop_off_the_fast_path_before_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--decode-loop compiled`` on a transformers release without the fast path: a ``fatal``
    ``bad_option`` event naming the option, exit 3, nothing written."""
    import io
    import json

    import gpu_transcribe_engine.__main__ as engine_cli
    from gpu_transcribe_engine import fast_path

    monkeypatch.setattr(fast_path, "TESTED_TRANSFORMERS", ("0.1",))
    args = engine_cli.build_parser().parse_args(
        [
            "transcribe",
            str(clip_path(SWEDISH_CLIPS[0])),
            *("--out", str(tmp_path / "out"), "--device", "cpu", "--decode-loop", "compiled"),
            *("--model", str(tmp_path / "no-model-needed")),
        ]
    )
    events = io.StringIO()
    assert engine_cli._transcribe(args, events) == engine_cli.EXIT_FATAL
    (fatal,) = [json.loads(line) for line in events.getvalue().splitlines()]
    assert fatal["event"] == "fatal" and fatal["code"] == "bad_option"
    assert fatal["message"].startswith("--decode-loop compiled: needs the engine's fast decoding path")
    assert not any((tmp_path / "out").iterdir())
