"""Data side of the real-task benchmark: public, human-labelled test sets shipped inside registry packages.

Every set comes from the `bigbench==1.0.0` sdist on PyPI (fetched with `pip download --no-deps`, read straight
from its tar archive, never installed). BIG-bench rows carry a canary string: they must never be committed
into this repository nor enter any training or generation pool, so nothing here holds a data row. `fetch`
writes, into a cache folder outside the repository:

    <cache>/dl/bigbench-1.0.0.tar.gz      the downloaded sdist (358 MB, once)
    <cache>/<name>.jsonl                  at most 200 test rows {"input", "output"[, "references"]}
    <cache>/<name>.txt                    the user-style prompt: instruction + three demonstrations

Demonstrations are drawn at fetch time (fixed seed) from rows left out of the test set; for extraction and
generation tasks, rows sharing a passage or a meaning representation with a demonstration are left out too.

Kept aside for an independent check and not used here: SNIPS intents (BIG-bench `intent_recognition` is
SNIPS, so it is excluded), SpamAssassin, SQuAD v1.1 dev (`squad_shifts/squaddev_v1.1.json` and
`disfl_qa`, which is built on SQuAD 2.0 dev and so on the same dev articles), Spider, BIG-bench
date_understanding, Quoref (natural_instructions subtask001/002), BIG-bench tense.

    python bench/real_tasks_data.py [--cache DIR]
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import re
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CACHE = Path.home() / ".cache" / "p2m" / "bench-data"
BIGBENCH = "bigbench==1.0.0"
BIGBENCH_SDIST = "bigbench-1.0.0.tar.gz"
TASKS_ROOT = "bigbench-1.0.0/bigbench/benchmark_tasks/"
MAX_ROWS = 200
SEED = 20260
N_DEMOS = 3

Row = dict  # {"input": str, "output": str, optional "references": list[str], optional "group": str}


@dataclass(frozen=True)
class Task:
    """One benchmark task.

    name: file stem in the cache. kind: "classification" | "extraction" | "generation".
    member: path inside the sdist (below TASKS_ROOT). source/licence: provenance for the report.
    instruction: the user-style request (labels named for classification); demonstrations are appended.
    labels: the exact output strings of a classification task, else None.
    parse: the loaded JSON -> all candidate rows. max_input_chars: longer inputs are dropped.
    balanced: sample the test rows evenly across labels (classification) instead of uniformly.
    """

    name: str
    kind: str
    member: str
    source: str
    licence: str
    instruction: str
    parse: Callable[[dict], list[Row]]
    labels: tuple[str, ...] | None = None
    max_input_chars: int = 600
    balanced: bool = False


# ---------------------------------------------------------------- parsers (JSON of one member -> rows)


def _best_label(target_scores: dict) -> str:
    """target_scores {label: score} -> the label with the highest score."""
    return max(target_scores, key=target_scores.get)


def parse_sgd_acts(data: dict) -> list[Row]:
    """GEM schema_guided_dialog -> (assistant reply, its dialog act) for replies that carry exactly one act type.

    The task's input lists the acts ('The assistant signals "offer" ...') and its target is the reply text;
    we turn it around: the reply is the input, the act the label.
    """
    rows = []
    for ex in data["examples"]:
        acts_part = ex["input"].split("The conversation so far")[0]
        acts = set(re.findall(r'The assistant signals "(\w+)"', acts_part))
        if len(acts) == 1:
            rows.append({"input": ex["target"].strip(), "output": acts.pop()})
    return rows


def parse_target_scores(mapping: dict[str, str] | None = None, strip_prefix: str = "") -> Callable[[dict], list[Row]]:
    """Make a parser for multiple-choice tasks with one closed label set.

    mapping: optional {bigbench label: our label}. strip_prefix: removed from the start of each input.
    Returns data -> rows with output = the (mapped) top-scored label.
    """

    def parse(data: dict) -> list[Row]:
        rows = []
        for ex in data["examples"]:
            text = ex["input"].strip()
            if strip_prefix and text.startswith(strip_prefix):
                text = text[len(strip_prefix) :].strip()
            label = _best_label(ex["target_scores"])
            rows.append({"input": text, "output": mapping.get(label, label) if mapping else label})
        return rows

    return parse


def parse_squad(removed: dict | None = None, max_context: int = 1200) -> Callable[[dict], list[Row]]:
    """Make a parser for SQuAD-format files (squad_shifts): one row per question whose context <= max_context.

    Input is "Passage: ...\\nQuestion: ..."; output is the first gold answer span, references all distinct spans;
    group is the context (rows sharing a passage never straddle the demo/test split).
    """

    def parse(data: dict) -> list[Row]:
        rows = []
        for article in data["data"]:
            for para in article["paragraphs"]:
                context = para["context"].strip()
                if len(context) > max_context:
                    continue
                for qa in para["qas"]:
                    answers = list(dict.fromkeys(a["text"].strip() for a in qa["answers"] if a["text"].strip()))
                    if not answers or (removed and qa["id"] in removed):
                        continue
                    text = f"Passage: {context}\nQuestion: {qa['question'].strip()}"
                    rows.append({"input": text, "output": answers[0], "references": answers, "group": context})
        return rows

    return parse


def parse_references(data: dict) -> list[Row]:
    """GEM data-to-text tasks -> one row per distinct input, output = first reference, references = all of them."""
    refs: dict[str, list[str]] = collections.defaultdict(list)
    for ex in data["examples"]:
        targets = ex["target"] if isinstance(ex["target"], list) else [ex["target"]]
        refs[ex["input"].strip()].extend(t.strip() for t in targets if t.strip())
    return [
        {"input": src, "output": r[0], "references": list(dict.fromkeys(r)), "group": src} for src, r in refs.items()
    ]


# ---------------------------------------------------------------- the tasks

SGD_LABELS = ("request", "confirm", "offer", "inform", "goodbye", "req_more", "notify_success", "offer_intent")

TASKS: list[Task] = [
    Task(
        name="assistant_dialog_act",
        kind="classification",
        member="gem/schema_guided_dialog/task.json",
        source=f"{BIGBENCH} {TASKS_ROOT}gem/schema_guided_dialog/task.json (GEM SGD test, Rastogi et al. 2020)",
        licence="CC BY-SA 4.0 (SGD dataset); BIG-bench Apache-2.0",
        instruction=(
            "I'm building a virtual assistant and need a model that tags each assistant reply with the dialog "
            "act it performs. Answer with exactly one of these labels: request (asks the user for a missing "
            "detail), confirm (reads details back to ask for confirmation), offer (proposes a specific option), "
            "inform (gives a requested fact), goodbye (ends the conversation), req_more (asks if the user needs "
            "anything else), notify_success (says an action went through), offer_intent (suggests starting a new "
            "action such as booking or buying)."
        ),
        parse=parse_sgd_acts,
        labels=SGD_LABELS,
        balanced=True,
    ),
    Task(
        name="review_sentiment",
        kind="classification",
        member="multiemo/reviews_sentence_en/task.json",
        source=f"{BIGBENCH} {TASKS_ROOT}multiemo/reviews_sentence_en/task.json (MultiEmo, Kocoń et al. 2021)",
        licence="MultiEmo: CC BY 4.0 (as published by CLARIN-PL; verify); BIG-bench Apache-2.0",
        instruction=(
            "Classify the sentiment of a single sentence taken from an online review of a school or university "
            "teacher. Answer with exactly one label: positive, negative, neutral or ambivalent (mixed positive "
            "and negative)."
        ),
        parse=parse_target_scores(),
        labels=("positive", "negative", "neutral", "ambivalent"),
        balanced=True,
    ),
    Task(
        name="reply_support",
        kind="classification",
        member="social_support/task.json",
        source=f"{BIGBENCH} {TASKS_ROOT}social_support/task.json",
        licence="BIG-bench Apache-2.0 (replies from online communities; upstream data licence not stated)",
        instruction=(
            "Read a reply someone posted in an online community and tell me how supportive it is towards the "
            "person it answers. Answer with exactly one label: supportive, neutral or unsupportive."
        ),
        parse=parse_target_scores(),
        labels=("supportive", "neutral", "unsupportive"),
        balanced=True,
    ),
    Task(
        name="hinglish_toxicity",
        kind="classification",
        member="hinglish_toxicity/task.json",
        source=f"{BIGBENCH} {TASKS_ROOT}hinglish_toxicity/task.json",
        licence="BIG-bench Apache-2.0 (upstream social-media data licence not stated)",
        instruction=(
            "Moderate comments written in Hinglish (Hindi in Latin script mixed with English). Tell me whether "
            "each comment is toxic (abusive, hateful or offensive). Answer with exactly one label: toxic or "
            "not toxic."
        ),
        parse=parse_target_scores({"yes": "toxic", "no": "not toxic"}),
        labels=("toxic", "not toxic"),
    ),
    Task(
        name="nyt_reading_comprehension",
        kind="extraction",
        member="squad_shifts/nyt_v1.0.json",
        source=f"{BIGBENCH} {TASKS_ROOT}squad_shifts/nyt_v1.0.json (SQuADShifts NYT, Miller et al. 2020)",
        licence="SQuADShifts CC BY 4.0 (passages from New York Times articles); BIG-bench Apache-2.0",
        instruction=(
            "Answer questions about a short newspaper passage. The answer must be copied word for word from "
            "the passage: give only the shortest span of the passage that answers the question, not a sentence."
        ),
        parse=parse_squad(),
        max_input_chars=1400,
    ),
    Task(
        name="reddit_reading_comprehension",
        kind="extraction",
        member="squad_shifts/reddit_v1.0.json",
        source=f"{BIGBENCH} {TASKS_ROOT}squad_shifts/reddit_v1.0.json (SQuADShifts Reddit, Miller et al. 2020)",
        licence="SQuADShifts CC BY 4.0 (passages from Reddit posts); BIG-bench Apache-2.0",
        instruction=(
            "Answer questions about a short Reddit post. The answer must be copied word for word from the post: "
            "give only the shortest span of the post that answers the question, not a sentence."
        ),
        parse=parse_squad(),
        max_input_chars=1400,
    ),
    Task(
        name="restaurant_description",
        kind="generation",
        member="gem/e2e_nlg/task.json",
        source=f"{BIGBENCH} {TASKS_ROOT}gem/e2e_nlg/task.json (E2E NLG test via GEM, Novikova et al. 2017)",
        licence="CC BY-SA 4.0 (E2E NLG); BIG-bench Apache-2.0",
        instruction=(
            "Turn a list of restaurant attributes into one or two natural English sentences describing the "
            "restaurant for a listings website. Mention every attribute given and nothing else."
        ),
        parse=parse_references,
    ),
    Task(
        name="concepts_to_sentence",
        kind="generation",
        member="gem/common_gen/task.json",
        source=f"{BIGBENCH} {TASKS_ROOT}gem/common_gen/task.json (CommonGen validation via GEM, Lin et al. 2020)",
        licence="MIT (CommonGen); BIG-bench Apache-2.0",
        instruction=(
            "Given a few everyday words, write one short, plausible English sentence describing an everyday "
            "scene that uses all of the words (any inflection is fine)."
        ),
        parse=parse_references,
    ),
]

# Member files that hold per-question exclusions (answers the BIG-bench task itself removed as too long).
REMOVED = {
    "squad_shifts/nyt_v1.0.json": "squad_shifts/nyt_v1.0_removed.json",
    "squad_shifts/reddit_v1.0.json": "squad_shifts/reddit_v1.0_removed.json",
}


# ---------------------------------------------------------------- download and read


def download_sdist(cache_dir: Path) -> Path:
    """Download the bigbench sdist once (pip download --no-deps). cache_dir -> path of the .tar.gz."""
    dl = cache_dir / "dl"
    tar_path = dl / BIGBENCH_SDIST
    if not tar_path.exists():
        dl.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", BIGBENCH, "-d", str(dl)]
        subprocess.run(cmd, check=True)
    return tar_path


def read_members(tar_path: Path, members: set[str]) -> dict[str, dict]:
    """One sequential pass over the gzip tar. members (paths below TASKS_ROOT) -> {member: parsed JSON}."""
    found: dict[str, dict] = {}
    with tarfile.open(tar_path) as tar:
        for info in tar:
            rel = info.name[len(TASKS_ROOT) :] if info.name.startswith(TASKS_ROOT) else None
            if rel in members:
                found[rel] = json.load(tar.extractfile(info))
                if len(found) == len(members):
                    break
    missing = members - set(found)
    if missing:
        raise FileNotFoundError(f"not in {tar_path.name}: {sorted(missing)}")
    return found


# ---------------------------------------------------------------- split, sample, write


def clean_rows(task: Task, rows: list[Row]) -> list[Row]:
    """Drop rows that are too long, empty, off the label set, or duplicated inputs. rows -> rows."""
    seen, out = set(), []
    for row in rows:
        text = row["input"]
        if not text or not row["output"] or len(text) > task.max_input_chars or text in seen:
            continue
        if task.labels is not None and row["output"] not in task.labels:
            continue
        seen.add(text)
        out.append(row)
    return out


def _demo_ok(task: Task, row: Row, demos: list[Row]) -> bool:
    """Whether row may join demos: classification spreads labels (no label twice while others are unused),
    other kinds never reuse a passage/source group."""
    if task.labels is not None:
        per_label = -(-N_DEMOS // len(task.labels))  # ceil
        return sum(d["output"] == row["output"] for d in demos) < per_label
    key = row.get("group", row["input"])
    return all(d.get("group", d["input"]) != key for d in demos)


def pick_demos(task: Task, rows: list[Row], rng: random.Random) -> list[Row]:
    """Three demonstration rows from a shuffled copy of rows (labels spread for classification, distinct groups
    otherwise), preferring inputs no longer than the median so the prompt stays small. rows -> 3 rows."""
    pool = rows[:]
    rng.shuffle(pool)
    limit = sorted(len(r["input"]) for r in pool)[len(pool) // 2]
    demos: list[Row] = []
    for row in pool:
        if len(row["input"]) <= limit and _demo_ok(task, row, demos):
            demos.append(row)
        if len(demos) == N_DEMOS:
            return demos
    raise ValueError(f"{task.name}: could not find {N_DEMOS} demonstrations")


def sample_test(task: Task, rows: list[Row], rng: random.Random) -> list[Row]:
    """At most MAX_ROWS test rows, one per group; balanced across labels when task.balanced. rows -> rows."""
    pool = rows[:]
    rng.shuffle(pool)
    groups_seen: set[str] = set()
    unique = []
    for row in pool:
        group = row.get("group")
        if group is None or group not in groups_seen:
            unique.append(row)
            if group is not None:
                groups_seen.add(group)
    if not task.balanced:
        return unique[:MAX_ROWS]
    by_label: dict[str, list[Row]] = collections.defaultdict(list)
    for row in unique:
        by_label[row["output"]].append(row)
    picked: list[Row] = []
    queues = [by_label[label] for label in task.labels if by_label[label]]
    while len(picked) < MAX_ROWS and any(queues):
        for queue in queues:
            if queue and len(picked) < MAX_ROWS:
                picked.append(queue.pop(0))
    rng.shuffle(picked)
    return picked


def split_task(task: Task, rows: list[Row]) -> tuple[list[Row], list[Row]]:
    """All rows of a task -> (demonstrations, test rows), disjoint, also by group. Deterministic (SEED)."""
    rng = random.Random(f"{SEED}-{task.name}")
    rows = clean_rows(task, rows)
    demos = pick_demos(task, rows, rng)
    demo_inputs = {d["input"] for d in demos}
    demo_groups = {d["group"] for d in demos if "group" in d}
    rest = [r for r in rows if r["input"] not in demo_inputs and r.get("group", None) not in demo_groups]
    return demos, sample_test(task, rest, rng)


def prompt_text(task: Task, demos: list[Row]) -> str:
    """Instruction + 'Here are some examples:' + three Input:/Output: pairs. -> the prompt file's text."""
    parts = [task.instruction, "", "Here are some examples:", ""]
    for demo in demos:
        parts += [f"Input: {demo['input']}", f"Output: {demo['output']}", ""]
    return "\n".join(parts).rstrip() + "\n"


def write_task(task: Task, demos: list[Row], test: list[Row], cache_dir: Path) -> Path:
    """Write <name>.txt and <name>.jsonl (without the internal "group" key). -> path of the JSONL."""
    (cache_dir / f"{task.name}.txt").write_text(prompt_text(task, demos), encoding="utf-8")
    path = cache_dir / f"{task.name}.jsonl"
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in test:
            fh.write(json.dumps({k: v for k, v in row.items() if k != "group"}, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def task_rows(task: Task, data: dict[str, dict]) -> list[Row]:
    """The parsed JSON of every member -> all candidate rows of task (applying squad_shifts' removed list)."""
    if task.member in REMOVED:
        removed = data[REMOVED[task.member]]["removed"]
        return parse_squad(removed)(data[task.member])
    return task.parse(data[task.member])


def fetch(cache_dir: Path | str = DEFAULT_CACHE) -> dict[str, Path]:
    """Download and extract every task once. cache_dir -> {task name: path of its JSONL}; <name>.txt beside it.

    Idempotent: a task whose .jsonl and .txt both exist is skipped, and the sdist is only downloaded (and read)
    when some task is missing.
    """
    cache_dir = Path(cache_dir).expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = {t.name: cache_dir / f"{t.name}.jsonl" for t in TASKS}
    todo = [t for t in TASKS if not (paths[t.name].exists() and paths[t.name].with_suffix(".txt").exists())]
    if todo:
        members = {t.member for t in todo} | {REMOVED[t.member] for t in todo if t.member in REMOVED}
        data = read_members(download_sdist(cache_dir), members)
        for task in todo:
            demos, test = split_task(task, task_rows(task, data))
            write_task(task, demos, test, cache_dir)
    return paths


# ---------------------------------------------------------------- report


def load_jsonl(path: Path) -> list[dict]:
    """A JSONL file -> its rows."""
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def summary_table(paths: dict[str, Path]) -> str:
    """{name: jsonl path} -> a markdown table: task, kind, rows, labels, mean input chars, source, licence."""
    lines = [
        "| task | kind | rows | labels | mean_input_chars | source | licence |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for task in TASKS:
        rows = load_jsonl(paths[task.name])
        mean_len = sum(len(r["input"]) for r in rows) / max(len(rows), 1)
        if task.labels is not None:
            counts = collections.Counter(r["output"] for r in rows)
            labels = f"{len(task.labels)}: " + ", ".join(f"{lab} {counts.get(lab, 0)}" for lab in task.labels)
        else:
            labels = "-"
        lines.append(
            f"| {task.name} | {task.kind} | {len(rows)} | {labels} | {mean_len:.0f} | {task.source} | {task.licence} |"
        )
    return "\n".join(lines)


def main() -> None:
    """CLI: fetch into --cache (default ~/.cache/p2m/bench-data) and print the summary table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="cache folder (default: %(default)s)")
    args = parser.parse_args()
    print(summary_table(fetch(args.cache)))


if __name__ == "__main__":
    main()
