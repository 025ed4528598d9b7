"""What kind of task a prompt is, read from its instruction and demonstrations by rule.

- classification: every demonstration's output is short and one of a closed set of labels: the
  set is named in the instruction ("as billing, bug or feature request", "labels: a, b, c",
  quoted or snake_case names) or the outputs repeat across demonstrations;
- extraction: every output is a span of its input (copied from it, as in reading comprehension);
- generation: anything else.

The rules decide when the prompt says it plainly; `decide_kind` takes the teacher's reading of
the prompt (kind and label names) where the rules cannot tell, and keeps only label names that
are written in the prompt itself, so the teacher can confirm a label set but never invent one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LABEL_WORDS = 4
MAX_LABEL_CHARS = 40
MAX_LABELS = 50

# Words that introduce a list of labels in an instruction, and where the list ends.
_LIST_START = re.compile(
    r"(?:\bas\b|\binto\b|\bone of\b|\beither\b|\blabels?\b|\bcategor(?:y|ies)\b|\bclass(?:es)?\b|\bintents?\b|"
    r"\btags?\b|\banswer with\b|\breply with\b|\brespond with\b|:)\s*",
    re.IGNORECASE,
)
_LIST_END = re.compile(r"[.;!?\n(]|\s-\s")
_SPLIT = re.compile(r"\s*(?:,|/|\||\bor\b|\band\b)\s*", re.IGNORECASE)
_QUOTED = re.compile(r"[\"'“‘`]([^\"'”’`\n]{1,40})[\"'”’`]")
_IDENTIFIER = re.compile(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b")


@dataclass
class KindReading:
    """The kind a prompt was read as, its label set (classification only) and why."""

    kind: str
    labels: list[str]
    reason: str


def fold(text: str) -> str:
    """A label as compared: case and spacing folded ("Feature  Request" == "feature request")."""
    return " ".join(str(text).lower().split())


def looks_like_label(text: str) -> bool:
    """Could be a class name: at most 4 words and 40 characters, with a letter in it (numbers,
    dates and times are values, not classes)."""
    text = text.strip()
    return 0 < len(text) <= MAX_LABEL_CHARS and len(text.split()) <= MAX_LABEL_WORDS and any(c.isalpha() for c in text)


def named_label_groups(instruction: str) -> list[list[str]]:
    """Groups of label-like names written in the instruction: the quoted names, the snake_case
    names, and the items of each list that follows words such as "as", "into", "one of",
    "labels" or a colon ("as billing, bug or feature request")."""
    groups = [[m.group(1).strip() for m in _QUOTED.finditer(instruction)], _IDENTIFIER.findall(instruction)]
    # (always two groups first, possibly empty: named_labels reorders by position)
    # "request (asks for a missing detail), confirm (...)": the descriptions in brackets are not list items.
    plain = re.sub(r"\s*\([^()]*\)", "", instruction)
    for start in _LIST_START.finditer(plain):
        rest = plain[start.end() :]
        end = _LIST_END.search(rest)
        items = [_list_item(i) for i in _SPLIT.split(rest[: end.start() if end else len(rest)])]
        items = [i for i in items if i]
        if len(items) >= 2 and all(looks_like_label(i) for i in items):
            groups.append(items)
    return [[n for n in g if looks_like_label(n)] for g in groups]


def _list_item(text: str) -> str:
    """One item of a list in words: quotes and colons trimmed; of `the review "positive`, what
    follows the last quote."""
    parts = [p for p in re.split(r"[\"“”‘’`]", text) if p.strip(" :'")]
    return (parts[-1] if len(parts) > 1 else text).strip(" :\"'“”‘’`")


def named_labels(instruction: str, outputs: list[str] = ()) -> list[str]:
    """Label-like names in the instruction (`named_label_groups`), unique, in order.

    With `outputs`: the first group (lists first, then quoted names, then snake_case names) that
    holds every output, else every group that holds at least one; a quoted word or a list
    elsewhere in the instruction is not part of the label set.
    """
    groups = named_label_groups(instruction)
    groups = groups[2:] + groups[:2]  # the lists in words, then quoted names, then snake_case names
    wanted = {fold(o) for o in outputs}
    chosen = next((g for g in groups if wanted and wanted <= {fold(n) for n in g}), None)
    chosen = [chosen] if chosen else [g for g in groups if not wanted or wanted & {fold(n) for n in g}]
    unique: dict[str, str] = {}
    for name in (n for g in chosen for n in g):
        unique.setdefault(fold(name), name)
    return list(unique.values())


def is_span(output: str, text: str) -> bool:
    """Whether `output` is copied from `text` (case and spacing folded), and shorter than it."""
    out = fold(output)
    return bool(out) and out in fold(text) and len(out) < len(fold(text))


def read_kind_by_rules(instruction: str, demonstrations: list[dict]) -> KindReading | None:
    """The kind when the prompt says it plainly, else None (the teacher is asked).

    `demonstrations` are {"input", "output"} dicts. Classification: at least two demonstrations,
    every output label-like, and either every output named in the instruction or some output
    repeated; the label set is the names in the instruction that the outputs use, plus the
    outputs. Extraction: every output a span of its input.
    """
    outputs = [d["output"].strip() for d in demonstrations]
    named = named_labels(instruction, outputs)
    named_folded = {fold(n): n for n in named}
    if len(outputs) >= 2 and all(looks_like_label(o) for o in outputs):
        all_named = all(fold(o) in named_folded for o in outputs)
        repeated = len({fold(o) for o in outputs}) < len(outputs)
        if all_named or repeated:
            labels = label_set(named if all_named else [], outputs)
            why = (
                "every demonstration's output is a label named in the instruction"
                if all_named
                else "the demonstrations' outputs are short and repeat"
            )
            return KindReading("classification", labels, f"{why} ({len(labels)} labels)")
    if demonstrations and all(is_span(d["output"], d["input"]) for d in demonstrations):
        return KindReading("extraction", [], "every demonstration's output is copied from its input")
    if len(outputs) >= 2 and not all(looks_like_label(o) for o in outputs):
        return KindReading("generation", [], "the demonstrations' outputs are free text, not labels or spans")
    return None


def label_set(named: list[str], outputs: list[str]) -> list[str]:
    """Labels in order: those named in the instruction, then outputs not named there (as written
    in the first demonstration that uses them)."""
    labels: dict[str, str] = {}
    for name in [*named, *outputs]:
        labels.setdefault(fold(name), name.strip())
    return list(labels.values())[:MAX_LABELS]


def decide_kind(
    instruction: str,
    demonstrations: list[dict],
    prompt_text: str,
    teacher_reading: dict | None = None,
    given_kind: str | None = None,
    given_labels: list[str] | None = None,
) -> KindReading:
    """The task's kind and labels: what the user gave (YAML `kind:`/`labels:`, or --kind/--labels),
    else the rules, else the teacher's reading (`{"kind": ..., "labels": [...]}`) restricted to
    label names written in the prompt, else generation.
    """
    outputs = [d["output"].strip() for d in demonstrations]
    if given_labels:
        labels = label_set(given_labels, outputs)
        extra = [o for o in outputs if fold(o) not in {fold(g) for g in given_labels}]
        note = f"; demonstrations also answer {extra}" if extra else ""
        return KindReading("classification", labels, f"labels given ({len(given_labels)}){note}")
    if given_kind and given_kind != "auto":
        by_rules = read_kind_by_rules(instruction, demonstrations)
        labels = by_rules.labels if by_rules and by_rules.kind == "classification" else label_set([], outputs)
        return KindReading(given_kind, labels if given_kind == "classification" else [], f"{given_kind} as given")
    by_rules = read_kind_by_rules(instruction, demonstrations)
    reading = teacher_reading or {}
    # The teacher may confirm label names written in the prompt (and add ones the rules missed), never invent one.
    confirmed = [
        n
        for n in reading.get("labels") or []
        if isinstance(n, str) and looks_like_label(n) and fold(n) in fold(prompt_text)
    ]
    if by_rules is not None and by_rules.kind == "classification":
        labels = label_set(by_rules.labels + [n for n in confirmed if fold(n) in fold(instruction)], [])
        added = len(labels) - len(by_rules.labels)
        note = f"; the teacher named {added} more in the instruction" if added else ""
        return KindReading(
            "classification", labels, f"{by_rules.reason.rsplit(' (', 1)[0]} ({len(labels)} labels){note}"
        )
    if by_rules is not None:
        return by_rules
    if reading.get("kind") == "classification" and all(looks_like_label(o) for o in outputs):
        labels = label_set(confirmed, outputs)
        if len(labels) >= 2:
            return KindReading("classification", labels, f"the teacher read a closed label set ({len(labels)} labels)")
    return KindReading("generation", [], "no closed label set and no spans: the output is written freely")
