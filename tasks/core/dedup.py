"""When two examples are the same: one rule for generation (inputs already written) and
processing (retrieved and generated rows pooled), so neither keeps what the other drops.

Exact duplicates: equal after `normalise` (lower case, punctuation dropped, whitespace
collapsed). Near-duplicates (`SeenInputs`): long inputs that differ only slightly.
"""

from __future__ import annotations

import re

from rapidfuzz import fuzz, process

NEAR_DUP_MIN_CHARS = 40
_PUNCT = re.compile(r"[^\w\s]")
_NUMBERS = re.compile(r"\d+")


def normalise(text: str) -> str:
    """Lower case, punctuation dropped, whitespace collapsed: the key for exact duplicates."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


class SeenInputs:
    """Inputs kept so far, for exact and near-duplicate checks.

    Near-duplicates (rapidfuzz ratio >= threshold) are only sought among texts of at least
    NEAR_DUP_MIN_CHARS characters and with the same numbers: short inputs that differ in one
    word ("forty-two" / "forty-three") or one number are different examples, not copies.
    """

    def __init__(self, threshold: float, texts: list[str] = ()):
        self.threshold = threshold
        self.exact: set[str] = set()
        self.long: list[str] = []
        for t in texts:
            self.add(t)

    def is_duplicate(self, text: str) -> bool:
        key = normalise(text)
        if key in self.exact:
            return True
        if len(key) < NEAR_DUP_MIN_CHARS or not self.long:
            return False
        numbers = _NUMBERS.findall(key)
        near = process.extract(key, self.long, scorer=fuzz.ratio, score_cutoff=self.threshold, limit=5)
        return any(_NUMBERS.findall(match) == numbers for match, _, _ in near)

    def add(self, text: str) -> None:
        key = normalise(text)
        self.exact.add(key)
        if len(key) >= NEAR_DUP_MIN_CHARS:
            self.long.append(key)
