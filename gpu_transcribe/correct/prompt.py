"""What is sent to the model and what must come back: the transcript cut into pieces with read-only context,
the system prompt in the transcript's language, the user message, and the strict parse of the answer (rules 1
to 3 of :mod:`gpu_transcribe.correct`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

#: Characters per token assumed when sizing pieces. Anthropic and OpenAI quote about 4 characters per token
#: for English; Swedish words (long compounds, å/ä/ö) cost more tokens, so 3 is used to stay on the safe side.
CHARS_PER_TOKEN = 3

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
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


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
