"""Decode any common audio file to what Whisper expects: 16 kHz mono float32 samples in [-1, 1].

Decoding uses PyAV (``av``), which bundles FFmpeg, so wav, flac, mp3, ogg/opus, m4a/aac and whatever else
FFmpeg reads work without a system FFmpeg. The approach follows faster-whisper's ``audio.decode_audio``
(frames grouped through an ``AudioFifo`` so a timestamp jump cannot stop the resampler), but resamples
straight to float32 instead of int16, and turns every way a file can be unusable into one
:class:`~gpu_transcribe_engine.errors.AudioDecodeError` that names the file and says what to do.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gpu_transcribe_engine.errors import AudioDecodeError

SAMPLE_RATE_HZ = 16_000
"""Whisper's input rate: its log-mel front end is defined on 16 kHz audio (OpenAI ``whisper/audio.py``)."""

# A stream whose decoded audio falls short of the duration its container declares by more than both of
# these is reported as truncated. Encoder priming and padding account for a few tens of milliseconds
# (measured here: m4a/aac 0.01 s, opus 0.013 s); an mp3 cut in half decodes without any FFmpeg error,
# so this comparison is the only sign of truncation it gives.
_TRUNCATION_TOLERANCE_S = 1.0
_TRUNCATION_TOLERANCE_FRACTION = 0.05
_FIFO_GROUP_SAMPLES = 500_000  # as faster-whisper: resample in groups of about 10 s at 48 kHz


def decode_audio(path: str | os.PathLike[str], sample_rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Decode an audio file to mono float32 samples at ``sample_rate_hz``.

    Multi-channel audio is down-mixed to mono by FFmpeg's resampler; any input rate is resampled.

    Args:
        path: the audio file (wav, flac, mp3, ogg/opus, m4a, or anything else FFmpeg decodes; the
            first audio stream of a video container is used).
        sample_rate_hz: output rate; Whisper needs 16000.

    Returns:
        A 1-D ``numpy.float32`` array of shape ``(num_samples,)``, values in [-1.0, 1.0] (full scale),
        ``num_samples / sample_rate_hz`` seconds long.

    Raises:
        AudioDecodeError: the file is missing, empty (0 bytes), not decodable audio (for example a text
            file named ``.mp3``), has no audio stream, holds no samples, or is truncated (decodes to
            clearly less than the duration its header declares). The message names the file and says
            what to do.
    """
    import av  # imported here: PyAV loads the FFmpeg libraries, which `--help` does not need

    name = os.fspath(path)
    file = Path(name)
    if not file.exists():
        raise AudioDecodeError(f"{name}: no such file; check the path")
    if not file.is_file():
        raise AudioDecodeError(f"{name}: not a regular file; give an audio file")
    if file.stat().st_size == 0:
        raise AudioDecodeError(f"{name}: the file is empty (0 bytes); re-copy or re-export the recording")

    chunks: list[np.ndarray] = []
    invalid_packets = 0
    try:
        with av.open(name, mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioDecodeError(
                    f"{name}: the file has no audio stream; give a file that contains sound"
                )
            stream = container.streams.audio[0]
            declared_s = _declared_duration_s(container, stream)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate_hz)
            counter = [0]
            frames = _skip_invalid(container.decode(stream), counter)
            for group in _grouped(frames, av):
                for frame in resampler.resample(group):
                    chunks.append(frame.to_ndarray().reshape(-1).copy())
            for frame in resampler.resample(None):  # flush the resampler's delay line
                chunks.append(frame.to_ndarray().reshape(-1).copy())
            invalid_packets = counter[0]
    except AudioDecodeError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        reason = _one_line(exc)
        raise AudioDecodeError(
            f"{name}: not an audio file FFmpeg can read ({reason}); check the file, or convert it to "
            "WAV, FLAC or MP3"
        ) from exc

    samples = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    decoded_s = samples.shape[0] / sample_rate_hz
    if samples.shape[0] == 0:
        raise AudioDecodeError(
            f"{name}: the audio stream holds no samples; re-export the recording"
            + (f" ({invalid_packets} packets could not be decoded)" if invalid_packets else "")
        )
    if declared_s is not None:
        shortfall_s = declared_s - decoded_s
        if shortfall_s > max(_TRUNCATION_TOLERANCE_S, _TRUNCATION_TOLERANCE_FRACTION * declared_s):
            raise AudioDecodeError(
                f"{name}: the audio ends after {decoded_s:.1f} s of the {declared_s:.1f} s its header "
                "declares (truncated or corrupt file); re-copy or re-export the recording"
            )
    np.clip(samples, -1.0, 1.0, out=samples)
    return samples


def _declared_duration_s(container: Any, stream: Any) -> float | None:
    """The duration the container or stream header declares, in seconds, or ``None`` if it gives none."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return float(container.duration) / 1_000_000  # AV_TIME_BASE: microseconds
    return None


def _skip_invalid(frames: Iterator[Any], counter: list[int]) -> Iterator[Any]:
    """Yield decoded frames, skipping (and counting in ``counter[0]``) packets FFmpeg rejects as invalid.

    One corrupt packet in a long recording should cost a few milliseconds, not the file; a file cut short
    is still caught afterwards by comparing its decoded and declared durations.
    """
    import av

    while True:
        try:
            frame = next(frames)
        except StopIteration:
            return
        except av.error.InvalidDataError:
            counter[0] += 1
            if counter[0] > 100:  # a stream that is mostly garbage is not worth decoding further
                raise
            continue
        yield frame


def _grouped(frames: Iterator[Any], av: Any) -> Iterator[Any]:
    """Regroup decoded frames through an ``AudioFifo`` (timestamps dropped, as faster-whisper does)."""
    fifo = av.AudioFifo()
    for frame in frames:
        frame.pts = None  # the FIFO refuses frames whose timestamps jump; we only need the samples
        fifo.write(frame)
        if fifo.samples >= _FIFO_GROUP_SAMPLES:
            yield fifo.read()
    if fifo.samples > 0:
        yield fifo.read()


def _one_line(exc: BaseException) -> str:
    """A short, single-line description of ``exc`` for an error message (FFmpeg's text, no errno)."""
    strerror = getattr(exc, "strerror", None)
    text = (strerror if isinstance(strerror, str) and strerror else str(exc)).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return first[:200]
