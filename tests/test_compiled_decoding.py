"""The compiled decoding loop (:mod:`gpu_transcribe_engine.compiled_decoding`) against the eager one, with the
real whisper-base model on real Swedish speech (CPU, float32).

The loop is compiled by ``torch.compile`` with a backend that runs dynamo's captured graph as it is and
counts its runs: dynamo captures the decoder step with its static cache and guards exactly as for inductor
(the CUDA default), without inductor's code generation (12-34 s on this machine's 2 cores, the module's
docstring), so the test checks the wrapper, the buffers and static caches, beam search's in-place
reordering, which calls run compiled, and the captured graph's tokens.
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


GRAPH_RUNS: list[int] = [0]
"""Runs of the graphs dynamo captured (:func:`_counting_backend`)."""


def _counting_backend(graph: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
    """A ``torch.compile`` backend that runs dynamo's captured graph as it is and counts each run."""
    del example_inputs

    def run(*args: Any) -> Any:
        GRAPH_RUNS[0] += 1
        return graph.forward(*args)

    return run


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
    compiled.decoder.compiled = CompiledDecoding(compiled.model, {"backend": _counting_backend, "mode": None})
    assert eager.info.decode_loop == "eager" and eager.decoder.compiled is None
    return eager, compiled


def _decode(
    engine: Any, clips: list[Path], num_beams: int, temperature: float, pick: list[int] | None = None
) -> list[tuple[int, ...]]:
    from gpu_transcribe_engine.audio import decode_audio

    pieces = [decode_audio(clip) for clip in clips]
    features = engine._features(pieces, full_windows=True)["input_features"]
    decoder = engine.decoder
    with torch.inference_mode():
        torch.manual_seed(0)
        encoder_output = decoder.encode(features)
        cross = decoder.cross_cache(encoder_output)
        if pick is not None:  # as a fallback round over some of the windows
            encoder_output, cross = encoder_output[pick], decoder.select(cross, pick)
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
    expected = _decode(eager, clips, num_beams, temperature)
    runs_before = GRAPH_RUNS[0]
    got = _decode(compiled, clips, num_beams, temperature)
    assert got == expected
    assert all(len(tokens) > 5 for tokens in got)
    assert GRAPH_RUNS[0] - runs_before >= max(len(t) for t in got)  # the captured graph ran each step
    assert compiled.model.config._attn_implementation == GROUPED_STATIC_ATTENTION


def test_batches_reuse_one_buffer_and_a_subset_of_windows_decodes_eagerly(engines: tuple[Any, Any]) -> None:
    """The cross-attention cache is written into the loop's buffer, and a smaller batch's views share it;
    only the cache last written decodes compiled (a fallback round's picked rows do not), and the static
    cache is reset between uses and counts the positions filled."""
    eager, compiled = engines
    loop: CompiledDecoding = compiled.decoder.compiled
    decoder = compiled.decoder
    d_model = compiled.model.config.d_model
    with torch.inference_mode():  # as the engine decodes
        first = decoder.cross_cache(torch.randn(3, 1500, d_model))
        first_keys: Any = next(iter(first.layers))
        assert loop.owns(first)
        static = loop.cache(first, rows=15)
        layer: Any = static.self_attention_cache.layers[0]
        layer.keys.fill_(1.0)
        assert loop.cache(first, rows=15).self_attention_cache is static.self_attention_cache
        assert float(layer.keys.abs().sum()) == 0.0  # reset between uses
        second = decoder.cross_cache(torch.randn(2, 1500, d_model))  # a smaller batch: a view of the buffer
        second_keys: Any = next(iter(second.layers))
        assert second_keys.keys.data_ptr() == first_keys.keys.data_ptr()
        assert loop.owns(second) and not loop.owns(first)
        with pytest.raises(ValueError, match="not the one in the buffer"):
            loop.cache(first, rows=10)
        with pytest.raises(ValueError, match="3 decoder rows for 2 windows"):
            loop.cache(second, rows=3)
        picked = decoder.select(second, [1])
        assert not loop.owns(picked)
    clip = [clip_path(SWEDISH_CLIPS[0])]
    runs_before = GRAPH_RUNS[0]
    assert _decode(compiled, clip, 5, 0.0, pick=[0]) == _decode(eager, clip, 5, 0.0, pick=[0])
    assert GRAPH_RUNS[0] == runs_before  # picked rows: the eager loop


def test_beam_reordering_permutes_the_filled_positions_in_place() -> None:
    """``reorder_cache`` moves rows within the static tensors over the positions filled so far, keeping
    their addresses; positions past them are not touched."""
    from transformers import DynamicCache, StaticCache, WhisperConfig

    config = WhisperConfig(d_model=16, decoder_attention_heads=2, decoder_layers=1, max_target_positions=8)
    static = StaticCache(config, max_cache_len=8)
    cache = StaticSharedCache(static, DynamicCache())
    keys = torch.arange(3, dtype=torch.float32).view(3, 1, 1, 1).expand(3, 2, 2, 8).contiguous()
    static.update(keys, keys.clone(), 0)
    cache.filled = 2
    layer: Any = static.layers[0]
    layer.keys[:, :, 5] = torch.tensor([10.0, 11.0, 12.0]).view(3, 1, 1)  # past the filled positions
    address = layer.keys.data_ptr()
    cache.reorder_cache(torch.tensor([2, 2, 0]))
    assert layer.keys.data_ptr() == address
    assert layer.keys[:, 0, 1, 0].tolist() == [2.0, 2.0, 0.0]
    assert layer.values[:, 0, 1, 0].tolist() == [2.0, 2.0, 0.0]
    assert layer.keys[:, 0, 5, 0].tolist() == [10.0, 11.0, 12.0]


def test_auto_is_the_eager_loop_until_the_compiled_one_has_run_on_a_gpu() -> None:
    """``auto``: eager; ``compiled`` refused off the fast path, in one line naming the option."""
    assert resolve_decode_loop("auto", fast=True) == "eager"
    assert resolve_decode_loop("compiled", fast=True) == "compiled"
    assert resolve_decode_loop("eager", fast=False) == "eager"
    with pytest.raises(ValueError, match=r"^--decode-loop compiled: needs the engine's fast decoding path"):
        resolve_decode_loop("compiled", fast=False)
    with pytest.raises(ValueError, match=r"^--decode-loop: 'static' is not one of auto, eager, compiled"):
        resolve_decode_loop("static", fast=True)


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
