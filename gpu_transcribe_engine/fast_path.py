"""The fast decoding path of :class:`gpu_transcribe_engine.whisper_model.WindowDecoder`: the beams of a window
share its cross-attention keys and values (:class:`SharedCrossAttentionCache`, read by
:func:`grouped_sdpa_attention`). It relies on how transformers' ``WhisperAttention`` reads a prefilled
``EncoderDecoderCache``, so it runs only on the releases in :data:`TESTED_TRANSFORMERS`
(:func:`fast_path_available`); elsewhere the engine uses transformers' own classes and says so once
(:func:`say_stock_path_once`).
"""

from __future__ import annotations

import sys
from typing import Any

import torch
import torch.nn.functional as F
from transformers import EncoderDecoderCache

TESTED_TRANSFORMERS: tuple[str, ...] = ("5.24",)
"""transformers minor releases the fast path was tested with (``tests/test_engine.py`` runs it against the
stock path on real speech). It relies on how ``WhisperAttention`` reads a prefilled
``EncoderDecoderCache``, so outside these releases the engine uses the stock path."""

GROUPED_ATTENTION = "gpu_transcribe_grouped_sdpa"
"""Name under which :func:`grouped_sdpa_attention` is registered in transformers' ``AttentionInterface``."""

STOCK_ATTENTION = "sdpa"
"""The attention implementation the model is loaded with off the fast path (transformers' own SDPA)."""

_said_stock: set[str] = set()


def fast_path_available(version: str | None = None) -> bool:
    """True when transformers ``version`` (default: the installed one) is in :data:`TESTED_TRANSFORMERS`."""
    if version is None:
        import transformers

        version = transformers.__version__
    parts = version.split(".")
    return ".".join(parts[:2]) in TESTED_TRANSFORMERS


def say_stock_path_once(version: str) -> None:
    """Write, once per process and version, that the stock (slower) path runs, and why, to stderr."""
    if version in _said_stock:
        return
    _said_stock.add(version)
    sys.stderr.write(
        f"gpu-transcribe: transformers {version} is not one the engine's fast decoding was tested with "
        f"({', '.join(v + '.x' for v in TESTED_TRANSFORMERS)}); using transformers' own classes "
        "(same transcripts, slower). Install the versions in the lock file for full speed.\n"
    )


def grouped_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, also for keys/values with fewer batch rows than the queries.

    When ``key.shape[0] == query.shape[0]`` this is exactly the registered ``sdpa`` function. Otherwise
    (cross-attention during beam search or best-of sampling, with the cache of
    :meth:`gpu_transcribe_engine.whisper_model.WindowDecoder.decode`) the ``rows`` query rows come in groups
    of ``rows // inputs`` consecutive rows per key/value row, as ``generate`` lays beams out, and each group
    attends to its input's keys and values in one call.

    Args:
        module: the attention module (passed through to ``sdpa``).
        query: ``(rows, heads, q_len, head_dim)``.
        key: ``(inputs, heads, k_len, head_dim)``, ``inputs`` dividing ``rows``.
        value: like ``key``.
        attention_mask: must be ``None`` when the rows differ (Whisper's cross-attention has none).
        kwargs: ``scaling``, ``dropout``... as transformers passes them.

    Returns:
        ``(output, None)``, output ``(rows, q_len, heads, head_dim)`` as transformers' ``sdpa`` returns it.

    Raises:
        RuntimeError: ``inputs`` does not divide ``rows``, or a mask is given for grouped rows.
    """
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    rows, heads, q_len, head_dim = query.shape
    inputs = key.shape[0]
    scale = kwargs.get("scaling")
    step = q_len == 1 and query.device.type == "cpu"
    if inputs == rows:
        if step and not kwargs.get("is_causal"):
            out = decode_step_attention(query, key, value, attention_mask, scale)
            return out.transpose(1, 2).contiguous(), None
        sdpa: Any = ALL_ATTENTION_FUNCTIONS["sdpa"]
        return sdpa(module, query, key, value, attention_mask, **kwargs)
    if rows % inputs or attention_mask is not None:
        raise RuntimeError(f"grouped attention: {rows} query rows for {inputs} key rows, or a mask")
    group = rows // inputs
    grouped = query.reshape(inputs, group, heads, q_len, head_dim).transpose(1, 2)
    grouped = grouped.reshape(inputs, heads, group * q_len, head_dim)
    if step:
        out = decode_step_attention(grouped, key, value, None, scale)
    else:
        out = F.scaled_dot_product_attention(grouped, key, value, scale=scale)
    out = out.reshape(inputs, heads, group, q_len, head_dim).transpose(1, 2)
    out = out.reshape(rows, heads, q_len, head_dim).transpose(1, 2).contiguous()
    return out, None


def decode_step_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scale: float | None,
) -> torch.Tensor:
    """Attention of a few query positions (one decoding step) as two matrix products, the softmax in
    float32: ``softmax(query @ key^T * scale + mask) @ value``, what ``scaled_dot_product_attention``
    computes.

    On CPU, for a decoding step (one query position per beam, or a window's beams grouped against its
    cross-attention keys), PyTorch 2.13's ``scaled_dot_product_attention`` in bfloat16 was measured 4-6x
    slower than this (2 AMD EPYC cores: 1.69 ms against 0.28 ms for 40 rows of 8 heads over 100 cached
    positions; the cross-attention of 8 windows over 1500 frames 5.0 ms against 1.2 ms), most of it in its
    bfloat16 softmax. On the 240 s dense English corpus recording a batch of 8 windows decoded in 8.7 s
    instead of 10.3 s.

    Args:
        query: ``(batch, heads, q_len, head_dim)``.
        key: ``(batch, heads, k_len, head_dim)``.
        value: like ``key``.
        attention_mask: ``None``, a boolean mask (True = attend) or an additive float mask, broadcastable to
            ``(batch, heads, q_len, k_len)`` (a longer last axis is cut to ``k_len``).
        scale: the factor on the scores; ``None`` for ``head_dim ** -0.5``.

    Returns:
        ``(batch, heads, q_len, head_dim)`` in ``query``'s dtype.
    """
    factor = scale if scale is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(-1, -2)).float() * factor
    if attention_mask is not None:
        mask = attention_mask[..., : key.shape[-2]]
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, -float("inf"))
        else:
            scores = scores + mask.float()
    weights = scores.softmax(dim=-1).to(value.dtype)
    return torch.matmul(weights, value)


def register_grouped_attention() -> None:
    """Register :func:`grouped_sdpa_attention` as :data:`GROUPED_ATTENTION` (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(GROUPED_ATTENTION, grouped_sdpa_attention)


class SharedCrossAttentionCache(EncoderDecoderCache):
    """An ``EncoderDecoderCache`` whose cross-attention part is never reordered.

    Beam search reorders the cache along the beams after every step (``reorder_cache``). Beams move only
    within their own input, and the cross-attention keys and values depend on the input alone, so
    reordering them copies identical data: here only the self-attention cache is reordered.
    """

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Reorder the self-attention cache along ``beam_idx``; the cross-attention cache stays."""
        self.self_attention_cache.reorder_cache(beam_idx)
