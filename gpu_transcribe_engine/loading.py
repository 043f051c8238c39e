"""Loading a Whisper checkpoint for :meth:`gpu_transcribe_engine.engine.WhisperEngine.load`:
:func:`load_model`, and :func:`quiet_library_output` for long-running processes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from gpu_transcribe_engine.device import default_dtype, resolve_device
from gpu_transcribe_engine.engine_types import ModelInfo
from gpu_transcribe_engine.errors import ModelLoadError
from gpu_transcribe_engine.hub import check_hub_model, is_hub_id
from gpu_transcribe_engine.options import DEFAULT_MODEL


def quiet_library_output() -> None:
    """Keep the libraries' progress bars and per-call advice out of a long-running process's stderr.

    transformers repeats advisory warnings on every ``generate()`` call (``max_new_tokens`` vs
    ``max_length``, generation config plus arguments): one line per batch in a server's log. Errors still
    reach stderr. The variables are read when transformers is imported, so call this before the first
    :meth:`WhisperEngine.load`; values already set by the user win.
    """
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def load_model(
    model: str = DEFAULT_MODEL,
    revision: str | None = None,
    device: str = "auto",
    fast: bool | None = None,
    dtype: str | None = None,
    decode_loop: str = "auto",
) -> tuple[Any, Any, ModelInfo]:
    """Load a Whisper checkpoint from the Hugging Face hub or a local directory: ``(model, processor, info)``.

    float16 with PyTorch's scaled-dot-product attention (SDPA) on CUDA. On CPU bfloat16 where the CPU
    has bfloat16 instructions (:func:`gpu_transcribe_engine.device.cpu_supports_bfloat16`), else float32
    (float16
    matrix products are slow there). Measured with ``bench/engine.py`` (whisper-base, 2 AMD EPYC cores
    with ``avx512_bf16``): bfloat16 1.6x faster than float32 at the same word error rate (figures in the
    README's performance table). int8 dynamic quantization (``torch.ao``) was measured and not kept:
    of the whole model, English word error rate 0.057 -> 0.103; of the encoder and decoder, 0.083; of
    the encoder alone, Swedish 0.216 -> 0.261, and slower than bfloat16. Per-channel weights
    (``per_channel_dynamic_qconfig``) on the encoder did no better: the Swedish short-utterance corpus
    recording 0.190 -> 0.302 for an encoder 7 % faster (5.2 s for 7 windows against 5.6 s).

    Args:
        model: a hub id (``KBLab/kb-whisper-small``) or a directory holding a transformers Whisper
            checkpoint (config.json, generation_config.json, weights, tokenizer, processor config).
        revision: a branch, tag or commit of the hub repository; ``None`` for the default branch.
        device: ``auto``, ``cpu`` or ``cuda``.
        fast: ``None`` (default) for the fast decoding path on the transformers versions it was
            tested with and the stock path elsewhere (said once on stderr); ``True``/``False`` to force
            one (see :mod:`gpu_transcribe_engine.whisper_model`).
        dtype: ``float16``, ``bfloat16`` or ``float32``; ``None`` for the device's default (see above).
        decode_loop: ``auto``, ``eager`` or ``compiled``
            (:func:`gpu_transcribe_engine.compiled_decoding.resolve_decode_loop`); the resolved loop is in
            the returned info.

    Raises:
        ModelLoadError: the model cannot be found or is not a Whisper checkpoint; one line naming it.
        HubUnreachableError: a hub id that is not in the local cache while the hub cannot be reached
            (found in a few seconds, :func:`gpu_transcribe_engine.hub.check_hub_model`).
        ValueError: ``device`` is unknown, or ``cuda`` is asked for without a GPU; ``decode_loop`` is
            unknown, or ``compiled`` off the fast path.
    """
    started = time.perf_counter()
    is_directory = not is_hub_id(model)
    if not is_directory:  # a hub id: cached, or the hub reachable (said in seconds, not minutes)
        check_hub_model(model, revision)
    resolved_device = resolve_device(device)
    import torch
    import transformers
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from gpu_transcribe_engine.compiled_decoding import resolve_decode_loop
    from gpu_transcribe_engine.fast_path import (
        GROUPED_ATTENTION,
        STOCK_ATTENTION,
        fast_path_available,
        register_grouped_attention,
        say_stock_path_once,
    )

    use_fast = fast_path_available() if fast is None else fast
    loop = resolve_decode_loop(decode_loop, use_fast)
    if use_fast:
        register_grouped_attention()
    elif fast is None:
        say_stock_path_once(transformers.__version__)
    rev = f" (revision {revision})" if revision else ""
    source: str = model
    if is_directory:
        local = Path(model).expanduser()
        if not local.is_dir():
            raise ModelLoadError(
                f"model directory {model!r} does not exist; pass a directory holding a Whisper "
                "checkpoint, or a Hugging Face model id such as KBLab/kb-whisper-small"
            )
        source = str(local)
    if dtype is None:
        torch_dtype = getattr(torch, default_dtype(resolved_device))
    elif dtype in ("float16", "bfloat16", "float32"):
        torch_dtype = getattr(torch, dtype)
    else:
        raise ValueError(f"dtype: {dtype!r} is not one of float16, bfloat16, float32")
    try:
        whisper: Any = WhisperForConditionalGeneration.from_pretrained(
            source,
            revision=revision or "main",
            dtype=torch_dtype,
            attn_implementation=GROUPED_ATTENTION if use_fast else STOCK_ATTENTION,
        )
        processor = WhisperProcessor.from_pretrained(source, revision=revision or "main")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"cannot load Whisper model {model!r}{rev}: {reason}; check the model id and revision, "
            "your network access to huggingface.co, or pass a local directory with the checkpoint"
        ) from exc
    if getattr(whisper.config, "model_type", None) != "whisper":
        raise ModelLoadError(f"{model!r}{rev} is not a Whisper checkpoint; pass a Whisper model")
    gen = whisper.generation_config
    if not getattr(gen, "lang_to_id", None) or getattr(gen, "no_timestamps_token_id", None) is None:
        raise ModelLoadError(
            f"{model!r}{rev}: its generation_config.json lacks lang_to_id or no_timestamps_token_id "
            "(needed for language selection and timestamps); use a complete multilingual checkpoint"
        )
    whisper.to(resolved_device)
    whisper.eval()
    info = ModelInfo(
        model=model,
        revision=revision,
        device=resolved_device,
        dtype=str(torch_dtype).removeprefix("torch."),
        load_s=time.perf_counter() - started,
        fast_path=use_fast,
        transformers_version=transformers.__version__,
        decode_loop=loop,
    )
    return whisper, processor, info
