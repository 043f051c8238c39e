"""The correction's files: a transcript read back from its ``.json``, and the corrected transcript written
beside the raw one as ``<stem>.corrected.<fmt>`` (rule 6 of :mod:`gpu_transcribe.correct`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpu_transcribe_engine.options import TranscribeOptions
from gpu_transcribe_engine.transcript import Segment, Timings, Transcript

if TYPE_CHECKING:
    from gpu_transcribe.correct.config import CorrectionResult

#: Infix of the corrected files: ``talk.json`` -> ``talk.corrected.json``.
CORRECTED_INFIX = "corrected"


def transcript_from_dict(data: Mapping[str, Any]) -> Transcript:
    """A :class:`~gpu_transcribe_engine.transcript.Transcript` from what :meth:`Transcript.to_dict` wrote
    (the ``.json``
    output); fields it lacks get neutral values (no timings, default options).

    Raises:
        KeyError, TypeError, ValueError: no ``segments`` list of ``{start_s, end_s, text}``.
    """
    segments = tuple(
        Segment(start_s=float(s["start_s"]), end_s=float(s["end_s"]), text=str(s["text"]))
        for s in data["segments"]
    )
    options_data = data.get("options") or {}
    known = set(TranscribeOptions.__dataclass_fields__)
    options = TranscribeOptions(**{k: v for k, v in options_data.items() if k in known})
    timings_data = data.get("timings") or {}
    timings = Timings(
        load_s=float(timings_data.get("load_s", 0.0)),
        decode_s=float(timings_data.get("decode_s", 0.0)),
        transcribe_s=float(timings_data.get("transcribe_s", 0.0)),
    )
    return Transcript(
        segments=segments,
        language=str(data.get("language", "")),
        duration_s=float(data.get("duration_s", 0.0)),
        timings=timings,
        model=str(data.get("model", "")),
        revision=data.get("revision"),
        device=str(data.get("device", "")),
        dtype=str(data.get("dtype", "")),
        options=options,
        audio=str(data.get("audio", "")),
        extra=dict(data.get("extra") or {}),
    )


def corrected_stem(raw_path: Path) -> Path:
    """``out/talk.json`` -> ``out/talk.corrected`` (the stem
    :func:`gpu_transcribe_engine.writers.write_outputs` takes)."""
    return raw_path.with_name(f"{raw_path.stem}.{CORRECTED_INFIX}")


def write_corrected(
    transcript: Transcript, result: CorrectionResult, stem: Path, formats: Sequence[str]
) -> dict[str, Path]:
    """Write ``result.texts`` over ``transcript``'s segment times to ``f"{stem}.{fmt}"`` for each format
    (:func:`gpu_transcribe_engine.writers.write_outputs`: atomic, the same renderers as the raw files). The
    JSON's ``extra`` gains ``correction``
    (:meth:`~gpu_transcribe.correct.config.CorrectionResult.to_dict` without paths) and ``raw_text`` is not
    stored.

    Raises:
        OutputWriteError: a file cannot be written.
        ValueError: ``result.texts`` does not have one text per segment.
    """
    from gpu_transcribe_engine.writers import write_outputs

    if len(result.texts) != len(transcript.segments):
        raise ValueError("the correction has not one text per segment")
    segments = tuple(
        replace(segment, text=text) for segment, text in zip(transcript.segments, result.texts, strict=True)
    )
    summary = {k: v for k, v in result.to_dict().items() if k not in ("outputs",)}
    corrected = replace(transcript, segments=segments, extra={**transcript.extra, "correction": summary})
    return write_outputs(corrected, stem, formats)
