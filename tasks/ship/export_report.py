"""Per-format evaluation report: size, CPU latency at batch 1 and exact match of each export, next to the teacher's.

Input: a run folder's `exports/` (reference.json for the safetensors model, `<format>-<quant>/export.json`
for each export made from the current model) and `metrics.json` (the teacher's held-out scores).
Output, all additive to what evaluation writes: a `formats` section in `metrics.json` and in
`summary.json`, which the report module renders (terminal, Prefect artifact, model card). Run
after every export.
"""

from __future__ import annotations

from pathlib import Path

from p2m.tasks.core.run_store import content_hash, read_json, write_json
from p2m.tasks.report.render import write_model_card


def model_hash(run_dir: Path) -> str:
    """The identity of the run's current model (its card, rewritten by evaluation, left out)."""
    return content_hash(Path(run_dir) / "model")


def formats_report(run_dir: Path) -> dict:
    """{name: {size_mb, exact_match, ms_p50, ms_p95, n}} for the original model, each current export and the teacher."""
    run_dir = Path(run_dir)
    exports = run_dir / "exports"
    current = model_hash(run_dir)
    report: dict = {}
    reference = exports / "reference.json"
    if reference.exists() and (ref := read_json(reference)).get("model_hash") == current:
        report["safetensors"] = {k: ref[k] for k in ("size_mb", "exact_match", "ms_p50", "ms_p95", "n")}
    for record_path in sorted(exports.glob("*/export.json")):
        record = read_json(record_path)
        if record.get("model_hash") == current:  # exports of an earlier model (before a promotion) are left out
            report[record_path.parent.name] = {
                k: record[k] for k in ("size_mb", "exact_match", "ms_p50", "ms_p95", "n")
            }
    metrics = run_dir / "metrics.json"
    teacher = read_json(metrics).get("teacher", {}).get("held_out") if metrics.exists() else None
    if teacher:
        # The teacher answers concurrently through its endpoint: its figure is ms per example over the set, not a p50.
        report["teacher"] = {
            "size_mb": None,
            "exact_match": teacher["exact_match"],
            "ms_per_example": teacher.get("ms_per_example"),
            "n": teacher["n"],
            "model": teacher.get("model"),
        }
    return report


def update_reports(run_dir: Path) -> dict:
    """Write the report into metrics.json, summary.json and the model card; returns it."""
    run_dir = Path(run_dir)
    report = formats_report(run_dir)
    for name in ("metrics.json", "summary.json"):
        path = run_dir / name
        if path.exists():
            write_json(path, read_json(path) | {"formats": report})
    write_model_card(run_dir, report)
    return report
