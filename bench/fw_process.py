"""faster-whisper's batched pipeline in a process of its own: the peer that ``bench/engine.py`` times.

    python -m bench.fw_process AUDIO --model CT2_DIR --out RESULT.json [--device cpu|cuda]
        [--compute-type int8|float16|...] [--batch-size N] [--beam-size N] [--language CODE|auto]

faster-whisper has no command line of its own; this is the few lines a user of it writes: import it, load
``WhisperModel``, run ``BatchedInferencePipeline.transcribe`` with its defaults (Silero VAD, beam 5, the
first temperature only), write the text. The result file holds ``text``, ``language``, ``load_s`` (model
load), ``transcribe_s`` (decoding the audio, VAD and generation, the segments consumed) and the segments.
The process's own start-up (Python, imports) is what ``bench/engine.py`` measures around it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Transcribe one file with faster-whisper batched and write the JSON result; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("audio", type=Path)
    parser.add_argument("--model", required=True, help="CTranslate2 Whisper folder")
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON result")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--compute-type", default=None, help="default: int8 on CPU, float16 on CUDA")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per batch (faster-whisper: 8)")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--language", default="auto", help="language code, or auto to detect")
    args = parser.parse_args(argv)

    from faster_whisper import BatchedInferencePipeline, WhisperModel

    compute_type = args.compute_type or ("float16" if args.device == "cuda" else "int8")
    started = time.perf_counter()
    model = WhisperModel(args.model, device=args.device, compute_type=compute_type)
    loaded = time.perf_counter()
    segments, info = BatchedInferencePipeline(model).transcribe(
        str(args.audio),
        batch_size=args.batch_size,
        beam_size=args.beam_size,
        language=None if args.language == "auto" else args.language,
    )
    kept = [
        {"start_s": s.start, "end_s": s.end, "text": s.text.strip(), "avg_logprob": s.avg_logprob}
        for s in segments
    ]
    finished = time.perf_counter()
    result = {
        "text": " ".join(s["text"] for s in kept if s["text"]),
        "language": info.language,
        "compute_type": compute_type,
        "load_s": loaded - started,
        "transcribe_s": finished - loaded,
        "segments": kept,
    }
    args.out.write_text(json.dumps(result, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
