"""What generation reports in generation.json, filled in as it goes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class GenerationReport:
    """How generation went, filled in as it goes: a run that fails midway still says how far it got."""

    examples: list[dict] = field(default_factory=list)
    stop_reason: str = ""
    batches: int = 0
    rejected: Counter = field(default_factory=Counter)
    duplicates_removed: int = 0
    usage: dict = field(default_factory=dict)
    request_cap: int = 0
    cost_budget_usd: float | None = None
    aspects: list[str] = field(default_factory=list)  # the variety plan
    agreements: list[float] = field(default_factory=list)
    seconds: float = 0.0  # generating in this process (a resumed run counts from its restart)
    label_definitions: dict = field(default_factory=dict)  # classification: the label set, defined
    per_label: dict = field(default_factory=dict)  # classification: inputs written, accepted, acceptance
    votes_per_example: list[int] = field(default_factory=list)  # labelling requests each example took
    rounds: list[dict] = field(default_factory=list)  # generation in rounds: each round's examples, tokens, score

    def as_dict(self) -> dict:
        """The report for generation.json: counts, rejects by reason, and the rates below.

        vote_agreement: the mean share of an example's outputs (written one + votes) that matched
        the majority; low means the teacher is unsure of its own answers. teacher_tokens_per_s:
        completion tokens the endpoint wrote (not the cache) per second of generation.
        """
        minutes = self.seconds / 60
        tokens, sent = self.usage.get("completion_tokens", 0), self.usage.get("sent", 0)
        hidden = ("examples", "agreements", "votes_per_example")
        return {k: v for k, v in self.__dict__.items() if k not in hidden} | {
            "accepted": len(self.examples),
            "sources": dict(Counter(e.get("source", "generated") for e in self.examples)),
            "votes_per_example": round(sum(self.votes_per_example) / len(self.votes_per_example), 2)
            if self.votes_per_example
            else None,
            "rejected": dict(self.rejected),
            "vote_agreement": round(sum(self.agreements) / len(self.agreements), 3) if self.agreements else None,
            # Only when the teacher was asked: replaying the request cache says nothing about speed.
            "examples_per_minute": round(len(self.examples) / minutes, 1) if minutes and sent else None,
            "teacher_tokens_per_s": round(tokens / self.seconds, 1) if self.seconds and tokens else None,
            "tokens_per_example": self.tokens_per_example(),
        }

    def tokens_per_example(self) -> dict | None:
        """Prompt, cached prompt and completion tokens the teacher handled per accepted example
        (what requests cost: the prompt cache makes the cached part nearly free on a local server)."""
        if not self.examples or not self.usage.get("prompt_tokens"):
            return None
        n = len(self.examples)
        return {
            k: round(self.usage.get(k, 0) / n, 1)
            for k in ("prompt_tokens", "cached_prompt_tokens", "completion_tokens")
        }
