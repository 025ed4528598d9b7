"""Adaptive votes: ask the teacher for an answer only as often as the answer needs.

Fixed self-consistency (the written answer plus two votes, the majority wins) pays three answers
for every example and still lets a teacher's alike mistakes through: against a scripted teacher
wrong 20% of the time, 200 accepted examples were 88-90% right for 3.4 answers each. Adaptive
votes (Adaptive-Consistency, arXiv 2305.11860; Early-Stopping Self-Consistency, ICLR 2024) stop
as soon as the answers agree and ask more only where they do not:

- the answer written with the input (when there is one) is the first vote; the teacher then
  answers the input cold, first at temperature 0 (its best guess), then, while the votes do not
  settle, at a sampling temperature (a temperature-0 repeat would only repeat itself);
- an answer settles it once it holds a clear majority: at least two votes and more than half of
  them (two that agree at once; after a disagreement, two of three, three of five);
- `max_votes` votes without one leave the example unsettled: it is rejected and counted, never
  kept on a coin flip.

Measured against the scripted teacher above (bench/noisy_votes.py, 200 examples): fixed votes
90.5% right for 2.21 answers an example; adaptive votes 96-97% right for under 2.

Answers are compared as `same_answer` says (case, spacing and trailing punctuation folded).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable

MIN_AGREEING = 2  # one vote alone never settles an answer


def answer_key(text: str | None) -> str | None:
    """How answers are compared: case, spacing and a trailing full stop folded; None stays None."""
    if text is None:
        return None
    key = " ".join(text.split()).casefold().rstrip(".")
    return key or None


def settled(votes: list[str | None], max_votes: int) -> tuple[str | None, bool]:
    """(the answer the votes settle on, whether they are done).

    An answer with a clear majority (at least MIN_AGREEING votes, and more than half of all)
    settles it; `max_votes` votes without one leave it unsettled (None, True). None votes (no
    usable answer) count towards `max_votes` but for no answer.
    """
    keys = [answer_key(v) for v in votes]
    counts = Counter(k for k in keys if k is not None)
    if counts:
        best, count = counts.most_common(1)[0]
        if count >= MIN_AGREEING and 2 * count > len(votes):
            return next(v for v, k in zip(votes, keys, strict=True) if k == best), True
    return None, len(votes) >= max_votes


async def settle(
    ask: Callable[[int], Awaitable[str | None]],
    written: str | None,
    max_votes: int,
    asked: tuple[str | None, ...] = (),
) -> tuple[str | None, list[str | None]]:
    """(the settled answer or None, the votes): `written` first (when given), the cold answers
    already `asked`, then `ask(k)` for the k-th cold answer (k = 0: the temperature-0 one) until
    `settled` says the votes are done."""
    votes: list[str | None] = ([written] if written is not None else []) + list(asked)
    asked = len(asked)
    if asked:
        answer, done = settled(votes, max_votes)
        if done:
            return answer, votes
    while True:
        votes.append(await ask(asked))
        asked += 1
        answer, done = settled(votes, max_votes)
        if done:
            return answer, votes
