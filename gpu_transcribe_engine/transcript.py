"""What a transcription produces: segments with times, and the facts needed to reproduce it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from gpu_transcribe_engine.options import TranscribeOptions


@dataclass(frozen=True)
class Decoding:
    """How the window holding a segment was decoded: the numbers OpenAI's ``verbose_json`` gives per segment.

    Every segment of a window carries that window's ``temperature``, ``avg_logprob``, ``compression_ratio``
    and ``no_speech_prob``; ``tokens`` are the segment's own text tokens.

    Attributes:
        tokens: the segment's text token ids (no timestamp or special tokens).
        temperature: 0.0 for beam search, else the fallback's sampling temperature.
        avg_logprob: the window's average token log-probability (natural log; OpenAI's rule).
        compression_ratio: UTF-8 bytes of the window's text over their zlib-compressed size (OpenAI's rule).
        no_speech_prob: the window's ``<|nospeech|>`` probability (0..1).
    """

    tokens: tuple[int, ...] = ()
    temperature: float | None = None
    avg_logprob: float | None = None
    compression_ratio: float | None = None
    no_speech_prob: float | None = None


@dataclass(frozen=True)
class Word:
    """One word of a segment, timed by the decoder's cross-attention (:mod:`gpu_transcribe_engine.words`).

    Attributes:
        word: the word as decoded, with its leading space and attached punctuation (`` Hello,``).
        start_s: start time in seconds from the beginning of the audio.
        end_s: end time in seconds (>= ``start_s``).
        probability: mean probability of its tokens under the decoder, 0..1.
    """

    word: str
    start_s: float
    end_s: float
    probability: float


@dataclass(frozen=True)
class Segment:
    """A stretch of speech and its text.

    Attributes:
        start_s: start time in seconds from the beginning of the audio (>= 0).
        end_s: end time in seconds (>= ``start_s``, <= the audio's duration).
        text: the words, stripped of surrounding white space.
        words: its words with times when word timestamps were asked for (``word_timestamps``), else empty.
        decoding: the decode's statistics, or ``None`` where the algorithm gives none; not written by
            :meth:`Transcript.to_dict`.
    """

    start_s: float
    end_s: float
    text: str
    words: tuple[Word, ...] = ()
    decoding: Decoding | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Timings:
    """Wall-clock seconds spent on each phase of one file (the model load is shared by a batch).

    Attributes:
        load_s: seconds to load the model (the same for every file of a batch).
        decode_s: seconds to decode the file to 16 kHz mono float32.
        transcribe_s: seconds of VAD, feature extraction and generation for the file.
    """

    load_s: float
    decode_s: float
    transcribe_s: float


@dataclass(frozen=True)
class Transcript:
    """The transcript of one audio file.

    Attributes:
        segments: in time order, start times non-decreasing.
        language: the language code used or detected (``sv``).
        duration_s: the audio's duration in seconds.
        timings: seconds per phase.
        model: model id or local directory as given.
        revision: model revision (git ref) if given, else ``None``.
        device: ``cuda`` or ``cpu``.
        dtype: ``float16`` or ``float32``.
        options: the options used, algorithm resolved from ``auto`` to what actually ran.
        audio: the input path as given.
    """

    segments: tuple[Segment, ...]
    language: str
    duration_s: float
    timings: Timings
    model: str
    revision: str | None
    device: str
    dtype: str
    options: TranscribeOptions
    audio: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """All segment texts joined by single spaces."""
        return " ".join(s.text for s in self.segments if s.text).strip()

    @property
    def real_time_factor(self) -> float:
        """Transcription seconds / audio seconds (lower is faster; 0.05 means 20x real time)."""
        return self.timings.transcribe_s / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: every field, segments as ``{"start_s", "end_s", "text"}``, and ``text``.

        With ``options.word_timestamps`` each segment also has ``words``: ``{"word", "start_s", "end_s",
        "probability"}`` per word.
        """
        data = asdict(self)
        data["segments"] = [{k: v for k, v in asdict(s).items() if k != "decoding"} for s in self.segments]
        if not self.options.word_timestamps:
            for segment in data["segments"]:
                segment.pop("words", None)
        data["text"] = self.text
        data["real_time_factor"] = self.real_time_factor
        return data


def transcript_from_dict(data: Mapping[str, Any]) -> Transcript:
    """Rebuild a :class:`Transcript` from :meth:`Transcript.to_dict` output (a ``.json`` output, a job's
    ``result.json``). Strict: every field ``to_dict`` writes must be there, except ``revision``, ``audio``,
    ``extra`` and each segment's ``words``; segments' decode statistics are not written, so they come back
    as ``None``. The derived keys ``text`` and ``real_time_factor`` are ignored (the Transcript computes
    them).

    Raises:
        ValueError: a field is missing or has the wrong shape; the message starts with ``not a transcript``.
    """
    try:
        return Transcript(
            segments=tuple(
                Segment(
                    start_s=float(s["start_s"]),
                    end_s=float(s["end_s"]),
                    text=str(s["text"]),
                    words=tuple(Word(**w) for w in s.get("words", ())),
                )
                for s in data["segments"]
            ),
            language=str(data["language"]),
            duration_s=float(data["duration_s"]),
            timings=Timings(**data["timings"]),
            model=str(data["model"]),
            revision=data.get("revision"),
            device=str(data["device"]),
            dtype=str(data["dtype"]),
            options=TranscribeOptions(**data["options"]),
            audio=str(data.get("audio", "")),
            extra=dict(data.get("extra") or {}),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a transcript: {type(exc).__name__}: {exc}") from None
