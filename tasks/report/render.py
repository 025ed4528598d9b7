"""The run's report, rendered once for each place people read it: the terminal, the Prefect UI
(markdown artifact) and the model card.

A summary is the dict `summary.json` holds: stages with their state and seconds, and the
headline facts the pipeline adds (metrics, generation counts and costs, teacher and student).
`report_sections` turns it into titled tables; `as_text` and `as_markdown` only lay them out.
"""

from __future__ import annotations

from pathlib import Path

from p2m.tasks.core.run_store import read_json, write_text
from p2m.tasks.student.format import format_prompt

SCORES = ("exact_match", "chrf", "bertscore_f1", "ms_per_example")
FORMATS_TITLE = "Formats (held-out split, CPU, batch 1)"


def score_tables(metrics: dict | None) -> list[tuple[str, list[list[str]]]]:
    """Per test set: (title, rows) comparing student and teacher; rows start with a header."""
    tables = []
    for test_set, student in ((metrics or {}).get("student") or {}).items():
        teacher = ((metrics or {}).get("teacher") or {}).get(test_set) or {}
        rows = [["", "student", "teacher"]] + [[m, str(student.get(m, "-")), str(teacher.get(m, "-"))] for m in SCORES]
        tables.append((f"{test_set} ({student['n']} examples)", rows))
    return tables


def label_tables(metrics: dict | None) -> list[tuple[str, list[list[str]]]]:
    """Per test set with a label breakdown: (title, rows) of the student's precision, recall, F1 and
    support for each label (the teacher's F1 beside them when it was scored); rows start with a header."""
    tables = []
    for test_set, student in ((metrics or {}).get("student") or {}).items():
        if not student.get("per_label"):
            continue
        teacher = (((metrics or {}).get("teacher") or {}).get(test_set) or {}).get("per_label") or {}
        rows = [["label", "precision", "recall", "F1", "support"] + (["teacher F1"] if teacher else [])]
        for label, s in student["per_label"].items():
            row = [label, f"{s['precision']:.2f}", f"{s['recall']:.2f}", f"{s['f1']:.2f}", str(s["support"])]
            rows.append(row + ([f"{teacher[label]['f1']:.2f}" if label in teacher else "-"] if teacher else []))
        tables.append((f"Per label: {test_set} (macro F1 {student['macro_f1']:.2f})", rows))
    return tables


def use_section(instruction: str, train_record: dict) -> list[str]:
    """The card's "Use" lines: the prompt a generative student reads, or the labels a classifier answers."""
    if train_record.get("labels"):  # an encoder-classifier: it reads the input alone
        temperature = (train_record.get("calibration") or {}).get("temperature", 1.0)
        return [
            "Give the model the input text alone (no instruction); it answers one of these labels, with a",
            f"calibrated probability for each (temperature {temperature}): "
            + ", ".join(f"`{label}`" for label in train_record["labels"])
            + ".",
        ]
    return [
        "Give the model this text and read the answer after `Output:`:",
        "",
        "```",
        format_prompt(instruction, "<your input>"),
        "```",
    ]


def format_rows(formats: dict) -> list[list[str]]:
    """The per-format report (`p2m.tasks.ship.export_report.formats_report`) as rows, header first."""
    rows = [["format", "size MB", "exact match", "ms p50", "ms p95"]]
    for name, r in formats.items():
        if name == "teacher":  # it answers concurrently through its endpoint: a mean over the set, not a p50
            rows.append(
                [
                    f"teacher ({r.get('model') or 'LLM'})",
                    "-",
                    f"{r['exact_match']:.1%}",
                    f"{r.get('ms_per_example', '-')} (mean)",
                    "-",
                ]
            )
        else:
            rows.append([name, str(r["size_mb"]), f"{r['exact_match']:.1%}", str(r["ms_p50"]), str(r["ms_p95"])])
    return rows


# Generation's rates, as generation.json names them and the summary shows them.
RATES = {
    "examples_per_minute": "{} examples/min",
    "teacher_tokens_per_s": "teacher {} tokens/s",
    "vote_agreement": "vote agreement {:.0%}",
}


WEAK_LABEL_ACCEPTANCE = 0.3  # below this, a bad definition or two labels the teacher cannot tell apart


def weak_labels(per_label: dict) -> str:
    """Labels whose written inputs the teacher labelled back under WEAK_LABEL_ACCEPTANCE of the
    time, with their rates ("inform (15%), req_more (19%)"); "" when none."""
    weak = [
        (label, stats["acceptance"])
        for label, stats in per_label.items()
        if stats.get("acceptance") is not None and stats["acceptance"] < WEAK_LABEL_ACCEPTANCE
    ]
    return ", ".join(f"{label} ({rate:.0%})" for label, rate in sorted(weak, key=lambda x: x[1]))


def facts(summary: dict) -> list[tuple[str, str]]:
    """(label, text) lines: who taught, what was generated at what cost, where the model is."""
    lines = []
    if summary.get("task_kind"):
        labels = summary.get("labels") or []
        shown = (
            f" ({len(labels)} labels: {', '.join(labels[:8])}{', ...' if len(labels) > 8 else ''})" if labels else ""
        )
        lines.append(("task", f"{summary['task_kind']}{shown}: {summary.get('kind_reason', '')}"))
    if summary.get("teacher_title"):
        lines.append(("teacher", summary["teacher_title"]))
    if summary.get("model_name"):
        size = f" ({summary['student_size_mb']} MB)" if summary.get("student_size_mb") else ""
        lines.append(("student", f"{summary['model_name']}{size}, fine-tuned"))
    usage = summary.get("generation_usage")
    if usage:
        bounds = summary.get("generation_bounds") or {}
        budget = f" of ${bounds['cost_budget_usd']:.2f} budget" if bounds.get("cost_budget_usd") is not None else ""
        cap = f" (cap {bounds['request_cap']})" if bounds.get("request_cap") else ""
        price = "" if usage.get("price_known", True) else " (price unknown for this model)"
        lines.append(
            (
                "generated",
                f"{summary.get('generated', 0)} examples from {usage['requests']} teacher requests{cap} "
                f"({usage['cached']} from cache), {usage['prompt_tokens'] + usage['completion_tokens']} tokens, "
                f"cost ${usage['cost_usd']:.4f}{budget}{price}",
            )
        )
        rates = summary.get("generation_rates") or {}
        shown = [fmt.format(rates[k]) for k, fmt in RATES.items() if rates.get(k) is not None]
        if shown:
            lines.append(("rate", ", ".join(shown)))
        rounds = summary.get("generation_rounds") or []
        if rounds:
            scores = " -> ".join(
                f"{r['validation_accuracy']:.0%}" for r in rounds if r.get("validation_accuracy") is not None
            )
            lines.append(
                ("rounds", f"{len(rounds)}, the quick student's validation accuracy {scores} (generation_rounds.png)")
            )
        lines.append(("stopped", str(summary.get("generation_stop"))))
        weak = weak_labels(summary.get("generation_per_label") or {})
        if weak:
            lines.append(
                (
                    "weak labels",
                    f"the teacher labels back few of the inputs it writes for {weak}: check their definitions in "
                    "generation.json, or give a demonstration of each",
                )
            )
        sources = summary.get("generation_sources") or {}
        if sources.get("your_inputs"):
            lines.append(("sources", ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in sources.items())))
    if summary.get("model"):
        lines += [
            ("model", summary["model"]),
            ("metrics", f"{summary['run_dir']}/metrics.json"),
            ("demo", f"p2m demo {summary['run_dir']}"),
        ]
    if summary.get("demo_url"):
        lines.append(("try it", f"{summary['demo_url']} (the demo page, serving this run's model)"))
    if summary.get("error"):
        where = f"the {summary['failed_stage']} stage: " if summary.get("failed_stage") else ""
        lines.append(("stopped by", where + summary["error"]))
    return lines


def report_sections(summary: dict) -> list[tuple[str, list[list[str]]]]:
    """The whole report as titled tables (each starting with its header row)."""
    stages = [["stage", "state", "seconds"]] + [
        [s["stage"], s["state"], f"{s['seconds']:.1f}"] for s in summary["stages"]
    ]
    stages.append(["total", "", f"{summary['total_seconds']:.1f}"])
    sections = [("Stages", stages)] + score_tables(summary.get("metrics"))
    if summary.get("formats"):
        sections.append((FORMATS_TITLE, format_rows(summary["formats"])))
    if facts(summary):
        sections.append(("Run", [["", ""]] + [list(f) for f in facts(summary)]))
    return sections


def as_text(sections: list[tuple[str, list[list[str]]]]) -> str:
    """Tables laid out in columns for a terminal."""
    out = []
    for title, rows in sections:
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        out.append(f"\n{title}")
        for row in rows if any(rows[0]) else rows[1:]:
            # Numbers line up on the right, words on the left.
            out.append(
                "  "
                + "  ".join(
                    cell.rjust(w) if i and _numeric(cell) else cell.ljust(w)
                    for i, (cell, w) in enumerate(zip(row, widths, strict=False))
                ).rstrip()
            )
    return "\n".join(out)


def _numeric(cell: str) -> bool:
    return bool(cell) and cell.replace(".", "", 1).replace("%", "").replace("-", "", 1).isdigit()


def as_markdown(sections: list[tuple[str, list[list[str]]]]) -> str:
    """Tables as markdown, one heading each."""
    out = []
    for title, rows in sections:
        header, body = rows[0], rows[1:]
        out += ["", f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in body]
    return "\n".join(out).strip()


def summary_text(summary: dict) -> str:
    return as_text(report_sections(summary))


def summary_markdown(summary: dict) -> str:
    """The report for the Prefect UI: where the run folder is (its URL when it has one), then the tables."""
    where = summary.get("location") or summary["run_dir"]
    head = f"# p2m run\n\nRun folder: `{where}`\n\n"
    if where != summary["run_dir"]:
        head += f"The worker's copy: `{summary['run_dir']}`\n\n"
    # The demo's link goes below the tables, once, as a link people click (not also in a table cell).
    markdown = as_markdown(report_sections({**summary, "demo_url": None}))
    if summary.get("demo_url"):
        markdown += f"\n\nTry the model: [{summary['demo_url']}]({summary['demo_url']})"
    return head + markdown


def model_card(instruction: str, train_record: dict, metrics: dict | None, teacher: str | None = None) -> str:
    """The model card: what the model does, how to call it, how it was trained, and its scores."""
    lines = [
        "---",
        "library_name: transformers",
        f"base_model: {train_record['base_model']}",
        "tags: [p2m, prompt2model]",
        "---",
        "# A p2m student model",
        "",
        f"Fine-tuned by [p2m](https://arxiv.org/abs/2308.12261) for this task: {instruction}",
        "",
        "## Use",
        "",
        *use_section(instruction, train_record),
        "",
        "## Training",
        "",
        f"Base model {train_record['base_model']} ({train_record['architecture']}), "
        f"{train_record['train_examples']} examples, "
        f"{train_record['epochs']} epochs, learning rate {train_record['learning_rate']}, "
        f"batch size {train_record['batch_size']}, "
        f"max length {train_record['max_length']} tokens, "
        f"{'LoRA (merged)' if train_record['lora'] else 'full fine-tuning'}, "
        f"on {train_record['device']}: final training loss {train_record['train_loss']}."
        + (f" Training data written by {teacher}." if teacher else ""),
    ]
    tables = [(f"Scores: {title}", rows) for title, rows in score_tables(metrics)] + label_tables(metrics)
    if (metrics or {}).get("formats"):
        tables.append((FORMATS_TITLE, format_rows(metrics["formats"])))
    if tables:
        lines += ["", as_markdown(tables)]
    if metrics and metrics.get("info", {}).get("note"):
        lines += ["", metrics["info"]["note"] + "."]
    return "\n".join(lines) + "\n"


def write_model_card(run_dir: Path, formats: dict | None = None, instruction: str | None = None) -> Path | None:
    """`run_dir/model_card.md` from the run's train.json and metrics.json, the instruction (default:
    spec.json's), and the per-format report when given (None when the run has not been trained):
    its own artifact, so the model folder stays exactly what training saved. Written after
    evaluation and after each export."""
    run_dir = Path(run_dir)
    if not (run_dir / "train.json").exists():
        return None
    metrics = read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").exists() else None
    if formats:
        metrics = (metrics or {}) | {"formats": formats}
    card = model_card(
        instruction or read_json(run_dir / "spec.json")["instruction"],
        read_json(run_dir / "train.json"),
        metrics,
        ((metrics or {}).get("info") or {}).get("teacher"),
    )
    path = run_dir / "model_card.md"
    return write_text(path, card)
