"""The compiled decoding loop (``--decode-loop compiled``): a static self-attention cache and a
``torch.compile``'d decoder step, for CUDA, where an eager step of a few rows costs more in Python and
kernel launches than in arithmetic.

How it works, on the fast path (:mod:`gpu_transcribe_engine.fast_path`) only:

- The self-attention cache is transformers' ``StaticCache`` of Whisper's 448 positions, allocated once per
  number of decoder rows and reset between calls, so a step's tensors keep their shapes and addresses
  (what CUDA graphs replay). Beam search reorders it in place (:class:`StaticSharedCache`), where
  transformers' ``reorder_cache`` would allocate new tensors every step.
- The cross-attention keys and values are copied into buffers kept per number of windows, for the same
  reason.
- The model's ``forward`` is wrapped (:class:`CompiledDecoding`): a call with one new token per row (a
  decoding step) runs ``torch.compile(forward, mode="reduce-overhead")`` (inductor's kernels, replayed as
  CUDA graphs on CUDA); the prompt's first pass and everything else run eagerly. transformers' ``generate``
  compiles a static-cache forward by itself for greedy search and sampling only, not for beam search, so
  the wrapper does it for every strategy.
- A static cache needs an attention mask (positions past the decoded ones hold zeros): the grouped attention
  is registered a second time, as :data:`GROUPED_STATIC_ATTENTION`, with transformers' SDPA mask.

The loop gives the same tokens as the eager one in float32 (``tests/test_compiled_decoding.py``: beam
search, greedy search and sampling on real speech, compiled with dynamo on CPU); in bfloat16 inductor's
kernels round differently and some windows differ by a token or a comma. On CPU it does not pay
(``python -m bench.decode_loop --windows 4 --repeats 2``, whisper-base bfloat16, 2 AMD EPYC cores: 19.9 s
of compiling, then 4.52 s against the eager loop's 3.80 s for 111 steps of 20 rows, 0.84x), so ``auto``
keeps the eager loop there (:func:`resolve_decode_loop`). On CUDA it is not measured yet.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
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

CACHES_KEPT = 2
"""Static caches (and cross-attention buffers) kept at once, one per batch shape, least recently used
dropped first: a run sees the full batch, then the last batch or the fallback's subsets. Each is about
what :func:`gpu_transcribe_engine.device.default_batch_size` counts per batch (a 448-position
self-attention cache per beam, the cross-attention keys and values per window), and that estimate fills
half the free GPU memory, so two fit."""

COMPILE_MODE = "reduce-overhead"
"""``torch.compile``'s mode for the step: inductor's kernels replayed as CUDA graphs (on CPU, inductor's
kernels alone)."""


def resolve_decode_loop(decode_loop: str, device: str, fast: bool, long_lived: bool = False) -> str:
    """``eager`` or ``compiled`` for ``decode_loop`` on ``device`` (``cpu``/``cuda``).

    ``auto`` is ``compiled`` on CUDA with the fast path in a long-lived process (``long_lived``: a server or
    a pipeline worker, where the compile is paid once), else ``eager``: a one-shot run of a recording would
    spend on compiling (20-32 s on CPU for whisper-base, module docstring) more than the loop saves.

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
    if decode_loop == "auto":
        return "compiled" if device == "cuda" and fast and long_lived else "eager"
    return decode_loop


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
    in place: the static tensors keep their addresses across beam search's steps."""

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Reorder the self-attention cache's rows along ``beam_idx`` ``(rows,)``, writing into its own
        tensors; the cross-attention cache stays."""
        layers: list[Any] = list(self.self_attention_cache.layers)
        for layer in layers:
            if not layer.is_initialized:
                continue
            index = beam_idx.to(layer.keys.device)
            layer.keys.copy_(layer.keys.index_select(0, index))
            layer.values.copy_(layer.values.index_select(0, index))


class CompiledDecoding:
    """The compiled loop's state for one model: its wrapped ``forward``, static caches and cross-attention
    buffers.

    Creating it switches the model's attention to :data:`GROUPED_STATIC_ATTENTION` and wraps the model's
    ``forward`` for good (the wrapper runs eagerly outside :meth:`steps`).

    Args:
        model: a ``WhisperForConditionalGeneration`` loaded for the fast path.
        compile_options: keyword arguments of ``torch.compile`` (default ``mode=COMPILE_MODE``,
            ``dynamic=None``: a second batch size compiles a graph for any size).
    """

    def __init__(self, model: Any, compile_options: dict[str, Any] | None = None) -> None:
        """Wrap ``model.forward``; nothing is compiled before the first decoding step."""
        register_static_attention()
        model.set_attn_implementation(GROUPED_STATIC_ATTENTION)
        self.model = model
        self.max_cache_len = int(model.config.max_target_positions)
        self._caches: OrderedDict[int, StaticCache] = OrderedDict()
        self._cross: OrderedDict[int, list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()
        self._active = False
        self.compiled_steps = 0
        """Decoding steps run by the compiled forward so far (for tests and the bench's figures)."""
        eager: Callable[..., Any] = model.forward
        options = {"mode": COMPILE_MODE, "dynamic": None, "fullgraph": False, **(compile_options or {})}
        compiled = torch.compile(eager, **options)

        # functools.wraps keeps forward's signature, which generate() reads to check its arguments
        @functools.wraps(eager)
        def forward(*args: Any, **kwargs: Any) -> Any:
            ids = kwargs.get("decoder_input_ids")
            if self._active and ids is not None and ids.shape[1] == 1:
                self.compiled_steps += 1
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

    def cache(self, cross: DynamicCache, rows: int) -> StaticSharedCache:
        """A reset static self-attention cache for ``rows`` decoder rows (windows times beams or samples),
        over a copy of ``cross`` (:meth:`~gpu_transcribe_engine.whisper_model.WindowDecoder.cross_cache`,
        one row per window) in buffers kept for its number of windows.

        Raises:
            ValueError: ``rows`` is not a multiple of ``cross``'s windows.
        """
        layers: list[Any] = list(cross.layers)
        windows = int(layers[0].keys.shape[0])
        if rows % windows:
            raise ValueError(f"static cache: {rows} decoder rows for {windows} windows")
        static = self._kept(self._caches, rows, lambda: StaticCache(self.model.config, self.max_cache_len))
        static.reset()
        buffers = self._kept(
            self._cross, windows, lambda: [(_static(layer.keys), _static(layer.values)) for layer in layers]
        )
        copied = DynamicCache()
        copied_layers: list[Any] = copied.layers
        for number, (layer, (keys, values)) in enumerate(zip(layers, buffers, strict=True)):
            if keys.shape != layer.keys.shape or keys.dtype != layer.keys.dtype:  # another model: new ones
                keys, values = _static(layer.keys), _static(layer.values)
                buffers[number] = (keys, values)
            keys.copy_(layer.keys)
            values.copy_(layer.values)
            copied.update(keys, values, number)
            copied_layers[number].keys, copied_layers[number].values = keys, values
        return StaticSharedCache(static, copied)

    @staticmethod
    def _kept(kept: OrderedDict[int, Any], key: int, make: Callable[[], Any]) -> Any:
        """``kept[key]``, made when missing; at most :data:`CACHES_KEPT` entries, least recently used out."""
        if key in kept:
            kept.move_to_end(key)
            return kept[key]
        kept[key] = make()
        while len(kept) > CACHES_KEPT:
            kept.popitem(last=False)
        return kept[key]


def _static(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of ``tensor`` marked as a fixed address for ``torch.compile`` (CUDA graphs read it in place)."""
    copy = tensor.clone()
    torch._dynamo.mark_static_address(copy)
    return copy
