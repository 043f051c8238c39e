"""The correction's files: a transcript read back from its ``.json``, and the corrected transcript written
beside the raw one as ``<stem>.corrected.<fmt>`` (rule 6 of :mod:`gpu_transcribe.correct`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from gpu_transcribe.correct.rail import word_key
from gpu_transcribe_engine.transcript import Transcript, Word

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
    (:func:`gpu_transcribe_engine.writers.write_outputs`: atomic, the same renderers as the raw files). A
    segment with word timestamps keeps them, carried onto its corrected words (:func:`carry_word_times`), so
    the corrected subtitles are cut at words too. The JSON's ``extra`` gains ``correction``
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
        replace(segment, text=text, words=carry_word_times(segment.words, text))
        for segment, text in zip(transcript.segments, result.texts, strict=True)
    )
    summary = {k: v for k, v in result.to_dict().items() if k not in ("outputs",)}
    corrected = replace(transcript, segments=segments, extra={**transcript.extra, "correction": summary})
    return write_outputs(corrected, stem, formats)


def carry_word_times(raw: Sequence[Word], text: str) -> tuple[Word, ...]:
    """The words of ``text`` (a segment's corrected text) timed from the segment's raw words ``raw``.

    The two word sequences are aligned as the rail compares words
    (:func:`~gpu_transcribe.correct.rail.word_key`) by the standard library's ``difflib.SequenceMatcher``: a
    corrected word aligned with one raw
    word (the same, or a correction of it: spelling, case, punctuation) takes its times and probability; a
    run of corrected words that replaces a run of raw words of another length ("till baka" -> "tillbaka")
    shares that run's time span evenly, with the run's mean probability; a word the correction added has no
    audio of its own and gets zero length where the previous raw word ends, probability 0.0; raw words the
    correction removed are dropped.

    Args:
        raw: the raw segment's words in time order (empty without word timestamps).
        text: the corrected text.

    Returns:
        One :class:`~gpu_transcribe_engine.transcript.Word` per white-space-separated word of ``text``
        (with its leading space, as the engine writes words); empty when ``raw`` is.
    """
    from difflib import SequenceMatcher

    tokens = text.split()
    if not raw or not tokens:
        return ()
    matcher = SequenceMatcher(
        None, [word_key(w.word) for w in raw], [word_key(t) for t in tokens], autojunk=False
    )
    out: list[Word] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "delete":
            continue
        if tag == "insert":
            at_s = raw[i1 - 1].end_s if i1 > 0 else raw[0].start_s
            out.extend(Word(" " + token, at_s, at_s, 0.0) for token in tokens[j1:j2])
        elif i2 - i1 == j2 - j1:
            out.extend(
                Word(" " + token, w.start_s, w.end_s, w.probability)
                for token, w in zip(tokens[j1:j2], raw[i1:i2], strict=True)
            )
        else:
            start_s, end_s = raw[i1].start_s, raw[i2 - 1].end_s
            step_s = (end_s - start_s) / (j2 - j1)
            probability = sum(w.probability for w in raw[i1:i2]) / (i2 - i1)
            out.extend(
                Word(" " + token, start_s + k * step_s, start_s + (k + 1) * step_s, probability)
                for k, token in enumerate(tokens[j1:j2])
            )
    return tuple(out)
