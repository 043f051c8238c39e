"""The correction's calls: each piece through Bedrock's Converse (rule 5 of :mod:`gpu_transcribe.correct`),
the tally of what came back (rule 6), and :func:`correct_file` / :func:`correct_outputs` for transcripts
already written. Orchestration only: no printing; Bedrock is reached through
:mod:`gpu_transcribe.aws.bedrock`.

:func:`correct_file` is the call for a transcript already written (``run``, the pipeline worker); it never
raises for Bedrock or an unreadable transcript: the result says what happened.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpu_transcribe.correct.config import CorrectionConfig, CorrectionResult
from gpu_transcribe.correct.files import corrected_stem, write_corrected
from gpu_transcribe.correct.prompt import (
    AnswerError,
    Piece,
    parse_answer,
    split_pieces,
    system_prompt,
    user_message,
)
from gpu_transcribe.correct.rail import refused_change
from gpu_transcribe.errors import BedrockError, GpuTranscribeError
from gpu_transcribe_engine.transcript import Transcript, transcript_from_dict

if TYPE_CHECKING:
    from gpu_transcribe.aws.bedrock import ConverseResult
    from gpu_transcribe.aws.clients import AwsContext


@functools.lru_cache(maxsize=32)
def _cached_check(region: str, profile: str | None, model_id: str) -> tuple[bool, str]:
    """:func:`~gpu_transcribe.aws.bedrock.check_model` once per process and (region, profile, model):
    ``(available, reason)``; a check that cannot be made counts as available (with the reason)."""
    from gpu_transcribe.aws.bedrock import check_model
    from gpu_transcribe.aws.clients import AwsContext

    try:
        availability = check_model(AwsContext(region=region, profile=profile), model_id)
    except GpuTranscribeError as exc:  # BedrockError, or a profile that does not exist (the call says so too)
        return True, f"model check skipped: {exc}"
    return availability.available, availability.reason


@dataclass
class _Tally:
    """What the pieces achieved; updated under ``lock`` by the worker threads."""

    texts: list[str]
    changed: int = 0
    refused: int = 0
    kept_raw: int = 0
    bedrock_failures: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    notes: list[str] = field(default_factory=list)
    stop: BedrockError | None = None
    first_error: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)


def _correct_piece(
    piece: Piece,
    raw: Sequence[str],
    system: str,
    config: CorrectionConfig,
    client: Any,
    tally: _Tally,
) -> None:
    from gpu_transcribe.aws.bedrock import RETRYABLE_CODES, converse

    where = f"segments {piece.ids[0]}-{piece.ids[-1]}"
    if tally.stop is not None:
        with tally.lock:
            tally.kept_raw += 1
            tally.notes.append(f"{where}: kept raw, not sent after an earlier Bedrock error")
        return
    try:
        answer: ConverseResult = converse(
            client,
            model_id=config.model_id,
            region=config.region,
            user_text=user_message(piece, raw),
            system_text=system,
            max_tokens=config.max_answer_tokens,
            attempts=config.converse_attempts,
            base_s=config.backoff_base_s,
            cap_s=config.backoff_cap_s,
            sleep=config.sleep,
        )
    except BedrockError as exc:
        with tally.lock:
            tally.kept_raw += 1
            tally.bedrock_failures += 1
            tally.notes.append(f"{where}: kept raw: {exc}")
            tally.first_error = tally.first_error or str(exc)
            if exc.code not in RETRYABLE_CODES:  # the same error would meet every other piece
                tally.stop = tally.stop or exc
        return
    with tally.lock:
        tally.input_tokens += answer.input_tokens
        tally.output_tokens += answer.output_tokens
    try:
        corrected = parse_answer(answer.text, piece.ids)
    except AnswerError as exc:
        with tally.lock:
            tally.kept_raw += 1
            tally.notes.append(
                f"{where}: kept raw: the answer was refused: {exc} (stop reason {answer.stop_reason})"
            )
        return
    with tally.lock:
        for index, text in zip(piece.ids, corrected, strict=True):
            text = " ".join(text.split())
            if refused_change(raw[index], text, config.max_change_fraction):
                tally.refused += 1
            elif text != raw[index]:
                tally.texts[index] = text
                tally.changed += 1


def correct_transcript(
    transcript: Transcript | Mapping[str, Any],
    config: CorrectionConfig,
    *,
    client: Any = None,
    ctx: AwsContext | None = None,
) -> CorrectionResult:
    """Correct the transcript's segments through Bedrock; write nothing.

    Args:
        transcript: a :class:`~gpu_transcribe_engine.transcript.Transcript` or its ``to_dict()`` form (the
        ``.json``
            output).
        config: model, region and rails.
        client: a ``bedrock-runtime`` client to use (made from ``ctx`` or the config when ``None``).
        ctx: the AWS context for the client and the model check (``AwsContext(config.region,
            config.profile)`` when ``None``).

    Returns:
        The result; ``texts`` holds the corrected segments when ``status`` is ``corrected``. Bedrock errors
        are recorded in it (``failed`` when no piece could be corrected), never raised.

    Raises:
        KeyError, TypeError, ValueError: ``transcript`` is a mapping without a valid ``segments`` list.
    """
    from gpu_transcribe.aws.clients import AwsContext, bedrock_runtime_client

    started = time.monotonic()
    if not isinstance(transcript, Transcript):
        transcript = transcript_from_dict(transcript)
    base = CorrectionResult(
        status="skipped",
        reason="",
        model_id=config.model_id,
        region=config.region,
        segments=len(transcript.segments),
    )
    raw = [segment.text for segment in transcript.segments]
    if not any(text.strip() for text in raw):
        return replace(base, reason="no speech to correct", elapsed_s=time.monotonic() - started)
    if config.check_model:
        available, why = _cached_check(config.region, config.profile, config.model_id)
        if not available:
            return replace(base, reason=why, elapsed_s=time.monotonic() - started)
    ctx = ctx or AwsContext(region=config.region, profile=config.profile)
    try:
        client = client or bedrock_runtime_client(ctx)
    except GpuTranscribeError as exc:  # a missing profile
        return replace(base, status="failed", reason=str(exc), elapsed_s=time.monotonic() - started)
    pieces = split_pieces(raw, config.piece_budget_tokens, config.context_segments)
    system = system_prompt(transcript.language)
    tally = _Tally(texts=list(raw))
    with ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="bedrock") as pool:
        futures = [pool.submit(_correct_piece, p, raw, system, config, client, tally) for p in pieces]
        for future in futures:
            future.result()
    price = config.price()
    cost = None
    if price is not None:
        cost = round((tally.input_tokens * price[0] + tally.output_tokens * price[1]) / 1000, 6)
    notes = tuple(sorted(tally.notes, key=lambda n: int(n.split()[1].split("-")[0])))
    failed = tally.kept_raw == len(pieces)  # not one piece corrected: writing a copy of the raw would mislead
    reason = ""
    if failed and tally.first_error:
        reason = f"Bedrock failed, raw transcript kept: {tally.first_error}"
    elif failed:
        reason = f"every answer was refused, raw transcript kept: {notes[0].split('refused: ', 1)[-1]}"
    elif notes:
        reason = f"{tally.kept_raw} of {len(pieces)} piece(s) kept raw"
    return replace(
        base,
        status="failed" if failed else "corrected",
        reason=reason,
        segments_changed=tally.changed,
        segments_refused=tally.refused,
        pieces=len(pieces),
        pieces_kept_raw=tally.kept_raw,
        input_tokens=tally.input_tokens,
        output_tokens=tally.output_tokens,
        cost_usd=cost,
        elapsed_s=time.monotonic() - started,
        texts=tuple(tally.texts) if not failed else (),
        notes=notes,
    )


def correct_file(raw_json: Path, formats: Sequence[str], config: CorrectionConfig) -> CorrectionResult:
    """Correct a transcript already written as JSON and write ``<stem>.corrected.<fmt>`` beside it.

    This is the one call for a finished file (``run --correct``, the pipeline worker after its outputs are
    written). It never raises for Bedrock, an unreadable transcript or a file it cannot write: the result's
    ``status`` and ``reason`` say what happened, and the raw files are never touched.

    Args:
        raw_json: the raw transcript's ``.json`` (``out/talk.json``); the corrected files go beside it
            (``out/talk.corrected.txt``...).
        formats: the formats to write (those of the raw transcript, normally).
        config: model, region and rails (:meth:`CorrectionConfig.from_settings`).

    Returns:
        The result, with ``outputs`` (format -> path) when it wrote files.
    """
    from gpu_transcribe_engine.errors import OutputWriteError

    started = time.monotonic()
    try:
        data = json.loads(raw_json.read_text(encoding="utf-8"))
        transcript = transcript_from_dict(data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return CorrectionResult(
            status="failed",
            reason=f"cannot read the raw transcript {raw_json}: {exc}",
            model_id=config.model_id,
            region=config.region,
            source=raw_json,
            elapsed_s=time.monotonic() - started,
        )
    result = replace(correct_transcript(transcript, config), source=raw_json)
    if result.status != "corrected":
        return result
    try:
        outputs = write_corrected(transcript, result, corrected_stem(raw_json), formats)
    except OutputWriteError as exc:
        return replace(result, status="failed", reason=str(exc), texts=())
    return replace(result, outputs=outputs, elapsed_s=time.monotonic() - started)


def correct_outputs(
    outputs: Sequence[Mapping[str, Path | str]],
    formats: Sequence[str],
    config: CorrectionConfig,
    on_progress: Callable[[str], None] | None = None,
) -> tuple[CorrectionResult, ...]:
    """:func:`correct_file` for each finished file of a run, one after another (each file's pieces go to
    Bedrock ``config.concurrency`` at a time).

    Args:
        outputs: per file, format -> the raw file written; a file without ``json`` is skipped (the
            correction reads the JSON: ``run --correct`` always writes it).
        formats: the formats to write corrected (the run's).
        config: model, region and rails.
        on_progress: called with one line before each file.

    Returns:
        One result per file, in order. Never raises for Bedrock.
    """
    results = []
    for written in outputs:
        raw_json = written.get("json")
        if raw_json is None:
            results.append(
                CorrectionResult(
                    status="skipped",
                    reason="no JSON transcript to correct (add json to --format)",
                    model_id=config.model_id,
                    region=config.region,
                )
            )
            continue
        if on_progress is not None:
            on_progress(f"correcting {Path(raw_json).name} with {config.model_id} in {config.region}")
        results.append(correct_file(Path(raw_json), formats, config))
    return tuple(results)
