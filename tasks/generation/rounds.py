"""Generation in rounds led by the student's errors (classification tasks).

One uniform pass spends the teacher evenly over the labels. In rounds, the first round takes half
of the examples asked for, spread evenly; then a quick student (an encoder classifier trained in
seconds, `p2m.tasks.student.classifier.quick_classifier`, given by the caller) is trained on what
was made and scored on a fixed validation set; the next round's share goes to the labels in
proportion to the student's mistakes on them (none to a label the teacher almost never labels
back: more requests for it buy nothing), and each label's requests show the teacher the
training inputs the student finds hardest (its lowest probability for their label) and ask for
hard cases near the label it most often mistook that label for. (The validation inputs themselves
are never shown: the teacher would write near-copies of them and the score would stop meaning
anything.) Rounds stop when the
validation score stops rising, when the budget is spent, or after `cfg.rounds`, and the report
says which. Each round is a row of `report.rounds`: examples, teacher tokens so far, the score.

The validation set is chosen once, after the first round: a quarter of each label's examples,
taken from the user's own inputs when they give enough (real inputs, labelled by the teacher),
else from the generated ones. It is left out of every quick student's training; the final
student's splits are made later as for one pass.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from collections.abc import Callable

from p2m.tasks.core.config import GenerationConfig
from p2m.tasks.core.spec import GENERATED, YOUR_INPUTS, PromptSpec
from p2m.tasks.generation.labels import fill_label_quotas, label_user_inputs, quotas, request_cap, user_label_counts
from p2m.tasks.generation.report import GenerationReport

# (training rows, texts) -> (label, {label: probability}) per text; trained and thrown away.
QuickStudent = Callable[[list[dict], list[str]], list[tuple[str, dict[str, float]]]]

FIRST_ROUND_SHARE = 0.5  # the first round must be big enough to hold a validation set and cover every label
VALIDATION_SHARE = 0.25
MIN_REAL_VALIDATION = 20  # the user's inputs make the validation set when this many or more were labelled
MISSED_SHOWN = 4  # wrong inputs shown per label in a request
HOPELESS_AFTER, HOPELESS_ACCEPTANCE = 10, 0.1


def round_targets(total: int, rounds: int) -> list[int]:
    """Generated examples wanted by the end of each round: half in the first, the rest evenly."""
    if rounds <= 1:
        return [total]
    first = math.ceil(total * FIRST_ROUND_SHARE)
    rest = total - first
    return [first] + [first + math.ceil(rest * r / (rounds - 1)) for r in range(1, rounds)]


def validation_indices(examples: list[dict], labels: list[str], seed: int) -> set[int]:
    """Indices of `examples` held out to score each round's student: a quarter of each label's
    examples (at least one where a label has two), from the user's inputs when there are enough."""
    rng = random.Random(f"{seed}:rounds-validation")
    real = [i for i, e in enumerate(examples) if e.get("source") == YOUR_INPUTS]
    pool = real if len(real) >= MIN_REAL_VALIDATION else range(len(examples))
    held: set[int] = set()
    for label in labels:
        members = [i for i in pool if examples[i]["output"] == label]
        take = math.ceil(VALIDATION_SHARE * len(members)) if len(members) >= 2 else 0
        held.update(rng.sample(members, take))
    return held


def round_score(truth: list[str], answers: list[tuple[str, dict[str, float]]]) -> dict:
    """Accuracy and the mean probability of the right label (which breaks ties between rounds)."""
    if not truth:
        return {"validation_accuracy": None, "validation_true_probability": None}
    pairs = list(zip(truth, answers, strict=True))
    return {
        "validation_accuracy": round(sum(label == t for t, (label, _) in pairs) / len(pairs), 4),
        "validation_true_probability": round(sum(p.get(t, 0.0) for t, (_, p) in pairs) / len(pairs), 4),
    }


def rising(now: dict, before: dict) -> bool:
    """Whether a round's score beats the one before it: more accurate, or as accurate and surer."""
    key = ("validation_accuracy", "validation_true_probability")
    return tuple(now[k] for k in key) > tuple(before[k] for k in key)


def hopeless(per_label: dict) -> set[str]:
    """Labels the teacher cannot write: under HOPELESS_ACCEPTANCE of at least HOPELESS_AFTER inputs
    written for them were labelled back (asking for more of them spends tokens for nothing)."""
    return {
        label
        for label, stats in per_label.items()
        if stats.get("written", 0) >= HOPELESS_AFTER and (stats.get("acceptance") or 0) < HOPELESS_ACCEPTANCE
    }


def aim_at_errors(
    labels: list[str], truth: list[str], answers, count: int, skip: set[str] = frozenset()
) -> tuple[dict[str, int], dict[str, str]]:
    """(examples for the next round per label, the label each label was most often mistaken for).

    `count` examples shared in proportion to each label's mistakes on the validation set plus one
    (so a label the student gets right still gets a little), the remainder to the labels with
    most; labels in `skip` (`hopeless` ones) get none.
    """
    mistakes = Counter(t for t, (label, _) in zip(truth, answers, strict=True) if label != t)
    confused = Counter((t, label) for t, (label, _) in zip(truth, answers, strict=True) if label != t)
    weights = {label: 0 if label in skip else mistakes[label] + 1 for label in labels}
    if not any(weights.values()):
        return {label: 0 for label in labels}, {}
    total = sum(weights.values())
    share = {label: math.floor(count * w / total) for label, w in weights.items()}
    for label in sorted(labels, key=lambda x: -weights[x])[: count - sum(share.values())]:
        share[label] += 1
    mistaken_for = {}
    for (t, given), _ in confused.most_common():
        mistaken_for.setdefault(t, given)
    return share, mistaken_for


def hardest_inputs(train: list[dict], answers, labels: list[str], per_label: int) -> dict[str, list[str]]:
    """Per label, the `per_label` training inputs the student gives the lowest probability of their label."""
    scored = sorted(zip(train, answers, strict=True), key=lambda pair: pair[1][1].get(pair[0]["output"], 0.0))
    hardest: dict[str, list[str]] = {label: [] for label in labels}
    for row, _ in scored:
        if row["output"] in hardest and len(hardest[row["output"]]) < per_label:
            hardest[row["output"]].append(row["input"])
    return hardest


async def generate_label_rounds(
    llm,
    spec: PromptSpec,
    cfg: GenerationConfig,
    report: GenerationReport,
    quick_student: QuickStudent,
    on_progress=None,
    inputs: list[str] = (),
) -> GenerationReport:
    """`p2m.tasks.generation.labels.generate_labelled_examples` in up to `cfg.rounds` rounds, each
    after the first aimed at the quick student's mistakes; `report.rounds` says how each went."""
    report.request_cap, report.cost_budget_usd = request_cap(cfg, inputs), cfg.max_cost_usd
    await label_user_inputs(llm, spec, cfg, report, inputs)
    targets = round_targets(cfg.num_examples, cfg.rounds)
    wanted = quotas(spec.labels, targets[0], user_label_counts(report))
    focus: dict[str, tuple[list[str], str | None]] = {}
    held: set[int] | None = None
    for number, _ in enumerate(targets, 1):
        unshown = frozenset(report.examples[i]["input"] for i in held or ())
        reason, final = await fill_label_quotas(llm, spec, cfg, report, wanted, on_progress, focus, unshown)
        examples = report.examples
        if held is None:
            held = validation_indices(examples, spec.labels, cfg.seed)
        val = [examples[i] for i in sorted(held)]
        train = [e for i, e in enumerate(examples) if i not in held]
        answers = (
            await asyncio.to_thread(quick_student, train, [e["input"] for e in val + train]) if val and train else []
        )
        val_answers, train_answers = answers[: len(val)], answers[len(val) :]
        truth = [e["output"] for e in val]
        usage = llm.usage()
        row = {
            "round": number,
            "examples": len(examples),
            "teacher_tokens": usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0),
            "requests": usage.get("requests", 0),
            "validation_examples": len(val),
            **round_score(truth, val_answers),
            "ended": reason,
        }
        report.rounds.append(row)
        if final:
            report.stop_reason = f"round {number}: {reason}"
            break
        if not answers:
            report.stop_reason = f"round {number}: {reason}; too few examples to score a student, no more rounds"
            break
        if number > 1 and not rising(row, report.rounds[-2]):
            before = report.rounds[-2]["validation_accuracy"]
            report.stop_reason = (
                f"round {number}: the student's validation score stopped rising "
                f"({before:.1%} -> {row['validation_accuracy']:.1%}), no more rounds"
            )
            break
        if number == len(targets):
            report.stop_reason = f"{number} rounds: {reason}"
            break
        extra, mistaken_for = aim_at_errors(
            spec.labels, truth, val_answers, targets[number] - targets[number - 1], hopeless(report.per_label)
        )
        row["next_round"] = {label: n for label, n in extra.items() if n}
        made = Counter(e["output"] for e in examples if e["source"] == GENERATED)
        wanted = {label: made[label] + extra[label] for label in spec.labels}
        hardest = hardest_inputs(train, train_answers, spec.labels, MISSED_SHOWN)
        focus = {label: (hardest[label], mistaken_for.get(label)) for label in spec.labels}
    report.usage = llm.usage()
    return report
