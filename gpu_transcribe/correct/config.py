"""What the correction is asked to do (:class:`CorrectionConfig`: model, region, rails, prices) and what it
did (:class:`CorrectionResult`, what a job records).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from gpu_transcribe.settings import Settings

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

Status = Literal["corrected", "failed", "skipped"]


@dataclass(frozen=True)
class CorrectionConfig:
    """How to correct: which model, where, and the safety rails.

    Attributes:
        model_id: Bedrock model id or cross-region inference profile id.
        region: the region of the Bedrock calls.
        profile: AWS profile, ``None`` for boto3's default chain.
        max_change_fraction: see rule 4 of :mod:`gpu_transcribe.correct` (0 < f <= 1).
        concurrency: the most Converse calls in flight at once.
        piece_budget_tokens: approximate tokens of segment text per piece
            (:func:`~gpu_transcribe.correct.prompt.approx_tokens`).
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
