"""Runs stage tasks for a flow and records, per stage, the state Prefect reported and the seconds.

The record becomes `RUN_DIR/summary.json` and a markdown artifact in the Prefect UI.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from p2m.tasks.config import Settings, load_settings
from p2m.tasks.inputs import check_run_inputs, check_settings_paths
from p2m.tasks.parse import PromptFile, prompt_identity
from p2m.tasks.run_store import claim_run_dir, write_json
from p2m.tasks.teacher import Teacher


class StageTracker:
    def __init__(self, run_dir: Path, storage_url: str | None = None):
        """With `storage_url` (s3://...), results go to remote storage and the folder is mirrored there."""
        self.run_dir = Path(run_dir)
        self.stages: list[dict] = []
        self.details: dict = {}
        self.started = time.monotonic()
        self.storage_url = storage_url
        self.result_storage = None
        if storage_url:
            from p2m.tasks.storage import results_storage

            self.result_storage = results_storage(storage_url)

    def mirror(self) -> None:
        if self.storage_url and self.run_dir.exists():
            from p2m.tasks.storage import push

            push(self.run_dir, self.storage_url)

    def run(self, name: str, task, artifact: str, **params):
        """Call `task(**params)`; returns its result or raises its error after recording the state.

        A cache record whose artifact was deleted from the run folder is not trusted: the stage
        runs again (refresh_cache) instead of handing later stages a path to nothing.
        """
        if not (self.run_dir / artifact).exists():
            task = task.with_options(refresh_cache=True)
        if self.result_storage is not None:
            task = task.with_options(result_storage=self.result_storage)
        print(f"[p2m] {name} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        state = task(**params, return_state=True)
        seconds = round(time.monotonic() - started, 2)
        self.stages.append({"stage": name, "state": state.name, "seconds": seconds})
        print(f"[p2m] {name}: {state.name} in {seconds:.1f}s", file=sys.stderr, flush=True)
        # Written after every stage, so a run whose machine dies still shows how far it got.
        self.write_summary(finished=False)
        self.mirror()
        return state.result()  # raises the task's exception when it failed

    def write_summary(self, finished: bool) -> dict:
        """Write summary.json (stages so far, and whether the flow got to its end); returns it."""
        summary = {"run_dir": str(self.run_dir), "finished": finished, "stages": self.stages,
                   "total_seconds": round(time.monotonic() - self.started, 1), **self.details}
        summary.update(export_formats(self.run_dir))  # `p2m export`'s per-format report, once the run has exports
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.run_dir / "summary.json", summary)
        return summary

    def finish(self, error: BaseException | None = None) -> dict:
        """Write the final summary.json and the Prefect markdown artifact; returns the summary.

        `error` is what ended the run early, if anything: the summary then says `finished: false`
        and why.
        """
        if error is not None:
            self.details["error"] = str(error) or error.__class__.__name__
        summary = self.write_summary(finished=error is None)
        self.mirror()
        try:
            from prefect.artifacts import create_markdown_artifact

            create_markdown_artifact(markdown=summary_markdown(summary), key="p2m-summary", description="p2m run summary")
            plot_artifacts(self.run_dir)
        except Exception:  # no flow context (plain call in a test): the JSON file is the record
            pass
        return summary


def export_formats(run_dir: Path) -> dict:
    """{"formats": size, latency and exact match per export format} if the run has exports, else {}."""
    if not (Path(run_dir) / "exports").is_dir():
        return {}
    from p2m.tasks.export_report import formats_report

    return {"formats": formats_report(run_dir)}


PLOTS = {"loss_curve.png": "Training and validation loss", "student_vs_teacher.png": "Held-out metrics: student vs teacher"}


def plot_artifacts(run_dir: Path) -> list[str]:
    """The run's PNG plots as Prefect image artifacts; returns the keys made.

    The image travels inside the artifact as a data URL (a 30-60 KB PNG), so the UI shows it
    without access to the run folder or a bucket.
    """
    import base64

    from prefect.artifacts import create_image_artifact

    keys = []
    for name, description in PLOTS.items():
        if (run_dir / name).exists():
            key = "p2m-" + name.removesuffix(".png").replace("_", "-")
            data = base64.b64encode((run_dir / name).read_bytes()).decode()
            create_image_artifact(f"data:image/png;base64,{data}", key=key, description=description)
            keys.append(key)
    return keys


def summary_markdown(summary: dict) -> str:
    """The summary as a markdown report: stages, then student vs teacher per test set."""
    lines = ["# p2m run", "", f"Run folder: `{summary['run_dir']}`", "", "| stage | state | seconds |", "|---|---|---|"]
    lines += [f"| {s['stage']} | {s['state']} | {s['seconds']:.1f} |" for s in summary["stages"]]
    metrics = summary.get("metrics") or {}
    for test_set, student in (metrics.get("student") or {}).items():
        teacher = (metrics.get("teacher") or {}).get(test_set, {})
        lines += ["", f"## {test_set} ({student['n']} examples)", "", "| metric | student | teacher |", "|---|---|---|"]
        for m in ("exact_match", "chrf", "bertscore_f1", "ms_per_example"):
            lines.append(f"| {m} | {student.get(m, '')} | {teacher.get(m, '')} |")
    usage = summary.get("generation_usage")
    if usage:
        lines += ["", f"Generated {summary.get('generated')} examples from {usage['requests']} teacher requests ({usage['cached']} from cache), "
                  f"cost ${usage['cost_usd']:.4f}. Stopped: {summary.get('generation_stop')}"]
    if summary.get("formats"):  # exports of the current model (p2m export)
        from p2m.tasks.export_report import CARD_HEADING, format_table

        lines += ["", CARD_HEADING, "", *format_table(summary["formats"])]
    if summary.get("model"):
        lines += ["", f"Model: `{summary['model']}`", "", f"Demo: `p2m demo {summary['run_dir']}`"]
    return "\n".join(lines)


@dataclass
class FlowRun:
    """What every flow starts from: settings, run folder, the prompt file read, the teacher, the tracker."""

    settings: Settings
    run_dir: Path
    prompt: PromptFile | None
    teacher: Teacher
    stages: StageTracker
    summary: dict = field(default_factory=dict)


def with_options(overrides: dict | None, **sections: dict) -> dict:
    """`overrides` with the flow's form fields merged in (fields left at None are not set)."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in (overrides or {}).items()}
    for section, values in sections.items():
        given = {k: v for k, v in values.items() if v is not None}
        if given:
            merged[section] = {**merged.get(section, {}), **given}
    return merged


@contextlib.contextmanager
def flow_run(prompt_file: str | None, out_dir: str, overrides: dict | None):
    """Set up a flow run; on exit stop the teacher and write the summary, even after a failure."""
    settings = load_settings(overrides)
    run_dir = Path(out_dir).resolve()
    if settings.storage_url:
        from p2m.tasks.storage import pull

        pull(run_dir, settings.storage_url)  # a machine that lacks the folder continues from storage
    prompt = None
    if prompt_file:
        prompt = check_run_inputs(settings, Path(prompt_file), run_dir)
        # Claimed before anything is written: a folder holding another prompt's run is left untouched.
        claim_run_dir(run_dir, prompt_identity(prompt), str(prompt_file))
    else:
        check_settings_paths(settings)
    run = FlowRun(settings, run_dir, prompt, Teacher(settings), StageTracker(run_dir, settings.storage_url))
    error = None
    try:
        yield run
    except BaseException as e:
        error = e
        raise
    finally:
        run.teacher.close()
        run.summary = run.stages.finish(error)
