"""The compiled decoding loop (``--decode-loop compiled``): a static self-attention cache and a
``torch.compile``'d decoder step, for CUDA, where an eager step of a few rows costs more in Python and
kernel launches than in arithmetic.

How it works, on the fast path (:mod:`gpu_transcribe_engine.fast_path`) only:

- One allocation per kind, at the largest batch seen, and views of it per batch shape, so that a step's
  tensors keep their addresses from call to call (what CUDA graphs replay) and no second copy is held:
  the self-attention keys and values (Whisper's 448 positions per decoder row: windows times beams) and
  the cross-attention keys and values (per window), which
  :meth:`~gpu_transcribe_engine.whisper_model.WindowDecoder.cross_cache` writes straight into their buffer
  (:meth:`CompiledDecoding.adopt_cross`).
- Only a batch whose cross-attention cache is the one last written there decodes compiled
  (:meth:`CompiledDecoding.owns`): the main pass over a batch of windows, and a fallback round that
  retries all of them. A fallback round over some of the windows (their rows picked out of the cache) and
  every other forward pass (the prompt's first pass, the no-speech read, word alignment) run eagerly.
- Beam search reorders the static cache in place and over the positions filled so far
  (:class:`StaticSharedCache`), where transformers' ``reorder_cache`` would allocate new tensors of all
  448 positions every step.
- The model's ``forward`` is wrapped: a call with one new token per row (a decoding step) runs
  ``torch.compile(forward, mode="reduce-overhead")`` (inductor's kernels, replayed as CUDA graphs on
  CUDA). transformers' ``generate`` compiles a static-cache forward by itself for greedy search and
  sampling only, not for beam search, so the wrapper does it for every strategy (and ``generate``'s own is
  kept off).
- A static cache needs an attention mask (positions past the decoded ones hold zeros): the grouped attention
  is registered a second time, as :data:`GROUPED_STATIC_ATTENTION`, with transformers' SDPA mask.

The loop gives the same tokens as the eager one in float32 (``tests/test_compiled_decoding.py``: beam
search, greedy search and sampling on real speech, compiled with dynamo on CPU); in bfloat16 inductor's
kernels round differently and some windows differ by a token or a comma. On CPU it does not pay
(``python -m bench.decode_loop --windows 4 --repeats 2``, whisper-base bfloat16, 2 AMD EPYC cores, 111 steps
of 20 rows: 33.9 s of compiling, 11.8 s with inductor's on-disk cache from an earlier run, then 3.82-4.14 s
against the eager loop's 3.63-4.11 s, 0.95-0.99x; reordering all 448 positions instead of the filled ones,
0.84x). It has not
run on a GPU yet, so ``auto`` is the eager loop everywhere (:func:`resolve_decode_loop`).

Each batch shape compiles (dynamo marks the batch dimension dynamic at the second shape; a single window
and greedy search get graphs of their own) and records its CUDA graph once; past dynamo's recompile limit
(8) a new shape runs eagerly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import DynamicCache, StaticCache

from gpu_transcribe_engine.fast_path import SharedCrossAttentionCache
from gpu_transcribe_engine.options import DECODE_LOOPS

GROUPED_STATIC_ATTENTION = "gpu_transcribe_grouped_sdpa_static"
"""Name of :func:`~gpu_transcribe_engine.fast_path.grouped_sdpa_attention` registered with transformers'
SDPA mask function, for the static cache (a mask is built for it; the eager loop's name gets none, which a
growing cache does not need)."""

COMPILE_MODE = "reduce-overhead"
"""``torch.compile``'s mode for the step: inductor's kernels replayed as CUDA graphs (on CPU, inductor's
kernels alone)."""


def resolve_decode_loop(decode_loop: str, fast: bool) -> str:
    """``eager`` or ``compiled`` for ``decode_loop``.

    ``auto`` is ``eager``: the compiled loop has not yet run on a GPU (``bench/gpu_check.py`` is the
    prepared check), and on CPU it is slower (module docstring).

    Raises:
        ValueError: ``decode_loop`` is unknown, or ``compiled`` without the fast path; the message names
            ``--decode-loop``.
    """
    if decode_loop not in DECODE_LOOPS:
        raise ValueError(f"--decode-loop: {decode_loop!r} is not one of {', '.join(DECODE_LOOPS)}")
    if decode_loop == "compiled" and not fast:
        raise ValueError(
            "--decode-loop compiled: needs the engine's fast decoding path, which this transformers "
            "release does not run; install the versions in the lock file or use --decode-loop eager"
        )
    return "eager" if decode_loop == "auto" else decode_loop


def register_static_attention() -> None:
    """Register :data:`GROUPED_STATIC_ATTENTION`: the grouped attention function with transformers' SDPA
    mask function (idempotent)."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    from gpu_transcribe_engine.fast_path import grouped_sdpa_attention

    AttentionInterface.register(GROUPED_STATIC_ATTENTION, grouped_sdpa_attention)
    AttentionMaskInterface.register(GROUPED_STATIC_ATTENTION, sdpa_mask)


class StaticSharedCache(SharedCrossAttentionCache):
    """:class:`~gpu_transcribe_engine.fast_path.SharedCrossAttentionCache` over a ``StaticCache``, reordered
    in place over its filled positions: the static tensors keep their addresses across beam search's steps.

    Attributes:
        filled: positions written so far (the prompt's, then one per step), counted by
            :class:`CompiledDecoding`'s wrapped ``forward`` without reading the GPU.
    """

    filled: int = 0

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Reorder the self-attention cache's rows along ``beam_idx`` ``(rows,)`` over its first
        :attr:`filled` positions, writing into its own tensors; the cross-attention cache stays."""
        static: Any = self.self_attention_cache
        layers: list[Any] = list(static.layers)
        filled = self.filled or static.max_cache_len
        for layer in layers:
            index = beam_idx.to(layer.keys.device)
            for tensor in (layer.keys, layer.values):
                written = tensor[:, :, :filled]
                written.copy_(written.index_select(0, index))


class CompiledDecoding:
    """The compiled loop's state for one model: its wrapped ``forward`` and its static buffers.

    Creating it switches the model's attention to :data:`GROUPED_STATIC_ATTENTION` and wraps the model's
    ``forward`` for good (the wrapper runs eagerly outside :meth:`steps`). One engine call at a time, as
    the engine itself.

    Args:
        model: a ``WhisperForConditionalGeneration`` loaded for the fast path.
        compile_options: keyword arguments of ``torch.compile`` (default ``mode=COMPILE_MODE``,
            ``dynamic=None``: a second batch size compiles a graph for any size).
    """

    def __init__(self, model: Any, compile_options: dict[str, Any] | None = None) -> None:
        """Wrap ``model.forward``; nothing is allocated or compiled before the first batch."""
        register_static_attention()
        model.set_attn_implementation(GROUPED_STATIC_ATTENTION)
        self.model = model
        config = model.config
        self.max_cache_len = int(config.max_target_positions)
        self._heads = int(config.decoder_attention_heads)
        self._head_dim = int(config.d_model) // self._heads
        self._layers = int(config.decoder_layers)
        self._self_buffers: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._caches: dict[int, StaticCache] = {}
        self._cross_buffers: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._owned: DynamicCache | None = None
        self._active = False
        eager: Callable[..., Any] = model.forward
        options = {"mode": COMPILE_MODE, "dynamic": None, "fullgraph": False, **(compile_options or {})}
        compiled = torch.compile(eager, **options)

        # functools.wraps keeps forward's signature, which generate() reads to check its arguments
        @functools.wraps(eager)
        def forward(*args: Any, **kwargs: Any) -> Any:
            ids = kwargs.get("decoder_input_ids")
            cache = kwargs.get("cache")
            if isinstance(cache, StaticSharedCache) and ids is not None:
                cache.filled += int(ids.shape[1])
            if self._active and ids is not None and ids.shape[1] == 1:
                return compiled(*args, **kwargs)
            return eager(*args, **kwargs)

        model.forward = forward

    @contextmanager
    def steps(self) -> Iterator[None]:
        """Within it, the model's decoding steps run compiled."""
        self._active = True
        try:
            yield
        finally:
            self._active = False

    def adopt_cross(self, cross: DynamicCache, layer: int) -> None:
        """Move ``cross``'s layer ``layer`` (just added, ``(windows, heads, frames, head_dim)``) into the
        cross-attention buffer, which ``cross`` then reads; once its last layer is in, ``cross`` is the cache
        :meth:`owns` answers for (an earlier one's buffer is overwritten: it must not be used again)."""
        layers: list[Any] = list(cross.layers)
        keys, values = layers[layer].keys, layers[layer].values
        if layer == 0 and not self._fits(self._cross_buffers, keys):
            self._cross_buffers = [
                (_static_zeros(keys, len(keys)), _static_zeros(values, len(values)))
                for _ in range(self._layers)
            ]
        if layer == 0:
            self._owned = None
        buffer_keys, buffer_values = self._cross_buffers[layer]
        windows = keys.shape[0]
        layers[layer].keys = buffer_keys[:windows].copy_(keys)
        layers[layer].values = buffer_values[:windows].copy_(values)
        if layer == self._layers - 1:
            self._owned = cross

    def owns(self, cross: DynamicCache | None) -> bool:
        """True when ``cross`` is the cache last moved into the buffer (:meth:`adopt_cross`)."""
        return cross is not None and cross is self._owned

    def cache(self, cross: DynamicCache, rows: int) -> StaticSharedCache:
        """A reset static self-attention cache for ``rows`` decoder rows (windows times beams or samples)
        over ``cross``.

        Raises:
            ValueError: ``cross`` is not the cache :meth:`owns` answers for, or ``rows`` is not a multiple
                of its windows.
        """
        if not self.owns(cross):
            raise ValueError("static cache: the cross-attention cache is not the one in the buffer")
        windows = int(next(iter(cross.layers)).keys.shape[0])  # type: ignore[union-attr]
        if rows % windows:
            raise ValueError(f"static cache: {rows} decoder rows for {windows} windows")
        static = self._static_cache(rows)
        static.reset()
        shared = StaticSharedCache(static, cross)
        shared.filled = 0
        return shared

    def _static_cache(self, rows: int) -> StaticCache:
        """The ``StaticCache`` for ``rows`` rows: views of the self-attention buffer, allocated (again) for
        the largest row count seen."""
        if rows in self._caches:
            return self._caches[rows]
        model = self.model
        if not self._self_buffers or self._self_buffers[0][0].shape[0] < rows:
            self._caches.clear()
            self._self_buffers = []  # the old buffer goes before the new one is allocated
            shape = (rows, self._heads, self.max_cache_len, self._head_dim)
            self._self_buffers = [
                (
                    _static_zeros_of(shape, model.dtype, model.device),
                    _static_zeros_of(shape, model.dtype, model.device),
                )
                for _ in range(self._layers)
            ]
        static = StaticCache(model.config, self.max_cache_len)
        layers: list[Any] = list(static.layers)
        for layer, (keys, values) in zip(layers, self._self_buffers, strict=True):
            # StaticLayer.lazy_initialization's attributes, on views of the shared buffer
            layer.keys, layer.values = keys[:rows], values[:rows]
            layer.device = keys.device
            layer.batch_size, layer.num_heads = rows, self._heads
            layer.k_head_dim = layer.v_head_dim = self._head_dim
            layer.cumulative_length = layer.cumulative_length.to(keys.device)
            for tensor in (layer.keys, layer.values, layer.cumulative_length):
                torch._dynamo.mark_static_address(tensor)
            layer.is_initialized = True
        self._caches[rows] = static
        return static

    @staticmethod
    def _fits(buffers: list[tuple[torch.Tensor, torch.Tensor]], tensor: torch.Tensor) -> bool:
        """True when ``buffers`` hold ``tensor``'s rows and have its other dimensions, dtype and device."""
        if not buffers:
            return False
        held = buffers[0][0]
        return (
            held.shape[0] >= tensor.shape[0]
            and held.shape[1:] == tensor.shape[1:]
            and held.dtype == tensor.dtype
            and held.device == tensor.device
        )


def _static_zeros(like: torch.Tensor, rows: int) -> torch.Tensor:
    """Zeros of ``like``'s shape with ``rows`` rows, dtype and device, marked as a fixed address for
    ``torch.compile``."""
    return _static_zeros_of((rows, *like.shape[1:]), like.dtype, like.device)


def _static_zeros_of(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Zeros marked as a fixed address for ``torch.compile`` (CUDA graphs read them in place)."""
    tensor = torch.zeros(shape, dtype=dtype, device=device)
    torch._dynamo.mark_static_address(tensor)
    return tensor
