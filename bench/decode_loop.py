"""Benchmark: the compiled decoding loop (``--decode-loop compiled``) against the eager one, in one process.

    python -m bench.decode_loop [--model models/whisper-base] [--device cpu|cuda] [--audio FILE|FILE.npy]
        [--language en] [--windows 8] [--beams 5] [--max-new-tokens 120] [--repeats 3]

Two engines load the same weights on ``--device`` in the device's default dtype, one per loop
(:mod:`gpu_transcribe_engine.compiled_decoding`). The first ``--windows`` 30 s windows of ``--audio`` are
encoded once (``--audio`` may also be a ``.npy`` of 16 kHz float32 samples); each engine then decodes them
as one batch with beam search at temperature 0 (``WindowDecoder.decode``, the main pass of the ``batched``
algorithm), ``--repeats`` times after a first, untimed call (for the compiled loop the first call
compiles); a recording with fewer windows is repeated to make up the batch. Printed: the compile
seconds (the compiled loop's first call less the eager loop's), each loop's fastest decode, the ratio
(eager seconds over compiled: above 1.0 the compiled loop is faster), milliseconds per decoding step,
and how many windows decoded the same tokens in both (bfloat16 or float16 kernels from inductor round
differently from the eager ones, so a window may differ by a token; in float32 the tokens are identical,
``tests/test_compiled_decoding.py``).
The two loops alternate within each repeat, so drifting load affects both alike.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

WINDOW_SAMPLES = 30 * 16000


def decode_once(
    engine: Any, encoder_output: Any, cross: Any, prompt: list[int], beams: int, max_new: int
) -> tuple[float, list[tuple[int, ...]]]:
    """Wall seconds of one ``decode`` of the batch (synchronised on CUDA) and the tokens per window."""
    import torch

    synchronize = torch.cuda.synchronize if encoder_output.device.type == "cuda" else (lambda: None)
    synchronize()
    started = time.perf_counter()
    with torch.inference_mode():
        decoded = engine.decoder.decode(encoder_output, prompt, beams, 0.0, max_new, cross=cross)
    synchronize()
    return time.perf_counter() - started, [d.tokens for d in decoded]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print one table. Returns the exit code (2: bad arguments)."""
    parser = argparse.ArgumentParser(prog="python -m bench.decode_loop", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/whisper-base")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--audio", type=Path, default=Path("recordings/en_swc_william-shakespeare-part1.ogg"))
    parser.add_argument("--language", default="en")
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--beams", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.windows < 1 or args.repeats < 1 or args.beams < 1 or not 1 <= args.max_new_tokens <= 440:
        parser.error("--windows, --repeats and --beams must be at least 1, --max-new-tokens 1..440")

    import numpy as np
    import torch

    from gpu_transcribe_engine.audio import decode_audio
    from gpu_transcribe_engine.engine import WhisperEngine

    samples = np.load(args.audio) if args.audio.suffix == ".npy" else decode_audio(args.audio)
    windows = [samples[i : i + WINDOW_SAMPLES] for i in range(0, len(samples), WINDOW_SAMPLES)]
    pieces = [windows[i % len(windows)] for i in range(args.windows)]
    engines = {
        loop: WhisperEngine.load(args.model, device=args.device, decode_loop=loop)
        for loop in ("eager", "compiled")
    }
    info = engines["eager"].info
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else "none"
    print(
        f"device {info.device} ({gpu}), {info.dtype}, torch {torch.__version__}, transformers "
        f"{info.transformers_version}; {len(pieces)} windows of {args.audio.name}, beam {args.beams}, "
        f"at most {args.max_new_tokens} tokens",
        flush=True,
    )
    inputs: dict[str, tuple[Any, Any, list[int]]] = {}
    first_s: dict[str, float] = {}
    tokens: dict[str, list[tuple[int, ...]]] = {}
    for loop, engine in engines.items():
        features = engine._features(pieces, full_windows=True)["input_features"]
        with torch.inference_mode():
            encoder_output = engine.decoder.encode(features)
            cross = engine.decoder.cross_cache(encoder_output)
        inputs[loop] = (encoder_output, cross, engine.decoder.prompt(args.language, "transcribe"))
        first_s[loop], tokens[loop] = decode_once(engine, *inputs[loop], args.beams, args.max_new_tokens)
    best = {loop: float("inf") for loop in engines}
    for _ in range(args.repeats):
        for loop, engine in engines.items():
            seconds, tokens[loop] = decode_once(engine, *inputs[loop], args.beams, args.max_new_tokens)
            best[loop] = min(best[loop], seconds)
    steps = max(len(t) for t in tokens["eager"]) + 1
    same = sum(a == b for a, b in zip(tokens["eager"], tokens["compiled"], strict=True))
    print(
        f"compile (first compiled call less first eager call): {first_s['compiled'] - first_s['eager']:.1f} s"
    )
    print("| loop | decode (fastest) | per step | same tokens |")
    print("|---|---|---|---|")
    for loop in engines:
        print(f"| {loop} | {best[loop]:.2f} s | {best[loop] / steps * 1000:.1f} ms | {same}/{len(pieces)} |")
    print(f"ratio (eager / compiled): {best['eager'] / best['compiled']:.2f}x over {steps} steps", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
