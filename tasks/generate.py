"""Stage, generate: the teacher LLM writes new training examples for the spec.

The paper's strategies (Prompt2Model, section 3.2), each a setting in `GenerationConfig`:
- diversity: each prompt mixes a few of the user's demonstrations with a random sample of
  examples generated earlier;
- temperature annealed from `temperature_start` to `temperature_end` as the set fills;
- self-consistency: for each new input, `votes` outputs in all (the one written with the input
  plus `votes - 1` answers to the input alone); the majority wins, ties go to the shortest;
- exact and near-duplicate inputs removed (rapidfuzz ratio against everything kept so far).

Batches are the unit of work (one Prefect task each when run by a flow). Replies that are not
JSON with the needed fields are rejected and counted, never fatal. Generation always ends, and
says why: enough examples, the request cap, the cost budget, or too many batches in a row that
brought nothing new. Randomness is seeded per batch and replies are cached per request, so a
killed run started again replays its answered requests from disk and reaches the same state.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from rapidfuzz import fuzz, process

from p2m.tasks.config import GenerationConfig, LimitsConfig
from p2m.tasks.jsonreply import extract_json_object
from p2m.tasks.parse import PromptSpec
from p2m.tasks.prompts import format_examples, render

MAX_FIELD_CHARS = 2000
NEAR_DUP_MIN_CHARS = 40
_PUNCT = re.compile(r"[^\w\s]")
_NUMBERS = re.compile(r"\d+")


@dataclass
class BatchResult:
    """What one batch brought: candidate examples and why the rest were rejected."""

    candidates: list[dict] = field(default_factory=list)
    rejected: Counter = field(default_factory=Counter)
    duplicates: int = 0  # inputs already accepted or demonstrated (caught before paying for votes)


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

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "examples"} | {"accepted": len(self.examples), "rejected": dict(self.rejected)}


def annealed_temperature(filled: int, target: int, cfg: GenerationConfig) -> float:
    """Low temperature while the set is empty (safe, on-task), rising to high as it fills (diverse)."""
    frac = min(1.0, filled / target) if target else 1.0
    return round(cfg.temperature_start + (cfg.temperature_end - cfg.temperature_start) * frac, 3)


def sample_shots(spec: PromptSpec, accepted: list[dict], cfg: GenerationConfig, rng: random.Random) -> list[dict]:
    """Few-shot examples for one prompt: some of the user's demos plus some earlier generated ones."""
    demos = [d.model_dump() for d in spec.demonstrations]
    shots = rng.sample(demos, min(cfg.demos_per_prompt, len(demos)))
    shots += rng.sample(accepted, min(cfg.generated_per_prompt, len(accepted)))
    rng.shuffle(shots)
    return shots


def example_prompt(spec: PromptSpec, shots: list[dict]) -> list[dict]:
    """Chat messages asking for one new example as JSON."""
    examples = format_examples(shots) if shots else "(none yet)"
    return [{"role": "user", "content": render("generate_example", instruction=spec.instruction, examples=examples)}]


def answer_prompt(spec: PromptSpec, text: str, max_demos: int) -> list[dict]:
    """Chat messages asking for the output of one input, few-shot with (at most `max_demos` of) the user's demos.

    Used for self-consistency votes here and for the teacher baseline in evaluation.
    """
    demos = [d.model_dump() for d in spec.demonstrations[:max_demos]]
    return [{"role": "user", "content": render("answer_input", instruction=spec.instruction, examples=format_examples(demos), input=text)}]


def parse_example(reply: str) -> tuple[dict | None, str]:
    """(example, "") from a reply holding {"input": ..., "output": ...}, else (None, reason)."""
    obj = extract_json_object(reply)
    if obj is None:
        return None, "not_json"
    inp, out = obj.get("input"), obj.get("output")
    if not isinstance(inp, (str, int, float)) or not isinstance(out, (str, int, float)):
        return None, "missing_fields"
    inp, out = str(inp).strip(), str(out).strip()
    if not inp or not out or inp in {"...", "…"} or out in {"...", "…"}:
        return None, "empty_field"
    if len(inp) > MAX_FIELD_CHARS or len(out) > MAX_FIELD_CHARS:
        return None, "too_long"
    return {"input": inp, "output": out}, ""


def clean_answer(reply: str) -> str:
    """The first line of a free-text answer, without an echoed `Output:` label."""
    text = reply.strip()
    text = re.sub(r"^\s*output\s*[:：]\s*", "", text, flags=re.IGNORECASE)
    return text.split("\n", 1)[0].strip()


def majority_vote(outputs: list[str]) -> str:
    """The most frequent non-empty output; ties go to the shortest (the paper's rule)."""
    counts = Counter(o for o in outputs if o)
    if not counts:
        return ""
    return min(counts, key=lambda o: (-counts[o], len(o), o))


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


async def generate_batch(
    llm, spec: PromptSpec, cfg: GenerationConfig, accepted: list[dict], batch_index: int, temperature: float, max_requests: int
) -> BatchResult:
    """One batch: up to `cfg.batch_size` new examples requested concurrently, then the votes.

    `llm` is a `p2m.tasks.llm.LLMClient`; the batch sends at most `max_requests` requests (examples
    that cannot get their votes within it are dropped, not kept unvoted). The batch's randomness
    comes from (seed, batch_index), so a replayed batch sends exactly the requests it sent
    before (and finds them in the cache).
    """
    rng = random.Random(f"{cfg.seed}:{batch_index}")
    prompts = [example_prompt(spec, sample_shots(spec, accepted, cfg, rng)) for _ in range(min(cfg.batch_size, max_requests))]
    replies = await asyncio.gather(*[
        llm.acomplete(p, temperature=temperature, max_tokens=cfg.max_tokens, salt=f"gen:{cfg.seed}:{batch_index}:{i}", purpose="generate")
        for i, p in enumerate(prompts)
    ])
    result = BatchResult()
    known = {normalise(e["input"]) for e in accepted} | {normalise(d.input) for d in spec.demonstrations}
    fresh: dict[str, dict] = {}
    for texts in replies:
        example, reason = parse_example(texts[0] if texts else "")
        if example is None:
            result.rejected[reason] += 1
        elif normalise(example["input"]) in known:
            result.duplicates += 1
        elif normalise(example["input"]) in fresh:
            result.rejected["duplicate_in_batch"] += 1
        else:
            fresh[normalise(example["input"])] = example
    examples = list(fresh.values())
    if cfg.votes > 1:
        room = max_requests - len(prompts)
        if len(examples) > room:
            result.rejected["no_budget_for_votes"] += len(examples) - room
            examples = examples[:room]
    if cfg.votes > 1 and examples:
        votes = await asyncio.gather(*[
            llm.acomplete(
                answer_prompt(spec, e["input"], cfg.answer_demos), temperature=max(temperature, 0.3), max_tokens=cfg.max_tokens,
                n=cfg.votes - 1, salt=f"vote:{cfg.seed}", purpose="vote",
            )
            for e in examples
        ])
        for e, texts in zip(examples, votes):
            e["output"] = majority_vote([e["output"]] + [clean_answer(t) for t in texts])
    result.candidates = examples
    return result


BatchRunner = Callable[..., Awaitable[BatchResult]]


async def generate_examples(
    llm,
    spec: PromptSpec,
    cfg: GenerationConfig,
    limits: LimitsConfig,
    run_batch: BatchRunner = generate_batch,
    on_progress: Callable[[int, dict], None] | None = None,
    report: GenerationReport | None = None,
) -> GenerationReport:
    """Generate up to `cfg.num_examples` distinct examples; always ends, and says why.

    The request cap is exact; the cost budget is checked between batches (a batch may finish past it).

    `run_batch` runs one batch (the flow passes a Prefect task with the same signature).
    `on_progress(accepted_count, usage)` is called after every batch. `report`, when given, is
    filled in as generation goes, so the caller still has the counts if it fails.
    """
    target = cfg.num_examples
    max_calls = limits.max_api_calls or max(20 * target, 50)
    report = report if report is not None else GenerationReport()
    report.request_cap, report.cost_budget_usd = max_calls, limits.max_cost_usd
    accepted = report.examples
    # Demonstrations count as seen: the teacher copying them back is not a new example.
    seen = SeenInputs(cfg.near_duplicate_threshold, [d.input for d in spec.demonstrations])
    stale = 0
    while not report.stop_reason:
        if len(accepted) >= target:
            report.stop_reason = f"reached the {target} examples asked for"
        elif llm.meter.requests >= max_calls:
            report.stop_reason = f"reached the cap of {max_calls} API requests (--max-api-calls)"
        elif limits.max_cost_usd is not None and llm.meter.cost_usd >= limits.max_cost_usd:
            report.stop_reason = f"reached the cost budget of ${limits.max_cost_usd:.2f} (P2M_LIMITS__MAX_COST_USD)"
        elif stale >= cfg.max_stale_batches:
            report.stop_reason = (
                f"{stale} batches in a row brought no new distinct example; the teacher seems unable to "
                "write more (a stronger teacher, a clearer instruction or more demonstrations would help)"
            )
        if report.stop_reason:
            break
        temperature = annealed_temperature(len(accepted), target, cfg)
        result = await run_batch(llm, spec, cfg, accepted, report.batches, temperature, max_calls - llm.meter.requests)
        report.batches += 1
        report.rejected.update(result.rejected)
        report.duplicates_removed += result.duplicates
        new = 0
        for example in result.candidates:
            if seen.is_duplicate(example["input"]):
                report.duplicates_removed += 1
                continue
            if not example["output"]:
                report.rejected["no_output_after_vote"] += 1
                continue
            seen.add(example["input"])
            accepted.append(example)
            new += 1
            if len(accepted) >= target:
                break
        stale = 0 if new else stale + 1
        report.usage = llm.meter.as_dict()
        if on_progress:
            on_progress(len(accepted), report.usage)
    report.usage = llm.meter.as_dict()
    return report
