"""The benchmark corpus (``bench/corpus.py``): built from ``recordings/``, read back with PyAV (FFmpeg)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from bench import corpus
from bench.fixtures import clip_reference

# What each declared format must read back as: container, codec, sample rate (Hz).
READ_BACK = {
    "wav16k": ("wav", "pcm_s16le", 16_000),
    "mulaw8k": ("wav", "pcm_mulaw", 8_000),
    "mp3": ("mp3", "mp3float", 16_000),
    "opus": ("ogg", "opus", 48_000),  # Ogg Opus always declares 48 kHz; it was encoded at 16 kHz
    "f64wav": ("wav", "pcm_f64le", 16_000),
}


Built = tuple[Path, list[dict[str, Any]]]
"""The corpus folder and its manifest."""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    out = tmp_path_factory.mktemp("corpus")
    corpus.build(out)
    return out, json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def read_back(path: Path) -> tuple[str, str, int, np.ndarray]:
    """Container name, codec name, stream rate and mono float samples of ``path``."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        frames = [frame.to_ndarray() for frame in container.decode(audio=0)]
        samples = np.concatenate([f.reshape(f.shape[0], -1)[0] for f in frames]).astype(np.float64)
        if frames and frames[0].dtype == np.int16:
            samples /= 32768.0
        return container.format.name, stream.codec_context.name, stream.rate, samples


def test_the_corpus_covers_the_kinds_languages_and_formats_asked_for(built: Built) -> None:
    _, manifest = built
    assert len(manifest) >= 6
    assert len({e["name"] for e in manifest}) == len(manifest)
    assert len({e["kind"] for e in manifest}) == len(manifest)
    assert sum(e["languages"][0] == "sv" for e in manifest) >= 2
    assert sum(e["languages"][0] == "en" for e in manifest) >= 2
    assert any(len(e["languages"]) >= 2 for e in manifest)
    assert {e["format"] for e in manifest} == set(READ_BACK)
    assert {e["bed"] for e in manifest} >= {"music", "noise"}


def test_each_file_reads_back_in_its_declared_format_and_length(built: Built) -> None:
    out, manifest = built
    for entry in manifest:
        container, codec, rate_hz, samples = read_back(out / entry["file"])
        assert (container, codec, rate_hz) == READ_BACK[entry["format"]], entry["name"]
        duration_s = samples.shape[0] / rate_hz
        assert corpus.MIN_DURATION_S <= duration_s <= corpus.MAX_DURATION_S, entry["name"]
        assert duration_s == pytest.approx(entry["duration_s"], abs=0.05), entry["name"]
        assert float(np.max(np.abs(samples))) > 0.1, f"{entry['name']}: no signal"


def test_transcripts_and_parts_agree_with_the_recordings(built: Built) -> None:
    out, manifest = built
    for entry in manifest:
        parts = entry["parts"]
        previous_end_s = 0.0
        for part in parts:
            assert part["reference"] == clip_reference(part["source"])
            assert part["language"] in entry["languages"] or part["source"].endswith("_silence.wav")
            assert previous_end_s < part["start_s"] < part["end_s"] < entry["duration_s"]
            previous_end_s = part["end_s"]
        assert {p["language"] for p in parts} >= set(entry["languages"])
        expected = " ".join(p["reference"] for p in parts if p["reference"])
        assert (out / f"{entry['name']}.txt").read_text(encoding="utf-8") == expected + "\n"


def test_the_telephone_file_holds_only_the_telephone_band(built: Built) -> None:
    out, manifest = built
    (entry,) = [e for e in manifest if e["format"] == "mulaw8k"]
    _, _, rate_hz, samples = read_back(out / entry["file"])
    power = np.abs(np.fft.rfft(samples)) ** 2
    freqs_hz = np.fft.rfftfreq(samples.shape[0], d=1.0 / rate_hz)
    outside = power[(freqs_hz < 200) | (freqs_hz > 3600)].sum()
    assert outside / power.sum() < 0.01


def test_the_music_bed_plays_in_the_pauses(built: Built) -> None:
    out, manifest = built
    (entry,) = [e for e in manifest if e["bed"] == "music"]
    _, _, rate_hz, samples = read_back(out / entry["file"])
    lead_in = samples[: int(entry["parts"][0]["start_s"] * rate_hz)]
    # Pauses alone are -60 dBFS noise (RMS 1e-3); at 10 dB SNR the music is far louder.
    assert float(np.sqrt(np.mean(lead_in**2))) > 1e-2


def test_a_rebuild_gives_the_same_bytes(built: Built, tmp_path: Path) -> None:
    out, manifest = built
    names = [e["name"] for e in manifest if e["format"] in ("mp3", "opus", "mulaw8k")]
    corpus.build(tmp_path, only=names)
    for entry in (e for e in manifest if e["name"] in names):
        for file_name in (entry["file"], f"{entry['name']}.txt"):
            assert (tmp_path / file_name).read_bytes() == (out / file_name).read_bytes(), file_name
    assert [e for e in json.loads((tmp_path / "manifest.json").read_text()) if e["name"] in names] == [
        e for e in manifest if e["name"] in names
    ]


def test_an_unknown_name_is_one_clear_line_and_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert corpus.main(["--out", str(tmp_path), "--only", "no_such_file"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no_such_file" in err and "sv_short_utterances" in err
    assert list(tmp_path.iterdir()) == []


def test_a_seed_offset_places_the_same_clips_in_another_order(built: Built, tmp_path: Path) -> None:
    """``--seed-offset`` gives recordings no setting was tuned on: the same clips and references, in
    another order at other offsets, and the same bytes again for the same offset."""
    out, manifest = built
    name = "mixed_sv_en_es"
    assert corpus.main(["--out", str(tmp_path / "a"), "--only", name, "--seed-offset", "1000"]) == 0
    corpus.build(tmp_path / "b", only=[name], seed_offset=1000)
    (original,) = (e for e in manifest if e["name"] == name)
    (moved,) = json.loads((tmp_path / "a" / "manifest.json").read_text(encoding="utf-8"))
    assert moved["seed"] == original["seed"] + 1000
    sources = [p["source"] for p in moved["parts"]]
    assert sorted(sources) == sorted(p["source"] for p in original["parts"])
    assert sources != [p["source"] for p in original["parts"]]
    assert [p["start_s"] for p in moved["parts"]] != [p["start_s"] for p in original["parts"]]
    audio = moved["file"]
    assert (tmp_path / "a" / audio).read_bytes() == (tmp_path / "b" / audio).read_bytes()
    assert (tmp_path / "a" / audio).read_bytes() != (out / audio).read_bytes()
