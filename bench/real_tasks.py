"""The real-task benchmark: p2m on public, human-labelled test sets, student and teacher side by side.

Each task (bench/real_tasks_data.py: a user-style prompt with three demonstrations from outside
the test set, and up to 200 human-labelled test rows) runs as a user would run it, with the
offline defaults: `p2m run PROMPT --eval-data TEST.jsonl`, one task after another, each in a
fresh run folder. The table gives, on the real test rows, the student's and the teacher's exact
match (for extraction and generation also against any of the references), the student's kind
and size, ms per example, the run's minutes and peak memory (all processes).

    python bench/real_tasks.py                        # every task (hours on 2 cores)
    python bench/real_tasks.py --tasks review_sentiment,assistant_dialog_act --num-examples 120
    python bench/real_tasks.py --report bench/out/real_tasks   # the table again, from finished runs
    python bench/real_tasks.py --tasks review_sentiment --num-examples 100 --rounds 3 --out bench/out/real_tasks_rounds

Results: bench/out/real_tasks/<task>/ (run folders) and bench/out/real_tasks/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peak_rss import MemoryWatch  # noqa: E402
from real_tasks_data import DEFAULT_CACHE, TASKS, fetch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
P2M = [sys.executable, "-m", "p2m.flows.cli"]


def normalise(text: str) -> str:
    """As p2m scores exact match: lower case, punctuation and articles out, spaces collapsed."""
    from p2m.tasks.student.inference import normalise_answer

    return normalise_answer(text)


def any_reference_match(predictions: list[dict], test_rows: list[dict], who: str) -> float | None:
    """Exact match of `who` ("student" or "teacher") against any of a row's references."""
    refs = {r["input"]: r.get("references") or [r["output"]] for r in test_rows}
    scored = [p for p in predictions if p.get("test_set") == "eval_data" and p.get(who) is not None]
    if not scored:
        return None
    hits = sum(normalise(p[who]) in {normalise(r) for r in refs.get(p["input"], [p["reference"]])} for p in scored)
    return round(hits / len(scored), 4)


def run_task(name: str, prompt: Path, test: Path, out: Path, extra: list[str]) -> dict:
    """Run p2m on one task; returns wall minutes, peak memory and the exit code."""
    command = [*P2M, "run", str(prompt), "--out", str(out), "--eval-data", str(test), *extra]
    started = time.monotonic()
    log = out.parent / f"{name}.log"
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=os.environ)
        with MemoryWatch([proc.pid]) as watch:
            code = proc.wait()
    return {
        "exit_code": code,
        "minutes": round((time.monotonic() - started) / 60, 1),
        "peak_gb": round(watch.peak_sum / 1e9, 2),
        "log": str(log),
    }


def generation_tokens(log: Path) -> int:
    """Prompt + completion tokens of every request generation made, replayed from the cache or not
    (a cached answer cost its tokens when it was first paid for): what the data cost."""
    if not log.exists():
        return 0
    total = 0
    for line in log.read_text(encoding="utf-8").splitlines():
        usage = (json.loads(line) if line else {}).get("usage") or {}
        total += usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
    return total


def task_row(name: str, kind: str, out: Path, test: Path, run: dict) -> dict:
    """One row of the table from a finished run folder."""
    row = {"task": name, "kind": kind, **run}
    metrics_path = out / "metrics.json"
    if not metrics_path.exists():
        return row | {"error": "no metrics.json (see the log)"}
    metrics = json.loads(metrics_path.read_text())
    choice = json.loads((out / "model_choice.json").read_text())
    spec = json.loads((out / "spec.json").read_text())
    student, teacher = metrics["student"].get("eval_data", {}), metrics["teacher"].get("eval_data", {})
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines() if line]
    test_rows = [json.loads(line) for line in test.read_text().splitlines() if line]
    model_mb = sum(p.stat().st_size for p in (out / "model").glob("*.safetensors")) / 1e6
    generation = json.loads((out / "generation.json").read_text()) if (out / "generation.json").exists() else {}
    usage = generation.get("usage") or {}
    tokens = generation_tokens(out / "generation.jsonl")
    return row | {
        "read_as": spec.get("kind"),
        "student_model": f"{choice['name']} ({choice['architecture']})",
        "student_mb": round(model_mb, 1),
        "student_em": student.get("exact_match"),
        "teacher_em": teacher.get("exact_match"),
        "student_any_ref": any_reference_match(predictions, test_rows, "student") if kind != "classification" else None,
        "teacher_any_ref": any_reference_match(predictions, test_rows, "teacher") if kind != "classification" else None,
        "student_ms": student.get("ms_per_example"),
        "teacher_ms": teacher.get("ms_per_example"),
        "n": student.get("n"),
        "generated": generation.get("accepted"),
        "teacher_requests": usage.get("requests"),
        "teacher_ktokens": round(tokens / 1000, 1) if tokens else None,
        # The student's exact match (points) per 1,000 teacher tokens spent generating its data.
        "em_per_ktoken": round(100 * student["exact_match"] / (tokens / 1000), 3)
        if tokens and student.get("exact_match") is not None
        else None,
        "rounds": len(generation.get("rounds") or []) or 1,
        "stop_reason": generation.get("stop_reason"),
    }


def print_table(rows: list[dict]) -> None:
    cols = [
        ("task", "task"),
        ("kind", "kind"),
        ("student", "student_model"),
        ("MB", "student_mb"),
        ("student EM", "student_em"),
        ("teacher EM", "teacher_em"),
        ("student any-ref", "student_any_ref"),
        ("teacher any-ref", "teacher_any_ref"),
        ("student ms", "student_ms"),
        ("teacher ms", "teacher_ms"),
        ("n", "n"),
        ("examples", "generated"),
        ("rounds", "rounds"),
        ("teacher k-tokens", "teacher_ktokens"),
        ("EM points per k-token", "em_per_ktoken"),
        ("minutes", "minutes"),
        ("peak GB", "peak_gb"),
    ]
    print("| " + " | ".join(c for c, _ in cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        cells = []
        for _, key in cols:
            value = row.get(key)
            cells.append(
                f"{value:.1%}" if isinstance(value, float) and key.endswith(("_em", "_ref")) else str(value or "-")
            )
        print("| " + " | ".join(cells) + " |")
        if row.get("error"):
            print(f"|  {row['task']}: {row['error']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", help="comma-separated task names (default: all)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the test sets are fetched to")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "real_tasks")
    parser.add_argument("--num-examples", type=int, help="examples to generate per task (default: p2m's)")
    parser.add_argument("--rounds", type=int, help="generate in up to this many rounds (p2m run --rounds)")
    parser.add_argument("--report", action="store_true", help="only print the table from finished runs")
    args = parser.parse_args()
    chosen = [t for t in TASKS if not args.tasks or t.name in args.tasks.split(",")]
    paths = fetch(args.cache)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    extra = ["--num-examples", str(args.num_examples)] if args.num_examples else []
    extra += ["--rounds", str(args.rounds)] if args.rounds else []
    rows = []
    for task in chosen:
        test = Path(paths[task.name])
        prompt = test.with_suffix(".txt")
        out = args.out / task.name
        run = results.get(task.name, {}) if args.report else run_task(task.name, prompt, test, out, extra)
        row = task_row(task.name, task.kind, out, test, {k: run.get(k) for k in ("exit_code", "minutes", "peak_gb")})
        results[task.name] = row
        results_path.write_text(json.dumps(results, indent=2))
        rows.append(row)
        print(f"{task.name}: {row}", file=sys.stderr, flush=True)
    print_table(rows)


if __name__ == "__main__":
    main()
