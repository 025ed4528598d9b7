"""Training data for a classification task: every label covered, every label checked.

The method (SuperGen and ZeroGen's label-conditioned generation, with distilabel's label
definitions and a round-trip check; see ../shared/LABEL_TASKS.md):
- one definition per label, written once by the teacher from the instruction and the
  demonstrations, and sent with every labelling request (a fixed prefix the server caches);
- inputs written for a named label ("write N inputs whose label is L"), a third of them hard cases
  near another label, in the language of the instruction; empty or cut-off inputs are rejected
  and counted;
- each input is then labelled cold by the teacher (a fresh request that does not show the label
  it was written for), its answer constrained to the label set (a JSON-schema enum); the input
  is kept only when the votes settle on the label it was written for (`settle_label`);
- quotas: every label gets its share of the examples asked for (balanced), less what the user's
  own inputs already give it; generation per label stops at its quota or after
  `ATTEMPTS_PER_QUOTA` times its quota in inputs written, and the report says which fell short.
- the user's unlabelled inputs (--inputs) are labelled first with the same votes; the ones the
  votes cannot settle are left out and counted; samples of them show the teacher what real
  inputs look like.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
from collections import Counter

from p2m.tasks.core.config import GenerationConfig
from p2m.tasks.core.dedup import SeenInputs
from p2m.tasks.core.jsonreply import extract_json_object
from p2m.tasks.core.kinds import fold
from p2m.tasks.core.spec import GENERATED, YOUR_INPUTS, PromptSpec
from p2m.tasks.generation.report import GenerationReport
from p2m.tasks.generation.votes import answer_key, settle
from p2m.tasks.teacher.prompts import chat, json_schema, label_probabilities, label_schema, parse_label

CONFIDENT = 0.9  # a label answer this probable needs no second vote (LABEL_TASKS.md: 0.99 clear, 0.77 ambiguous)
ATTEMPTS_PER_QUOTA = 3  # inputs written for a label, at most, per example it needs
MAX_INPUT_CHARS = 1500

# A sentence that stops on one of these words was cut off ("Add me to the playlist of ").
_HANGING = re.compile(
    r"\b(?:a|an|the|of|to|for|and|or|with|in|on|at|from|by|my|your|his|her|their|our|is|are|was|"
    r"about|into|that|this|these|those|de|la|el|le|les|des|und|der|die|das)\s*$",
    re.IGNORECASE,
)


def definitions_schema(labels: list[str]) -> dict:
    """A `response_format` asking for an object with one short definition per label."""
    return json_schema("label_definitions", {label: {"type": "string", "maxLength": 240} for label in labels})


def inputs_schema(count: int) -> dict:
    return json_schema(
        "inputs",
        {
            "inputs": {
                "type": "array",
                "items": {"type": "string", "maxLength": MAX_INPUT_CHARS},
                "minItems": count,
                "maxItems": count,
            }
        },
    )


def definitions_text(definitions: dict[str, str]) -> str:
    return "\n".join(f"- {label}: {text}" for label, text in definitions.items())


def demos_text(texts: list[str]) -> str:
    return "\n".join(json.dumps(t, ensure_ascii=False) for t in texts) or "(none)"


async def define_labels(llm, spec: PromptSpec) -> dict[str, str]:
    """{label: one-sentence definition} for every label of `spec`; a label the teacher leaves out
    is defined by its name."""
    examples = "\n".join(
        json.dumps({"input": d.input, "label": d.output}, ensure_ascii=False) for d in spec.demonstrations[:8]
    )
    replies = await llm.acomplete(
        chat(
            "define_labels", instruction=spec.instruction, examples=examples or "(none)", labels="\n".join(spec.labels)
        ),
        temperature=0,
        max_tokens=60 * len(spec.labels) + 40,
        purpose="define_labels",
        response_format=definitions_schema(spec.labels),
    )
    found = extract_json_object(replies[0]) if replies else None
    found = found if isinstance(found, dict) else {}
    definitions = {}
    for label in spec.labels:
        text = found.get(label)
        definitions[label] = " ".join(text.split())[:240] if isinstance(text, str) and text.strip() else label
    return definitions


def labelling_messages(spec: PromptSpec, definitions: dict[str, str], text: str, max_demos: int) -> list[dict]:
    """The task asked cold: the instruction and the label definitions as the system message (the
    same for every input, so the server's prompt cache holds it), demonstrations as turns, then the input."""
    return chat(
        "label",
        [(d.input, d.output) for d in spec.demonstrations[:max_demos]],
        instruction=spec.instruction,
        definitions=definitions_text(definitions),
        input=text,
    )


async def settle_label(
    llm, spec: PromptSpec, definitions: dict[str, str], text: str, cfg: GenerationConfig, written: str | None = None
) -> tuple[str | None, list[str | None]]:
    """(label or None, the votes) for `text`, asking the teacher only as often as the votes need.

    `written`: the label the input was written for, which counts as the first vote. Then the
    teacher answers cold at temperature 0; where the endpoint gives log-probabilities and the
    answer's is at least CONFIDENT, that answer decides alone (accepted for the user's inputs,
    rejected when it is another label than the one written for). Otherwise the votes go on as
    `p2m.tasks.generation.votes.settle` asks, at `cfg.vote_temperature`, up to `cfg.max_votes`.
    """
    messages = labelling_messages(spec, definitions, text, cfg.answer_demos)
    schema = label_schema(spec.labels)
    # The first, temperature-0 answer with the label's probability where the endpoint gives one: a
    # confident answer settles the user's input alone, or rejects an input written for another label.
    texts, logprobs = await llm.acomplete_scored(
        messages,
        top_logprobs=min(20, len(spec.labels) + 3),
        max_tokens=24,
        purpose="label",
        response_format=schema,
    )
    first = parse_label(texts[0], spec.labels) if texts else None
    p = (label_probabilities(logprobs, spec.labels) or {}).get(first) if first else None
    if p is not None and p >= CONFIDENT:
        if written is None:
            return first, [first]
        if first != written:
            return None, [written, first]

    async def ask(k: int) -> str | None:
        replies = await llm.acomplete(
            messages,
            temperature=cfg.vote_temperature,  # k >= 1: a temperature-0 repeat would repeat the first answer
            max_tokens=24,
            salt=f"label:{cfg.seed}:{k}",
            purpose="label",
            response_format=schema,
        )
        return parse_label(replies[0], spec.labels) if replies else None

    return await settle(ask, written, cfg.max_votes, asked=(first,))


def looks_cut_off(text: str) -> bool:
    """Whether an input stops mid-sentence: on a word that needs a continuation ("of", "the"), on
    a comma or colon, or with a quote or bracket left open."""
    text = text.rstrip()
    if not text or _HANGING.search(text) or text[-1] in ",:;-–(":
        return True
    return text.count('"') % 2 == 1 or text.count("(") > text.count(")") or text.count("[") > text.count("]")


def check_input(text) -> tuple[str | None, str]:
    """(the input, "") when it can be used, else (None, why not): empty, too long or cut off."""
    if not isinstance(text, str) or not text.strip():
        return None, "empty_input"
    text = text.strip()
    if len(text) > MAX_INPUT_CHARS:
        return None, "too_long"
    if looks_cut_off(text):
        return None, "cut_off_input"
    return text, ""


STYLE_DEMOS = 6  # demonstration inputs shown as what the task's inputs look like


def real_inputs_text(spec: PromptSpec, real: list[str]) -> str:
    """What real inputs of the task look like, for a request that writes inputs: the user's own
    (`real`), else the demonstrations' inputs of every label. Left to itself a small teacher writes
    short, generic, on-the-nose inputs (a review of a café for a task about teachers); real ones
    differ in topic, form and length, and a student trained on the generic ones fails on them."""
    if real:
        return f"\nInputs real users sent (write inputs like these in form and length):\n{demos_text(real)}\n"
    demos = [d.input for d in spec.demonstrations[:STYLE_DEMOS]]
    if len(demos) < 2:
        return ""
    return (
        "\nThe task's example inputs, of every label (write inputs like these in topic, form and length, "
        f"not about anything else):\n{demos_text(demos)}\n"
    )


def input_messages(
    spec: PromptSpec,
    definitions: dict[str, str],
    label: str,
    written: list[str],
    real: list[str],
    count: int,
    near: str | None,
    missed: list[str] = (),
) -> list[dict]:
    """Chat messages asking for `count` new inputs of `label` (hard cases near the label `near`;
    `missed`: inputs of `label` a student finds hardest, shown as what to cover)."""
    return chat(
        "label_inputs",
        instruction=spec.instruction,
        definitions=definitions_text(definitions),
        label=label,
        definition=definitions[label],
        examples=demos_text([d.input for d in spec.demonstrations if fold(d.output) == fold(label)]),
        written=demos_text(written),
        real=real_inputs_text(spec, real),
        missed=f"\nA small model trained on the examples so far finds these {label} inputs hardest (write inputs "
        f"that teach it why they are {label}):\n{demos_text(list(missed))}\n"
        if missed
        else "",
        count=count,
        near=f" Make them hard cases that could be mistaken for {near}, but are {label}." if near else "",
    )


def parse_inputs(reply: str) -> tuple[list[str], Counter]:
    """The usable inputs in a reply and the reasons for every one rejected."""
    found = extract_json_object(reply)
    items = found.get("inputs") if isinstance(found, dict) else None
    if not isinstance(items, list):
        return [], Counter(not_json=1)
    kept, rejected = [], Counter()
    for item in items:
        text, why = check_input(item)
        if text is None:
            rejected[why] += 1
        else:
            kept.append(text)
    return kept, rejected


def quotas(labels: list[str], total: int, have: Counter) -> dict[str, int]:
    """Examples still wanted per label: an equal share of `total` plus what `have` (the user's
    inputs, per label) gives, less what `have` already holds."""
    share = math.ceil((total + sum(have.values())) / len(labels)) if labels else 0
    return {label: max(0, share - have[label]) for label in labels}


def distinct_inputs(inputs: list[str], spec: PromptSpec, threshold: float) -> list[str]:
    """`inputs` without copies of each other or of a demonstration (exact or near, `SeenInputs`)."""
    seen = SeenInputs(threshold, [d.input for d in spec.demonstrations])
    unique = []
    for text in inputs:
        if not seen.is_duplicate(text):
            seen.add(text)
            unique.append(text)
    return unique


async def examples_from_inputs(
    inputs: list[str], spec: PromptSpec, cfg: GenerationConfig, report, settle_one
) -> list[dict]:
    """The user's `inputs` (copies dropped) whose answers settle, as examples (source your_inputs);
    `settle_one(text)` returns (answer or None, votes). The rest are counted in
    `report.rejected["unsettled_input"]`; votes and agreement go into `report`."""
    unique = distinct_inputs(inputs, spec, cfg.near_duplicate_threshold)
    report.duplicates_removed += len(inputs) - len(unique)
    examples = []
    step = cfg.batch_size * 4  # a few batches' worth in flight: the limits pace them, progress stays visible
    for start in range(0, len(unique), step):
        chunk = unique[start : start + step]
        for text, (answer, votes) in zip(chunk, await asyncio.gather(*[settle_one(t) for t in chunk]), strict=True):
            report.votes_per_example.append(len(votes))
            if answer is None:
                report.rejected["unsettled_input"] += 1
                continue
            report.agreements.append(sum(answer_key(v) == answer_key(answer) for v in votes) / len(votes))
            examples.append({"input": text, "output": answer, "source": YOUR_INPUTS})
    return examples


async def label_user_inputs(llm, spec: PromptSpec, cfg: GenerationConfig, report: GenerationReport, inputs) -> None:
    """Define the labels once (`report.label_definitions`), then label the user's `inputs` into
    `report.examples` (skipped when a resumed report already holds examples)."""
    if not report.label_definitions:
        report.label_definitions = await define_labels(llm, spec)
    if inputs and not report.examples:
        report.examples.extend(
            await examples_from_inputs(
                list(inputs), spec, cfg, report, lambda t: settle_label(llm, spec, report.label_definitions, t, cfg)
            )
        )


def request_cap(cfg: GenerationConfig, inputs) -> int:
    """The most requests generation sends: the setting, else 20 per example asked for or input given, at least 50."""
    return cfg.max_api_calls or max(20 * max(cfg.num_examples, len(inputs)), 50)


async def generate_labelled_examples(
    llm, spec: PromptSpec, cfg: GenerationConfig, report: GenerationReport, on_progress=None, inputs: list[str] = ()
) -> GenerationReport:
    """Fill `report.examples` with labelled examples: the user's `inputs` the teacher labels, then
    up to `cfg.num_examples` generated ones spread evenly over the labels, in one pass; always
    ends, and says why. (`p2m.tasks.generation.rounds` generates the same in rounds instead.)"""
    report.request_cap, report.cost_budget_usd = request_cap(cfg, inputs), cfg.max_cost_usd
    await label_user_inputs(llm, spec, cfg, report, inputs)
    report.stop_reason, _ = await fill_label_quotas(
        llm, spec, cfg, report, quotas(spec.labels, cfg.num_examples, user_label_counts(report)), on_progress
    )
    return report


def user_label_counts(report: GenerationReport) -> Counter:
    """Examples per label that came from the user's inputs."""
    return Counter(e["output"] for e in report.examples if e["source"] == YOUR_INPUTS)


STAT_KEYS = ("written", "accepted", "answered_otherwise", "unsettled")


async def fill_label_quotas(
    llm,
    spec: PromptSpec,
    cfg: GenerationConfig,
    report: GenerationReport,
    wanted: dict[str, int],
    on_progress=None,
    focus: dict[str, tuple[list[str], str | None]] | None = None,
    unshown: frozenset[str] = frozenset(),
) -> tuple[str, bool]:
    """Write and label inputs until every label has `wanted[label]` generated examples in
    `report.examples`, or it cannot; returns (why it stopped, whether generation as a whole must
    stop: the request cap, the cost budget, or batches that bring nothing).

    `focus`: per label, (inputs of that label a student finds hardest, the label it most often
    mistakes it for): the inputs are shown to the teacher as what to cover, and the requests ask
    for hard cases near that label. `unshown`: inputs never shown to the teacher (a validation set).
    """
    rng = random.Random(f"{cfg.seed}:labels:{report.batches}")  # a later round's requests differ from the first's
    definitions = report.label_definitions
    from_user = user_label_counts(report)
    shown = [e for e in report.examples if e["input"] not in unshown]
    real_by_label = {
        label: [e["input"] for e in shown if e["output"] == label and e["source"] == YOUR_INPUTS][:3]
        for label in spec.labels
    }
    seen = SeenInputs(cfg.near_duplicate_threshold, [d.input for d in spec.demonstrations])
    for e in report.examples:
        seen.add(e["input"])
    stats = {label: Counter({k: report.per_label.get(label, {}).get(k, 0) for k in STAT_KEYS}) for label in spec.labels}
    focus = focus or {}
    stale = 0
    while True:
        made = Counter(e["output"] for e in report.examples if e["source"] == GENERATED)
        short = {
            label: wanted[label] - made[label]
            for label in spec.labels
            if made[label] < wanted[label] and stats[label]["written"] < ATTEMPTS_PER_QUOTA * max(1, wanted[label])
        }
        if not short:
            missing = {label: wanted[label] - made[label] for label in spec.labels if made[label] < wanted[label]}
            if not missing:
                return f"reached the {sum(wanted.values())} generated examples asked for", False
            return f"labels short of their share after {ATTEMPTS_PER_QUOTA}x as many inputs written: {missing}", False
        if llm.meter.requests >= report.request_cap:
            return f"reached the cap of {report.request_cap} API requests (--max-api-calls)", True
        if cfg.max_cost_usd is not None and llm.meter.cost_usd >= cfg.max_cost_usd:
            return f"reached the cost budget of ${cfg.max_cost_usd:.2f} (P2M_GENERATION__MAX_COST_USD)", True
        if stale >= cfg.max_stale_batches:
            return f"{stale} batches in a row brought no new example the teacher labelled back", True
        # The labels furthest from their share first, one request each, as many as a batch holds.
        order = sorted(short, key=lambda label: -short[label])
        batch = [order[i % len(order)] for i in range(min(cfg.batch_size, max(len(order), 1)))]
        requests = []
        for i, label in enumerate(batch):
            written = [
                e["input"]
                for e in report.examples
                if e["output"] == label and e["source"] == GENERATED and e["input"] not in unshown
            ]
            others = [x for x in spec.labels if x != label]
            missed, mistaken_for = focus.get(label, ([], None))
            if mistaken_for and (report.batches + i) % 2 == 0:  # half the requests at the student's confusion
                near = mistaken_for
            else:
                near = rng.choice(others) if others and (report.batches + i) % 3 == 2 else None
            count = min(cfg.examples_per_request, max(1, short[label]))
            messages = input_messages(
                spec,
                definitions,
                label,
                rng.sample(written, min(4, len(written))),
                real_by_label[label],
                count,
                near,
                missed,
            )
            requests.append(
                llm.acomplete(
                    messages,
                    temperature=cfg.temperature_end,
                    max_tokens=cfg.max_tokens * count + 32,
                    salt=f"inputs:{cfg.seed}:{report.batches}:{i}",
                    purpose="inputs",
                    response_format=inputs_schema(count),
                )
            )
        replies = await asyncio.gather(*requests)
        candidates = []
        for label, texts in zip(batch, replies, strict=True):
            found, rejected = parse_inputs(texts[0] if texts else "")
            report.rejected.update(rejected)
            for text in found:
                stats[label]["written"] += 1
                if seen.is_duplicate(text):
                    report.duplicates_removed += 1
                    continue
                seen.add(text)
                candidates.append((label, text))
        results = await asyncio.gather(
            *[settle_label(llm, spec, definitions, text, cfg, written=label) for label, text in candidates]
        )
        new = 0
        for (label, text), (answer, votes) in zip(candidates, results, strict=True):
            report.votes_per_example.append(len(votes) - 1)  # the written label is not a request
            report.agreements.append(votes.count(answer) / len(votes) if answer else 0.0)
            if answer != label:
                stats[label]["answered_otherwise" if answer else "unsettled"] += 1
                report.rejected["labelled_otherwise" if answer else "unsettled_label"] += 1
                continue
            stats[label]["accepted"] += 1
            report.examples.append({"input": text, "output": label, "source": GENERATED})
            new += 1
        report.batches += 1
        stale = 0 if new else stale + 1
        report.per_label = {
            label: dict(stats[label])
            | {
                "from_your_inputs": from_user[label],
                "acceptance": round(stats[label]["accepted"] / stats[label]["written"], 3)
                if stats[label]["written"]
                else None,
            }
            for label in spec.labels
        }
        report.usage = llm.usage()
        if on_progress:
            on_progress(len(report.examples), report.usage)
