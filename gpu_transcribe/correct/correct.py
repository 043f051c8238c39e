"""Correction of a finished transcript by a language model on Amazon Bedrock (``run --correct``, the
pipeline's optional stage). Orchestration only: no printing; Bedrock is reached through
:mod:`gpu_transcribe.aws.bedrock`.

The flow for one transcript:

1. **Pieces.** The segments are cut, in order, into pieces whose text fits a budget of approximate tokens
   (:func:`approx_tokens`: characters / :data:`CHARS_PER_TOKEN`, rounded up; the rule is deliberately
   pessimistic so that a piece and its answer fit the model's limits). A segment larger than the budget is a
   piece of its own. Each piece is sent with :attr:`CorrectionConfig.context_segments` neighbouring segments
   on each side as read-only context.
2. **Prompt.** A system prompt in the transcript's language (Swedish or English; other languages get the
   English prompt naming the language) asks to fix spelling, names, capitalisation and punctuation and never
   to add, drop, merge, split or reorder content, and to answer with only a JSON object mapping each segment
   id of the piece to its corrected text, the same ids in the same order.
3. **Parse.** An answer that is not that object (bad JSON, an id missing, added or out of order, a value that
   is not a string) leaves the whole piece raw, counted in :attr:`CorrectionResult.pieces_kept_raw`.
4. **Safety rail.** A corrected segment is kept raw, counted in :attr:`CorrectionResult.segments_refused`,
   when it is empty, or when its word edit distance from the raw segment (:func:`word_edit_distance` on
   :func:`words`: case-folded, punctuation at word edges removed, so punctuation and capitalisation fixes do
   not count) exceeds ``max_change_fraction`` of the raw segment's words, with a floor of one word (so a
   single misspelt word in a one-word segment may be fixed).
5. **Calls.** At most ``concurrency`` Converse calls at once (a thread pool); throttling is retried by
   :func:`~gpu_transcribe.aws.bedrock.converse`. After any other Bedrock error, pieces not yet sent are not
   sent (they stay raw): the error would repeat.
6. **Result.** Tokens and cost (:data:`PRICES_USD_PER_1K_TOKENS`) are recorded. When no piece could be
   corrected (Bedrock failed, or every answer was refused), the status is ``failed`` with the reason, and
   nothing is written: the
   raw transcript stands alone and the run still succeeds. Otherwise the corrected transcript is written
   beside the raw one as ``<stem>.corrected.<fmt>`` through
   :func:`gpu_transcribe_engine.writers.write_outputs` (the same
   renderers, so the same segment times, and atomic files), never instead of it.

:func:`correct_file` is the call for a transcript already written (``run``, the pipeline worker); it never
raises for Bedrock or an unreadable transcript: the result says what happened.
"""

from __future__ import annotations

import functools
import json
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from gpu_transcribe.errors import BedrockError, GpuTranscribeError
from gpu_transcribe_engine.transcript import Transcript, transcript_from_dict

if TYPE_CHECKING:
    from gpu_transcribe.aws.bedrock import ConverseResult
    from gpu_transcribe.aws.clients import AwsContext
    from gpu_transcribe.settings import Settings

#: Characters per token assumed when sizing pieces. Anthropic and OpenAI quote about 4 characters per token
#: for English; Swedish words (long compounds, å/ä/ö) cost more tokens, so 3 is used to stay on the safe side.
CHARS_PER_TOKEN = 3

#: Default budget of one piece's segments, in approximate tokens. The answer repeats the piece, so this also
#: bounds the answer: 1,500 tokens leave ample room under Claude 3 Haiku's 4,096-token output limit (model
#: card, Anthropic, March 2024) for the JSON keys and quoting.
PIECE_BUDGET_TOKENS = 1500

#: ``inferenceConfig.maxTokens`` for every call: Claude 3 Haiku's output limit.
MAX_ANSWER_TOKENS = 4096

#: Segments of context before and after each piece (read only).
CONTEXT_SEGMENTS = 2

#: On-demand prices in USD per 1,000 tokens (input, output) by foundation model id, from
#: aws.amazon.com/bedrock/pricing (Anthropic, on-demand, US East (N. Virginia)), as published in 2024 and not
#: re-checked since: prices differ by region and change. A model not listed gets no cost (``None``).
PRICES_USD_PER_1K_TOKENS: dict[str, tuple[float, float]] = {
    "anthropic.claude-3-haiku-20240307-v1:0": (0.00025, 0.00125),
    "anthropic.claude-3-5-haiku-20241022-v1:0": (0.0008, 0.004),
    "anthropic.claude-3-5-sonnet-20240620-v1:0": (0.003, 0.015),
}

#: Infix of the corrected files: ``talk.json`` -> ``talk.corrected.json``.
CORRECTED_INFIX = "corrected"

Status = Literal["corrected", "failed", "skipped"]

_SYSTEM_PROMPTS: dict[str, str] = {
    "sv": (
        "Du korrekturläser en automatisk transkription av tal på svenska. Rätta stavning, namn, stor bokstav "
        "och skiljetecken i varje segment. Lägg aldrig till, ta bort, slå ihop, dela eller flytta innehåll: "
        "varje segment ska ha samma ord i samma ordning, bara rättade. Är du osäker, lämna segmentet som det "
        'är. Segmenten i "context_before" och "context_after" är bara sammanhang: returnera dem inte. Svara '
        'endast med ett JSON-objekt med exakt samma nycklar, i samma ordning, som i "segments", och den '
        "rättade texten som värde. Skriv ingenting annat."
    ),
    "en": (
        "You proofread an automatic transcript of speech in {language}. Fix spelling, names, "
        "capitalisation and punctuation in each segment. Never add, drop, merge, split or reorder content: "
        "each segment must keep the same words in the same order, only corrected. When unsure, leave the "
        'segment as it is. The segments in "context_before" and "context_after" are context only: do not '
        "return them. Answer with only a JSON object with exactly the same keys, in the same order, as "
        '"segments", and the corrected text as each value. Write nothing else.'
    ),
}
_LANGUAGE_NAMES = {"en": "English", "sv": "Swedish", "no": "Norwegian", "da": "Danish", "fi": "Finnish"}
_EDGE_PUNCTUATION = re.compile(r"^\W+|\W+$")
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


@dataclass(frozen=True)
class CorrectionConfig:
    """How to correct: which model, where, and the safety rails.

    Attributes:
        model_id: Bedrock model id or cross-region inference profile id.
        region: the region of the Bedrock calls.
        profile: AWS profile, ``None`` for boto3's default chain.
        max_change_fraction: see the module's rule 4 (0 < f <= 1).
        concurrency: the most Converse calls in flight at once.
        piece_budget_tokens: approximate tokens of segment text per piece (:func:`approx_tokens`).
        context_segments: read-only neighbours sent on each side of a piece.
        max_answer_tokens: ``inferenceConfig.maxTokens``.
        check_model: ask the control plane first whether the model is offered in the region
            (:func:`~gpu_transcribe.aws.bedrock.check_model`); a check that cannot be made is skipped.
        price_usd_per_1k_tokens: ``(input, output)`` USD per 1,000 tokens, or ``None`` to look the model up
            in :data:`PRICES_USD_PER_1K_TOKENS`.
        converse_attempts: tries per Converse call while throttled.
        backoff_base_s, backoff_cap_s: the retry schedule in seconds (full jitter).
        sleep: how to wait between tries (tests pass a recorder).
    """

    model_id: str
    region: str
    profile: str | None = None
    max_change_fraction: float = 0.3
    concurrency: int = 4
    piece_budget_tokens: int = PIECE_BUDGET_TOKENS
    context_segments: int = CONTEXT_SEGMENTS
    max_answer_tokens: int = MAX_ANSWER_TOKENS
    check_model: bool = True
    price_usd_per_1k_tokens: tuple[float, float] | None = None
    converse_attempts: int = 6
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 20.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> CorrectionConfig:
        """The configuration of the ``correct_*`` settings; the region is ``correct_region`` or
        ``region``."""
        return cls(
            model_id=settings.correct_model_id,
            region=settings.correct_region or settings.region,
            profile=settings.aws_profile,
            max_change_fraction=settings.correct_max_change_fraction,
            concurrency=settings.correct_concurrency,
        )

    def for_pipeline(self, model_id: str, region: str) -> CorrectionConfig:
        """This configuration with the model and region a pipeline's deploy chose (its worker config's
        ``correct_model_id``, ``correct_region``); ``""`` keeps this one's."""
        return replace(self, model_id=model_id or self.model_id, region=region or self.region)

    def price(self) -> tuple[float, float] | None:
        """``(input, output)`` USD per 1,000 tokens, or ``None`` when unknown."""
        if self.price_usd_per_1k_tokens is not None:
            return self.price_usd_per_1k_tokens
        from gpu_transcribe.aws.bedrock import foundation_model_id

        return PRICES_USD_PER_1K_TOKENS.get(foundation_model_id(self.model_id))


@dataclass(frozen=True)
class Piece:
    """One Converse call's worth of segments.

    Attributes:
        ids: the segment indices to correct (consecutive, in order).
        before: indices of the read-only context before.
        after: indices of the read-only context after.
    """

    ids: tuple[int, ...]
    before: tuple[int, ...]
    after: tuple[int, ...]


@dataclass(frozen=True)
class CorrectionResult:
    """What the correction of one transcript did. ``to_dict`` is what a job records.

    Attributes:
        status: ``corrected`` (files written; some pieces or segments may be raw, see the counts),
            ``failed`` (no piece could be corrected: Bedrock failed or every answer was refused; or the
            transcript could not be read or the corrected one written; no corrected file)
            or ``skipped`` (nothing to do, or the model is not offered in the region; nothing written).
        reason: why ``failed`` or ``skipped``, or what went wrong with some pieces; ``""`` when all went well.
        model_id: the model asked.
        region: where.
        segments: segments in the transcript.
        segments_changed: segments whose corrected text differs from the raw one (and was kept).
        segments_refused: corrected segments kept raw by the safety rail.
        pieces: Converse calls planned.
        pieces_kept_raw: pieces left raw (a bad answer, a Bedrock error, or not sent after one).
        input_tokens, output_tokens: tokens Bedrock counted, over every call.
        cost_usd: the tokens' cost in USD from the price table, ``None`` if the model's price is unknown.
        elapsed_s: wall seconds of the correction.
        outputs: format -> corrected file written.
        source: the raw transcript it started from (a ``.json`` file), if any.
        texts: the corrected text of every segment, in order (raw where kept raw); empty unless corrected.
        notes: one line per piece that was kept raw, saying why.
    """

    status: Status
    reason: str
    model_id: str
    region: str
    segments: int = 0
    segments_changed: int = 0
    segments_refused: int = 0
    pieces: int = 0
    pieces_kept_raw: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    elapsed_s: float = 0.0
    outputs: dict[str, Path] = field(default_factory=dict)
    source: Path | None = None
    texts: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (no texts): status, reason, model, counts, tokens, cost, paths."""
        return {
            "status": self.status,
            "reason": self.reason,
            "model_id": self.model_id,
            "region": self.region,
            "segments": self.segments,
            "segments_changed": self.segments_changed,
            "segments_refused": self.segments_refused,
            "pieces": self.pieces,
            "pieces_kept_raw": self.pieces_kept_raw,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "elapsed_s": round(self.elapsed_s, 3),
            "outputs": {fmt: str(path) for fmt, path in self.outputs.items()},
            "source": str(self.source) if self.source is not None else None,
            "notes": list(self.notes),
        }


# --- pure helpers --------------------------------------------------------------------------------------


def approx_tokens(text: str) -> int:
    """Approximate tokens of ``text``: ``ceil(len(text) / CHARS_PER_TOKEN)`` (characters, not bytes)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def split_pieces(texts: Sequence[str], budget_tokens: int, context_segments: int) -> list[Piece]:
    """Cut segments ``texts`` into consecutive pieces of at most ``budget_tokens`` approximate tokens each
    (a segment over the budget alone), each with up to ``context_segments`` neighbours on each side."""
    pieces: list[Piece] = []
    current: list[int] = []
    used = 0
    for index, text in enumerate(texts):
        cost = approx_tokens(text)
        if current and used + cost > budget_tokens:
            pieces.append(_piece(current, len(texts), context_segments))
            current, used = [], 0
        current.append(index)
        used += cost
    if current:
        pieces.append(_piece(current, len(texts), context_segments))
    return pieces


def _piece(ids: Sequence[int], count: int, context: int) -> Piece:
    first, last = ids[0], ids[-1]
    return Piece(
        ids=tuple(ids),
        before=tuple(range(max(0, first - context), first)),
        after=tuple(range(last + 1, min(count, last + 1 + context))),
    )


def system_prompt(language: str) -> str:
    """The system prompt for a transcript in ``language`` (a Whisper code): Swedish for ``sv``, else the
    English prompt naming the language."""
    if language in _SYSTEM_PROMPTS and language != "en":
        return _SYSTEM_PROMPTS[language]
    name = _LANGUAGE_NAMES.get(
        language, f"the language with code {language!r}" if language else "its language"
    )
    return _SYSTEM_PROMPTS["en"].format(language=name)


def user_message(piece: Piece, texts: Sequence[str]) -> str:
    """The user message for ``piece``: a JSON object with ``context_before``, ``segments`` and
    ``context_after``, each mapping segment ids (decimal strings of the indices) to text."""
    document = {
        "context_before": {str(i): texts[i] for i in piece.before},
        "segments": {str(i): texts[i] for i in piece.ids},
        "context_after": {str(i): texts[i] for i in piece.after},
    }
    return json.dumps(document, ensure_ascii=False, indent=1)


class AnswerError(ValueError):
    """The model's answer is not the JSON object asked for (the message says how)."""


def parse_answer(answer: str, ids: Sequence[int]) -> list[str]:
    """The corrected texts of ``ids``, in order, from the model's answer.

    The answer must be one JSON object whose keys are exactly ``ids`` (as decimal strings) in the same order
    and whose values are strings; a surrounding Markdown code fence is tolerated.

    Raises:
        AnswerError: not such an object.
    """
    text = answer.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnswerError(f"not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(data, dict):
        raise AnswerError(f"a JSON {type(data).__name__}, not an object")
    expected = [str(i) for i in ids]
    got = list(data)
    if got != expected:
        missing = [k for k in expected if k not in data]
        extra = [k for k in got if k not in expected]
        if missing or extra:
            raise AnswerError(f"segment ids differ (missing {missing or 'none'}, extra {extra or 'none'})")
        raise AnswerError("segment ids reordered")
    values = [data[k] for k in expected]
    if not all(isinstance(v, str) for v in values):
        raise AnswerError("a value is not a string")
    return values


def words(text: str) -> list[str]:
    """The words of ``text`` for the safety rail: split on white space, case-folded, punctuation at each
    word's edges removed, empty ones dropped."""
    out = []
    for token in text.split():
        word = _EDGE_PUNCTUATION.sub("", token.casefold())
        if word:
            out.append(word)
    return out


def word_edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance between two word lists: the fewest word insertions, deletions and substitutions
    that turn ``a`` into ``b`` (O(len(a) * len(b)) time, O(len(b)) memory)."""
    previous = list(range(len(b) + 1))
    for i, word_a in enumerate(a, start=1):
        current = [i]
        for j, word_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word_a != word_b)))
        previous = current
    return previous[-1]


def refused_change(raw: str, corrected: str, max_change_fraction: float) -> bool:
    """True when the safety rail keeps ``raw`` instead of ``corrected`` (module rule 4)."""
    if not corrected.strip() and raw.strip():
        return True
    raw_words = words(raw)
    distance = word_edit_distance(raw_words, words(corrected))
    return distance > max(1.0, max_change_fraction * len(raw_words))


# --- transcripts -------------------------------------------------------------------------------------------


def corrected_stem(raw_path: Path) -> Path:
    """``out/talk.json`` -> ``out/talk.corrected`` (the stem
    :func:`gpu_transcribe_engine.writers.write_outputs` takes)."""
    return raw_path.with_name(f"{raw_path.stem}.{CORRECTED_INFIX}")


# --- Bedrock -----------------------------------------------------------------------------------------------


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
    from gpu_transcribe.aws.bedrock import bedrock_runtime_client
    from gpu_transcribe.aws.clients import AwsContext

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


def write_corrected(
    transcript: Transcript, result: CorrectionResult, stem: Path, formats: Sequence[str]
) -> dict[str, Path]:
    """Write ``result.texts`` over ``transcript``'s segment times to ``f"{stem}.{fmt}"`` for each format
    (:func:`gpu_transcribe_engine.writers.write_outputs`: atomic, the same renderers as the raw files). The
    JSON's ``extra``
    gains ``correction`` (:meth:`CorrectionResult.to_dict` without paths) and ``raw_text`` is not stored.

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
