"""Response bodies from a :class:`~gpu_transcribe_engine.transcript.Transcript`: OpenAI's five
``response_format`` values and
the ``/transcribe`` body.

Every body is made from the transcript as :func:`gpu_transcribe_engine.writers.sanitize` cleans it, and
``srt``/``vtt`` are
:func:`gpu_transcribe_engine.writers.render`'s output, so the server answers exactly what ``run --local``
writes to files.
No torch, no FastAPI here: plain ``dict``/``str`` values the HTTP layer sends.
"""

from __future__ import annotations

from typing import Any

from gpu_transcribe_engine.languages import LANGUAGES
from gpu_transcribe_engine.transcript import Decoding, Segment, Transcript
from gpu_transcribe_engine.writers import render, sanitize

RESPONSE_FORMATS: tuple[str, ...] = ("json", "text", "srt", "vtt", "verbose_json")
"""OpenAI's ``response_format`` values; ``json`` is the default."""
TEXT_FORMATS: frozenset[str] = frozenset({"text", "srt", "vtt"})
"""Formats answered as text bodies (:data:`MEDIA_TYPES`); the others are JSON."""
MEDIA_TYPES: dict[str, str] = {"text": "text/plain", "srt": "text/plain", "vtt": "text/vtt"}
"""Content type of each text format (``; charset=utf-8`` is added): OpenAI answers ``text/plain`` for
``text`` and ``srt``; WebVTT has its own registered type, which players and peer servers use."""
STREAM_FORMATS: tuple[str, ...] = ("json", "text")
"""Formats that ``stream=true`` answers as server-sent events (the text arrives in pieces; subtitles and
``verbose_json`` need the whole transcript, as OpenAI's streamed models accept only these)."""
FRAMES_PER_SECOND = 100
"""Whisper's log-mel frames per second; OpenAI's ``seek`` counts them."""


def openai_body(transcript: Transcript, response_format: str, task: str) -> str | dict[str, Any]:
    """The body OpenAI's ``/v1/audio/transcriptions`` (or ``translations``) gives in ``response_format``.

    - ``json``: ``{"text", "usage"}``: the segment texts joined by single spaces, and (transcriptions)
      OpenAI's ``{"type": "duration", "seconds"}`` with the audio's duration.
    - ``text``: that text and a new line.
    - ``srt``, ``vtt``: SubRip and WebVTT, byte for byte what ``run --local --format srt,vtt`` writes.
    - ``verbose_json``: ``{"task", "language" (its English name, as OpenAI gives it: ``english``; the
      language asked for, else the detected one, also for silence), "duration" (s), "text", "segments",
      "usage" (transcriptions, as for ``json``)}``; each segment ``{"id", "seek" (10 ms frame where it
      starts), "start", "end" (s), "text", "tokens", "temperature", "avg_logprob", "compression_ratio",
      "no_speech_prob"}``: its own text tokens and its window's decode statistics
      (:class:`~gpu_transcribe_engine.transcript.Decoding`). Where the algorithm gives none (``sequential``,
      which the
      server does not run) the four numbers are ``null`` rather than invented values. With word timestamps
      (``timestamp_granularities[]=word``) also ``"words": [{"word", "start", "end"}]``, OpenAI's shape.

    Args:
        transcript: the engine's result.
        response_format: one of :data:`RESPONSE_FORMATS`.
        task: ``transcribe`` or ``translate``, echoed by ``verbose_json``.

    Returns:
        A ``str`` for :data:`TEXT_FORMATS`, else a JSON-ready ``dict``.

    Raises:
        ValueError: an unknown ``response_format``.
    """
    clean = sanitize(transcript)
    usage = (
        {"usage": {"type": "duration", "seconds": round(clean.duration_s, 3)}} if task == "transcribe" else {}
    )
    if response_format == "json":
        return {"text": clean.text, **usage}
    if response_format == "text":
        return clean.text + "\n"
    if response_format in ("srt", "vtt"):
        return render(clean, response_format)
    if response_format == "verbose_json":
        body: dict[str, Any] = {
            "task": task,
            "language": LANGUAGES.get(clean.language, clean.language),
            "duration": round(clean.duration_s, 3),
            "text": clean.text,
            "segments": [_verbose_segment(index, segment) for index, segment in enumerate(clean.segments)],
            **usage,
        }
        if clean.options.word_timestamps:
            body["words"] = [
                {"word": w.word.strip(), "start": w.start_s, "end": w.end_s}
                for segment in clean.segments
                for w in segment.words
            ]
        return body
    raise ValueError(f"response_format: {response_format!r} is not one of {', '.join(RESPONSE_FORMATS)}")


def _verbose_segment(index: int, segment: Segment) -> dict[str, Any]:
    """One ``verbose_json`` segment (see :func:`openai_body`)."""
    decoding = segment.decoding or Decoding()
    return {
        "id": index,
        "seek": int(segment.start_s * FRAMES_PER_SECOND),
        "start": segment.start_s,
        "end": segment.end_s,
        "text": segment.text,
        "tokens": list(decoding.tokens),
        "temperature": decoding.temperature,
        "avg_logprob": _rounded(decoding.avg_logprob),
        "compression_ratio": _rounded(decoding.compression_ratio),
        "no_speech_prob": _rounded(decoding.no_speech_prob),
    }


def _rounded(value: float | None) -> float | None:
    """``value`` to 6 decimals (float32 noise beyond that), ``None`` stays ``None``."""
    return None if value is None else round(value, 6)


def transcribe_body(
    transcript: Transcript, model: str, processing_time_s: float, gpu_memory_used_bytes: int | None
) -> dict[str, Any]:
    """The ``POST /transcribe`` body.

    Args:
        transcript: the engine's result.
        model: the loaded model's id or directory, as the server was started with.
        processing_time_s: wall-clock seconds from the upload's arrival to the transcript (decoding,
            queueing and transcription).
        gpu_memory_used_bytes: ``torch.cuda.memory_allocated()`` after the transcription, or ``None`` on CPU.

    Returns:
        ``{"transcription": text, "duration": audio seconds, "language": code, "model", "processing_time":
        seconds, "gpu_memory_used": bytes or null, "segments": [{"start", "end", "text"}]}`` (times in
        seconds, milliseconds precision); with word timestamps each segment also has ``words``:
        ``[{"word", "start", "end", "probability"}]``.
    """
    clean = sanitize(transcript)
    return {
        "transcription": clean.text,
        "duration": round(clean.duration_s, 3),
        "language": clean.language,
        "model": model,
        "processing_time": round(processing_time_s, 3),
        "gpu_memory_used": gpu_memory_used_bytes,
        "segments": [_simple_segment(s, clean.options.word_timestamps) for s in clean.segments],
    }


def _simple_segment(segment: Segment, words: bool) -> dict[str, Any]:
    """One ``/transcribe`` segment, with its words when they were asked for."""
    body: dict[str, Any] = {"start": segment.start_s, "end": segment.end_s, "text": segment.text}
    if words:
        body["words"] = [
            {"word": w.word.strip(), "start": w.start_s, "end": w.end_s, "probability": w.probability}
            for w in segment.words
        ]
    return body
