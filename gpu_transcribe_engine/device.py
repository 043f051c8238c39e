"""Where the engine runs and how: the device (``auto`` -> ``cuda`` or ``cpu``), its dtype, the long-form
algorithm ``auto`` stands for, and how many windows the ``batched`` algorithm decodes at once.
"""

from __future__ import annotations

from typing import Any

CPU_BATCH_SIZE = 8
"""Windows per batch on CPU. Measured (bench/engine.py, whisper-base, beam 5, 2 cores, the 3-minute
Swedish file, 7 windows): batch 4 took 29.0 s, batch 8 25.3 s. Each window in a batch costs about
0.25 GB for the per-step scores ``generate`` keeps (220 steps x 5 beams x 51865 float32), so larger
batches trade a few per cent for gigabytes on a CPU machine."""
CUDA_MAX_BATCH_SIZE = 64
"""Upper bound on windows per batch on a GPU; the actual size is what free memory allows (see
:func:`default_batch_size`)."""


def resolve_device(device: str = "auto") -> str:
    """Map ``auto`` to ``cuda`` when a CUDA GPU is usable, else ``cpu``; pass ``cpu``/``cuda`` through.

    Raises:
        ValueError: ``device`` is not ``auto``, ``cpu`` or ``cuda``, or ``cuda`` without a usable GPU.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                "--device cuda: no CUDA GPU is available on this machine (torch sees none); "
                "use --device cpu, or --device auto to take a GPU when there is one"
            )
        return "cuda"
    if device == "cpu":
        return "cpu"
    raise ValueError(f"--device: {device!r} is not one of auto, cpu, cuda")


def resolve_algorithm(algorithm: str, device: str) -> str:
    """The algorithm ``auto`` stands for on ``device``; ``sequential``/``batched`` pass through.

    ``auto`` is ``batched`` on CPU and on CUDA. On CPU it is faster, more accurate and more complete than
    ``sequential``, which, conditioned on the previous text, can skip a whole sentence (README, "How the
    engine transcribes long audio" and "Performance", give the figures and the commands behind them). On
    GPUs batching is what the algorithm is for (faster-whisper's and WhisperX's GPU path).
    """
    del device  # the same answer on both devices; the parameter keeps a device-specific choice local
    return "batched" if algorithm == "auto" else algorithm


def default_batch_size(device: str, model: Any = None, beam_size: int = 5, max_new_tokens: int = 224) -> int:
    """Windows per batch for the ``batched`` algorithm when the user gives none.

    On CPU: :data:`CPU_BATCH_SIZE`. On CUDA: as many windows as half the free GPU memory holds, by an
    estimate per window of the float16 cross-attention cache (once per window: the beams share it, see
    :mod:`gpu_transcribe_engine.whisper_model`), the self-attention cache (per beam), the float32 per-step
    scores that
    ``generate`` keeps for the log-probability rule (per beam, ``max_new_tokens`` steps) and the
    encoder's activations; at least 1, at most :data:`CUDA_MAX_BATCH_SIZE`. For whisper-small with 5
    beams that is about 0.4 GB per window, so an 80 GB H100 runs the maximum.

    Args:
        device: ``cpu`` or ``cuda``.
        model: the loaded ``WhisperForConditionalGeneration`` (its config sizes the estimate).
        beam_size: beams per window.
        max_new_tokens: tokens generated per window at most (the engine's ``MAX_NEW_TOKENS``).
    """
    if device != "cuda" or model is None:
        return CPU_BATCH_SIZE
    import torch

    free_bytes, _total_bytes = torch.cuda.mem_get_info()
    cfg = model.config
    frames = cfg.max_source_positions  # 1500 encoder positions for 30 s
    beams = max(1, beam_size)
    half = 2  # bytes per float16 value
    cross_kv = 2 * cfg.decoder_layers * frames * cfg.d_model * half
    self_kv = 2 * cfg.decoder_layers * cfg.max_target_positions * cfg.d_model * beams * half
    scores = max_new_tokens * beams * cfg.vocab_size * 4
    encoder = 4 * frames * max(cfg.encoder_ffn_dim, 4 * cfg.d_model) * half
    per_window = cross_kv + self_kv + scores + encoder
    return max(1, min(CUDA_MAX_BATCH_SIZE, int(0.5 * free_bytes) // per_window))


def default_dtype(device: str) -> str:
    """The engine's dtype on ``device`` (``cpu``/``cuda``): ``float16`` on CUDA; on CPU ``bfloat16`` where
    :func:`cpu_supports_bfloat16`, else ``float32`` (:meth:`gpu_transcribe_engine.engine.WhisperEngine.load`
    gives the
    measurements)."""
    if device == "cuda":
        return "float16"
    return "bfloat16" if cpu_supports_bfloat16() else "float32"


def cpu_supports_bfloat16() -> bool:
    """True when this CPU has native bfloat16 matrix instructions (``avx512_bf16`` or ``amx_bf16``, from
    ``/proc/cpuinfo``); elsewhere PyTorch emulates bfloat16 and float32 is faster."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False
