"""The correction's files: a transcript read back from its ``.json``, and the corrected transcript written
beside the raw one as ``<stem>.corrected.<fmt>`` (rule 6 of :mod:`gpu_transcribe.correct`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from gpu_transcribe_engine.transcript import Transcript

if TYPE_CHECKING:
    from gpu_transcribe.correct.config import CorrectionResult

#: Infix of the corrected files: ``talk.json`` -> ``talk.corrected.json``.
CORRECTED_INFIX = "corrected"


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
        replace(segment, text=text, words=())
        for segment, text in zip(transcript.segments, result.texts, strict=True)
    )
    summary = {k: v for k, v in result.to_dict().items() if k not in ("outputs",)}
    corrected = replace(transcript, segments=segments, extra={**transcript.extra, "correction": summary})
    return write_outputs(corrected, stem, formats)
