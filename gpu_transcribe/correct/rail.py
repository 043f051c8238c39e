"""The safety rail (rule 4 of :mod:`gpu_transcribe.correct`): a corrected segment too far from the raw one,
in words, is kept raw.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_EDGE_PUNCTUATION = re.compile(r"^\W+|\W+$")


def word_key(token: str) -> str:
    """A white-space-free token of a text as the rail compares it: case-folded, punctuation at its edges
    removed (``"Hamlet,"`` -> ``"hamlet"``; ``"--"`` -> ``""``)."""
    return _EDGE_PUNCTUATION.sub("", token.casefold())


def words(text: str) -> list[str]:
    """The words of ``text`` for the safety rail: split on white space, :func:`word_key` of each, empty
    ones dropped."""
    return [key for key in map(word_key, text.split()) if key]


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
    """True when the safety rail keeps ``raw`` instead of ``corrected`` (rule 4 of
    :mod:`gpu_transcribe.correct`)."""
    if not corrected.strip() and raw.strip():
        return True
    raw_words = words(raw)
    distance = word_edit_distance(raw_words, words(corrected))
    return distance > max(1.0, max_change_fraction * len(raw_words))
