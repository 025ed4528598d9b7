"""Stage, generate: the teacher LLM writes new training examples for the spec.

The paper's strategies (Prompt2Model, section 3.2), each a setting in `GenerationConfig`, and
what a small local teacher needs on top of them to write varied data (left alone, a 1.5B model
writes the same few surface forms over and over):
- several examples per request, as JSON (a schema constrains the reply where the server can);
- diversity: each prompt shows a few of the user's demonstrations (always the same, so the
  server's prompt cache holds them) and a random sample of examples already written ("write
  different ones");
- a variety plan: the teacher first lists ways in which inputs of the task vary; each request
  asks for two of them at random;
- a distribution check: when one surface form of input (its shape: "July 5, 2049" and
  "March 21, 1980" are both "A 0, 0") holds too large a share of the examples, the next
  requests are told to write other forms;
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
import json
import random
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from p2m.tasks.core.config import GenerationConfig
from p2m.tasks.core.dedup import SeenInputs, normalise
from p2m.tasks.core.jsonreply import extract_json_object, iter_json_objects
from p2m.tasks.core.spec import PromptSpec
from p2m.tasks.generation.labels import examples_from_inputs, generate_labelled_examples
from p2m.tasks.generation.report import GenerationReport
from p2m.tasks.generation.rounds import QuickStudent, generate_label_rounds
from p2m.tasks.generation.votes import answer_key, settle
from p2m.tasks.storage.embedded import resolve_model_path
from p2m.tasks.teacher.prompts import answer_messages, chat, clean_answer, examples_schema, json_lines, json_schema

MAX_FIELD_CHARS = 2000


@dataclass
class BatchResult:
    """What one batch brought: candidate examples and why the rest were rejected."""

    candidates: list[dict] = field(default_factory=list)
    rejected: Counter = field(default_factory=Counter)
    duplicates: int = 0  # inputs already accepted or demonstrated (caught before paying for votes)
    agreements: list[float] = field(default_factory=list)  # per voted example: votes matching the majority
    votes: list[int] = field(default_factory=list)  # per voted example: the teacher's answers it took


def annealed_temperature(filled: int, target: int, cfg: GenerationConfig) -> float:
    """Low temperature while the set is empty (safe, on-task), rising to high as it fills (diverse)."""
    frac = min(1.0, filled / target) if target else 1.0
    return round(cfg.temperature_start + (cfg.temperature_end - cfg.temperature_start) * frac, 3)


def prompt_shots(spec: PromptSpec, cfg: GenerationConfig) -> list[dict]:
    """The user's first demonstrations, always the same ones in the same order: every generation
    request then starts with the same tokens, which the teacher's server computes once and keeps
    (its prompt cache); the examples already written, which differ, come after them."""
    return [d.model_dump() for d in spec.demonstrations[: cfg.demos_per_prompt]]


def surface_form(text: str) -> str:
    """The shape of a text: words as A (capitalised) or a, digit runs as 0, punctuation kept.

    "July 5, 2049" and "March 21, 1980" are both "A 0, 0"; "2049-07-05" is "0-0-0".
    """
    shape = re.sub(r"[^\W\d_]+", lambda m: "A" if m.group()[0].isupper() else "a", text.strip())
    return re.sub(r"\d+", "0", re.sub(r"\s+", " ", shape))[:40]


def dominant_form(accepted: list[dict], share: float, minimum: int = 10) -> str | None:
    """An input among `accepted` whose surface form holds more than `share` of them, if one does."""
    if len(accepted) < minimum:
        return None
    counts = Counter(surface_form(e["input"]) for e in accepted)
    form, count = counts.most_common(1)[0]
    return (
        next(e["input"] for e in accepted if surface_form(e["input"]) == form)
        if count > share * len(accepted)
        else None
    )


def variety_hint(aspects: list[str], accepted: list[dict], cfg: GenerationConfig, rng: random.Random) -> str:
    """What one request is asked to vary: two aspects of the plan, and any surface form to move away from."""
    hints = []
    if aspects:
        hints.append(f"Let them differ from each other in: {'; '.join(rng.sample(aspects, min(2, len(aspects))))}.")
    crowded = dominant_form(accepted, cfg.max_form_share)
    if crowded is not None:
        hints.append(
            f"Many inputs so far look like {json.dumps(crowded, ensure_ascii=False)}: write inputs of other forms."
        )
    return "".join(" " + h for h in hints)


def example_prompt(
    spec: PromptSpec, cfg: GenerationConfig, accepted: list[dict], aspects: list[str], rng: random.Random
) -> list[dict]:
    """Chat messages asking for `cfg.examples_per_request` new examples as JSON."""
    written = rng.sample(accepted, min(cfg.generated_per_prompt, len(accepted)))
    return chat(
        "generate",
        instruction=spec.instruction,
        examples=json_lines(prompt_shots(spec, cfg)),
        written=json_lines(written),
        count=cfg.examples_per_request,
        variety=variety_hint(aspects, accepted, cfg, rng),
    )


def answer_prompt(spec: PromptSpec, text: str, max_demos: int) -> list[dict]:
    """Chat messages asking for the output of one input, few-shot with (at most `max_demos` of) the user's demos.

    Used for self-consistency votes here and for the teacher baseline in evaluation.
    """
    return answer_messages(spec.instruction, [d.model_dump() for d in spec.demonstrations[:max_demos]], text)


def aspects_schema(count: int) -> dict:
    return json_schema(
        "aspects",
        {"aspects": {"type": "array", "items": {"type": "string", "maxLength": 100}, "minItems": 2, "maxItems": count}},
    )


async def plan_aspects(llm, spec: PromptSpec, cfg: GenerationConfig) -> list[str]:
    """The ways inputs of the task can vary, in the teacher's words ([] when it says nothing usable)."""
    if not cfg.variety_aspects:
        return []
    replies = await llm.acomplete(
        chat(
            "aspects",
            instruction=spec.instruction,
            examples=json_lines(prompt_shots(spec, cfg)),
            count=cfg.variety_aspects,
        ),
        temperature=0.7,
        max_tokens=40 * cfg.variety_aspects + 40,
        salt=f"aspects:{cfg.seed}",
        purpose="aspects",
        response_format=aspects_schema(cfg.variety_aspects),
    )
    found = (extract_json_object(replies[0]) or {}).get("aspects") if replies else None
    aspects = (
        [a.strip() for a in found if isinstance(a, str) and 0 < len(a.strip()) <= 100]
        if isinstance(found, list)
        else []
    )
    return list(dict.fromkeys(aspects))[: cfg.variety_aspects]


def parse_example(obj) -> tuple[dict | None, str]:
    """(example, "") from a JSON object with "input" and "output", else (None, why not)."""
    if not isinstance(obj, dict):
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


def parse_examples(reply: str) -> tuple[list[dict], Counter]:
    """The examples in a reply and the reasons for every item rejected.

    Reads {"examples": [...]}, a bare {"input", "output"} object, and the complete items of a
    reply that was cut off mid-array.
    """
    rejected: Counter = Counter()
    objects = list(iter_json_objects(reply))
    if not objects:
        return [], Counter(not_json=1)
    items = (
        objects[0]["examples"]
        if isinstance(objects[0].get("examples"), list)
        else [o for o in objects if "input" in o or "output" in o]
    )
    examples = []
    for item in items:
        example, reason = parse_example(item)
        if example is None:
            rejected[reason] += 1
        else:
            examples.append(example)
    if not items:
        rejected["no_examples"] += 1
    return examples, rejected


def majority_vote(outputs: list[str]) -> str:
    """The most frequent non-empty output; ties go to the shortest (the paper's rule)."""
    counts = Counter(o for o in outputs if o)
    if not counts:
        return ""
    return min(counts, key=lambda o: (-counts[o], len(o), o))


async def generate_batch(
    llm,
    spec: PromptSpec,
    cfg: GenerationConfig,
    accepted: list[dict],
    aspects: list[str],
    batch_index: int,
    temperature: float,
    max_requests: int,
) -> BatchResult:
    """One batch: `cfg.batch_size` requests for `cfg.examples_per_request` new examples each, sent
    concurrently, then the votes.

    `llm` is a `p2m.tasks.teacher.client.LLMClient`; the batch sends at most `max_requests` requests (examples
    that cannot get their votes within it are dropped, not kept unvoted). The batch's randomness
    comes from (seed, batch_index), so a replayed batch sends exactly the requests it sent
    before (and finds them in the cache).
    """
    rng = random.Random(f"{cfg.seed}:{batch_index}")
    prompts = [example_prompt(spec, cfg, accepted, aspects, rng) for _ in range(min(cfg.batch_size, max_requests))]
    schema = examples_schema(cfg.examples_per_request)
    replies = await asyncio.gather(
        *[
            llm.acomplete(
                p,
                temperature=temperature,
                max_tokens=cfg.max_tokens * cfg.examples_per_request + 32,
                salt=f"gen:{cfg.seed}:{batch_index}:{i}",
                purpose="generate",
                response_format=schema,
            )
            for i, p in enumerate(prompts)
        ]
    )
    result = BatchResult()
    known = {normalise(e["input"]) for e in accepted} | {normalise(d.input) for d in spec.demonstrations}
    fresh: dict[str, dict] = {}
    for texts in replies:
        examples, rejected = parse_examples(texts[0] if texts else "")
        result.rejected.update(rejected)
        for example in examples:
            if normalise(example["input"]) in known:
                result.duplicates += 1
            elif normalise(example["input"]) in fresh:
                result.rejected["duplicate_in_batch"] += 1
            else:
                fresh[normalise(example["input"])] = example
    examples = list(fresh.values())
    adaptive = adaptive_votes(spec, cfg)
    if cfg.votes > 1:
        # The request cap is exact: an example is voted on only if its worst case fits.
        room = (max_requests - len(prompts)) // (cfg.max_votes - 1 if adaptive else 1)
        if len(examples) > room:
            result.rejected["no_budget_for_votes"] += len(examples) - room
            examples = examples[:room]
    if adaptive and examples:
        settled = await asyncio.gather(
            *[settle(answer_asker(llm, spec, cfg, e["input"]), e["output"], cfg.max_votes) for e in examples]
        )
        kept = []
        for e, (answer, votes) in zip(examples, settled, strict=True):
            result.votes.append(len(votes) - 1)  # the written answer came with the example
            if answer is None:
                result.rejected["unsettled_votes"] += 1
                continue
            result.agreements.append(sum(answer_key(v) == answer_key(answer) for v in votes) / len(votes))
            kept.append(e | {"output": answer})
        examples = kept
    elif cfg.votes > 1 and examples:
        votes = await asyncio.gather(
            *[
                llm.acomplete(
                    answer_prompt(spec, e["input"], cfg.answer_demos),
                    temperature=cfg.vote_temperature,
                    max_tokens=cfg.max_tokens,
                    n=cfg.votes - 1,
                    salt=f"vote:{cfg.seed}",
                    purpose="vote",
                )
                for e in examples
            ]
        )
        for e, texts in zip(examples, votes, strict=True):
            outputs = [e["output"]] + [clean_answer(t) for t in texts]
            e["output"] = majority_vote(outputs)
            result.agreements.append(outputs.count(e["output"]) / len(outputs) if e["output"] else 0.0)
            result.votes.append(cfg.votes - 1)
    result.candidates = examples
    return result


BatchRunner = Callable[..., Awaitable[BatchResult]]

SHORT_ANSWER_CHARS = 40  # answers this short can agree word for word; longer ones are written freely


def adaptive_votes(spec: PromptSpec, cfg: GenerationConfig) -> bool:
    """Whether votes stop when answers agree (`p2m.tasks.generation.votes`): asked for, and the
    task's answers are short (every demonstration's output at most SHORT_ANSWER_CHARS), so two
    right answers can be the same text. Free-text answers keep the fixed vote (the majority of
    `cfg.votes`, ties to the shortest: the paper's rule)."""
    return (
        cfg.adaptive_votes and cfg.votes > 1 and all(len(d.output) <= SHORT_ANSWER_CHARS for d in spec.demonstrations)
    )


def answer_asker(llm, spec: PromptSpec, cfg: GenerationConfig, text: str):
    """ask(k) for `settle`: the teacher's k-th answer to `text` alone, few-shot (k = 0 at
    temperature 0, later ones at `cfg.vote_temperature`, each a request of its own)."""
    messages = answer_prompt(spec, text, cfg.answer_demos)

    async def ask(k: int) -> str | None:
        texts = await llm.acomplete(
            messages,
            temperature=0.0 if k == 0 else cfg.vote_temperature,
            max_tokens=cfg.max_tokens,
            salt=f"vote:{cfg.seed}:{k}" if k else "",
            purpose="vote",
        )
        return (clean_answer(texts[0]) or None) if texts else None

    return ask


async def make_examples(
    llm,
    spec: PromptSpec,
    cfg: GenerationConfig,
    run_batch: BatchRunner = None,
    on_progress: Callable[[int, dict], None] | None = None,
    report: GenerationReport | None = None,
    inputs: list[str] = (),
    quick_student: QuickStudent | None = None,
) -> GenerationReport:
    """The stage's work for any kind of task: labelled data for classification
    (`p2m.tasks.generation.labels`; in rounds led by `quick_student` when `cfg.rounds` > 1 and one
    is given, `p2m.tasks.generation.rounds`), written examples otherwise; the user's `inputs` labelled first."""
    report = report if report is not None else GenerationReport()
    if spec.kind == "classification":
        if cfg.rounds > 1 and quick_student is not None:
            return await generate_label_rounds(llm, spec, cfg, report, quick_student, on_progress, inputs)
        return await generate_labelled_examples(llm, spec, cfg, report, on_progress, inputs)
    if inputs and not report.examples:
        report.examples.extend(await answer_user_inputs(llm, spec, cfg, list(inputs), report))
    report = await generate_examples(llm, spec, cfg, run_batch or generate_batch, on_progress, report)
    if cfg.rounds > 1:  # said, not silently ignored
        report.stop_reason += f" (one pass: rounds are for classification tasks, this one is {spec.kind})"
    return report


async def answer_user_inputs(llm, spec: PromptSpec, cfg: GenerationConfig, inputs: list[str], report) -> list[dict]:
    """The user's inputs with the teacher's answers, as examples (source your_inputs): by adaptive
    votes where answers are short, else the majority of `cfg.votes` answers (the first at
    temperature 0) when more than half agree; the rest are counted as unsettled."""
    if adaptive_votes(spec, cfg):
        return await examples_from_inputs(
            inputs, spec, cfg, report, lambda t: settle(answer_asker(llm, spec, cfg, t), None, cfg.max_votes)
        )

    async def majority(text: str) -> tuple[str | None, list[str]]:
        messages = answer_prompt(spec, text, cfg.answer_demos)
        first = await llm.acomplete(messages, temperature=0, max_tokens=cfg.max_tokens, purpose="answer_input")
        rest = []
        if cfg.votes > 1:
            rest = await llm.acomplete(
                messages,
                temperature=cfg.vote_temperature,
                max_tokens=cfg.max_tokens,
                n=cfg.votes - 1,
                salt=f"vote:{cfg.seed}",
                purpose="vote",
            )
        outputs = [clean_answer(t) for t in [*first[:1], *rest]]
        best = majority_vote(outputs)
        return (best if best and outputs.count(best) * 2 > len(outputs) else None), outputs

    return await examples_from_inputs(inputs, spec, cfg, report, majority)


async def generate_examples(
    llm,
    spec: PromptSpec,
    cfg: GenerationConfig,
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
    max_calls = cfg.max_api_calls or max(20 * target, 50)
    report = report if report is not None else GenerationReport()
    report.request_cap, report.cost_budget_usd = max_calls, cfg.max_cost_usd
    if target and not report.aspects:
        report.aspects = await plan_aspects(llm, spec, cfg)
    accepted = report.examples
    # Demonstrations count as seen: the teacher copying them back is not a new example.
    seen = SeenInputs(cfg.near_duplicate_threshold, [d.input for d in spec.demonstrations])
    stale = 0
    started, seconds_before = time.monotonic(), report.seconds
    while not report.stop_reason:
        if len(accepted) >= target:
            report.stop_reason = f"reached the {target} examples asked for"
        elif llm.meter.requests >= max_calls:
            report.stop_reason = f"reached the cap of {max_calls} API requests (--max-api-calls)"
        elif cfg.max_cost_usd is not None and llm.meter.cost_usd >= cfg.max_cost_usd:
            report.stop_reason = f"reached the cost budget of ${cfg.max_cost_usd:.2f} (P2M_GENERATION__MAX_COST_USD)"
        elif stale >= cfg.max_stale_batches:
            report.stop_reason = (
                f"{stale} batches in a row brought no new distinct example; the teacher seems unable to "
                "write more (a stronger teacher, a clearer instruction or more demonstrations would help)"
            )
        if report.stop_reason:
            break
        temperature = annealed_temperature(len(accepted), target, cfg)
        result = await run_batch(
            llm, spec, cfg, accepted, report.aspects, report.batches, temperature, max_calls - llm.meter.requests
        )
        report.batches += 1
        report.rejected.update(result.rejected)
        report.duplicates_removed += result.duplicates
        report.agreements.extend(result.agreements)
        report.votes_per_example.extend(result.votes)
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
        report.usage = llm.usage()
        report.seconds = round(seconds_before + time.monotonic() - started, 1)
        if on_progress:
            on_progress(len(accepted), report.usage)
    report.usage = llm.usage()
    return report


def quick_classifier_student(spec: PromptSpec, cfg: GenerationConfig, home: Path) -> QuickStudent:
    """The quick student of generation in rounds: `spec`'s label set on `cfg.round_student` (the
    embedded all-MiniLM-L6-v2 by default), trained for seconds and thrown away."""
    from p2m.tasks.student.classifier import quick_classifier  # lazy: torch loads only when rounds are asked for

    base = resolve_model_path(cfg.round_student, home)
    return lambda train, texts: quick_classifier(base, spec.labels, train, texts)
