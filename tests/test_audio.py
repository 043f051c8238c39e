"""Decoding: real speech encoded as wav, flac, mp3, ogg/opus and m4a comes back as 16 kHz mono float32 of
the right duration and content; empty, fake, truncated and audio-less files raise ``AudioDecodeError``
naming the file."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from bench.fixtures import SWEDISH_CLIPS, clip_path
from gpu_transcribe_engine.audio import SAMPLE_RATE_HZ, decode_audio
from gpu_transcribe_engine.errors import AudioDecodeError

# (file name, container format, codec, codec sample rate): the formats a user's recordings come in (README).
FORMATS = [
    ("speech.wav", "wav", "pcm_s16le", 44_100),
    ("speech.flac", "flac", "flac", 48_000),
    ("speech.mp3", "mp3", "libmp3lame", 44_100),
    ("speech.ogg", "ogg", "libopus", 48_000),
    ("speech.opus", "opus", "libopus", 48_000),
    ("speech.m4a", "ipod", "aac", 44_100),
]


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """9 s of real Swedish speech, 16 kHz mono float32."""
    return decode_audio(clip_path(SWEDISH_CLIPS[0]))


def encode(path: Path, samples: np.ndarray, container: str, codec: str, rate: int) -> Path:
    """Encode 16 kHz mono ``samples`` as stereo at ``rate`` with PyAV (FFmpeg's encoders)."""
    import av

    stereo = np.stack([samples, samples * 0.5])
    interleaved = (stereo.T * 32767).astype(np.int16).reshape(1, -1)  # packed s16: L R L R ...
    frame = av.AudioFrame.from_ndarray(interleaved, format="s16", layout="stereo")
    frame.sample_rate = SAMPLE_RATE_HZ
    frame.time_base = Fraction(1, SAMPLE_RATE_HZ)
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "stereo"
        resampler = av.AudioResampler(format=stream.format.name, layout="stereo", rate=rate)
        for converted in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(converted):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


@pytest.mark.parametrize(("name", "container", "codec", "rate"), FORMATS)
def test_every_common_format_decodes_to_16khz_mono_float32(
    tmp_path: Path, speech: np.ndarray, name: str, container: str, codec: str, rate: int
) -> None:
    path = encode(tmp_path / name, speech, container, codec, rate)
    audio = decode_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert audio.shape[0] / SAMPLE_RATE_HZ == pytest.approx(speech.shape[0] / SAMPLE_RATE_HZ, abs=0.06)
    assert float(np.abs(audio).max()) <= 1.0
    # The same sound: correlation with the original (after the codec's delay) survives lossy codecs.
    correlation = _aligned_correlation(speech, audio)
    assert correlation > 0.9, f"{name}: correlation {correlation:.3f} with the original"
    # Down-mixed to mono by FFmpeg's default matrix, each channel at -3 dB: (1 + 0.5) * 0.7071 = 1.06.
    rms_ratio = float(np.sqrt(np.mean(audio**2)) / np.sqrt(np.mean(speech**2)))
    assert rms_ratio == pytest.approx(1.5 * 0.7071, abs=0.1)  # lossy codecs lose a little energy


def _aligned_correlation(reference: np.ndarray, decoded: np.ndarray, max_lag: int = 4000) -> float:
    """Pearson correlation of ``decoded`` with ``reference`` at the best shift (|lag| <= max_lag)."""
    n = min(reference.shape[0], decoded.shape[0])
    ref, out = reference[:n].astype(np.float64), decoded[:n].astype(np.float64)
    spectrum = np.fft.rfft(out, 2 * n) * np.conj(np.fft.rfft(ref, 2 * n))
    cross = np.fft.irfft(spectrum, 2 * n)
    lags = np.r_[np.arange(0, max_lag + 1), np.arange(-max_lag, 0)]
    lag = int(lags[int(np.argmax(cross[lags]))])
    a, b = (ref[: n - lag], out[lag:]) if lag >= 0 else (ref[-lag:], out[: n + lag])
    return float(np.corrcoef(a, b)[0, 1])


def test_shared_flac_and_wav_clips_decode(speech: np.ndarray) -> None:
    assert speech.shape[0] == 9 * SAMPLE_RATE_HZ
    jfk = decode_audio(clip_path("en_jfk.flac"))
    assert jfk.shape[0] / SAMPLE_RATE_HZ == pytest.approx(11.0, abs=0.01)


def test_zero_byte_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    with pytest.raises(AudioDecodeError, match=r"empty\.mp3.*empty \(0 bytes\)"):
        decode_audio(empty)


def test_text_file_named_mp3(tmp_path: Path) -> None:
    fake = tmp_path / "notes.mp3"
    fake.write_text("Mötesanteckningar: ring Anna om budgeten.\n" * 20, encoding="utf-8")
    with pytest.raises(AudioDecodeError, match=r"notes\.mp3: not an audio file") as info:
        decode_audio(fake)
    assert "\n" not in str(info.value)
    assert "convert" in str(info.value)


def test_truncated_mp3(tmp_path: Path, speech: np.ndarray) -> None:
    whole = encode(tmp_path / "whole.mp3", speech, "mp3", "libmp3lame", 44_100)
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(AudioDecodeError, match=r"cut\.mp3: .*truncated"):
        decode_audio(cut)
    tiny = tmp_path / "tiny.mp3"
    tiny.write_bytes(whole.read_bytes()[:40])
    with pytest.raises(AudioDecodeError, match=r"tiny\.mp3"):
        decode_audio(tiny)


def test_file_without_an_audio_stream(tmp_path: Path) -> None:
    import av

    video = tmp_path / "picture.mkv"
    with av.open(str(video), "w") as out:
        stream = out.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with pytest.raises(AudioDecodeError, match=r"picture\.mkv: the file has no audio stream"):
        decode_audio(video)


def test_missing_path_and_directory(tmp_path: Path) -> None:
    with pytest.raises(AudioDecodeError, match=r"nothere\.wav: no such file"):
        decode_audio(tmp_path / "nothere.wav")
    with pytest.raises(AudioDecodeError, match="not a regular file"):
        decode_audio(tmp_path)
