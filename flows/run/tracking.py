"""Runs stage tasks for a flow and records, per stage, the state Prefect reported and the seconds.

The record becomes `RUN_DIR/summary.json` and a markdown artifact in the Prefect UI.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from p2m.flows.run.inputs import check_settings_paths, read_run_prompt
from p2m.tasks.core.config import Settings, load_settings
from p2m.tasks.core.errors import BadInputError
from p2m.tasks.core.run_store import check_run_dir, claim_run_dir, write_json, write_text
from p2m.tasks.core.spec import PromptFile, prompt_identity
from p2m.tasks.report.render import summary_markdown
from p2m.tasks.ship.export_report import formats_report
from p2m.tasks.storage.locations import RunLocation, fetch_inputs, in_user_terms, pull_run, run_location
from p2m.tasks.storage.remote import RESULTS_BLOCK, push_folder, run_url
from p2m.tasks.teacher.handle import Teacher


class StageTracker:
    def __init__(self, run_dir: Path, storage_url: str | None = None, remote: str | None = None):
        """With `storage_url` (s3://...), results go to remote storage and the folder is mirrored
        to STORAGE_URL/runs/NAME; with `remote` (a folder URL), the folder is mirrored there instead."""
        self.run_dir = Path(run_dir)
        self.stages: list[dict] = []
        self.details: dict = {}
        self.started = time.monotonic()
        self.storage_url = storage_url
        self.remote = remote
        if remote is None and storage_url:
            self.remote = run_url(storage_url, self.run_dir)
        self.result_storage = None
        if storage_url:
            self.result_storage = results_storage(storage_url)

    def mirror(self) -> None:
        if self.remote and self.run_dir.exists():
            push_folder(self.run_dir, self.remote)

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
        if not state.is_completed():  # the summary of a failed run names the stage; `finish` adds why
            self.details["failed_stage"] = name
        print(f"[p2m] {name}: {state.name} in {seconds:.1f}s", file=sys.stderr, flush=True)
        # Written after every stage, so a run whose machine dies still shows how far it got.
        self.write_summary(finished=False)
        self.mirror()
        return state.result()  # raises the task's exception when it failed

    def write_summary(self, finished: bool) -> dict:
        """Write summary.json (stages so far, and whether the flow got to its end); returns it."""
        summary = {
            "run_dir": str(self.run_dir),
            "location": self.remote or str(self.run_dir),
            "finished": finished,
            "stages": self.stages,
            "total_seconds": round(time.monotonic() - self.started, 1),
            **self.details,
        }
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

            create_markdown_artifact(
                markdown=summary_markdown(summary), key="p2m-summary", description="p2m run summary"
            )
            plot_artifacts(self.run_dir)
        except Exception:  # no flow context (plain call in a test): the JSON file is the record
            pass
        return summary


def export_formats(run_dir: Path) -> dict:
    """{"formats": size, latency and exact match per export format} if the run has exports, else {}."""
    if not (Path(run_dir) / "exports").is_dir():
        return {}

    return {"formats": formats_report(run_dir)}


PLOTS = {
    "loss_curve.png": "Training and validation loss",
    "student_vs_teacher.png": "Held-out metrics: student vs teacher",
}


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


@dataclass
class FlowRun:
    """What every flow starts from: settings, run folder, the prompt file read, the teacher, the tracker.

    `location` says where the run folder is (its URL when it has one); `run_dir` is the copy the
    stages work in on this machine.
    """

    settings: Settings
    run_dir: Path
    prompt: PromptFile | None
    teacher: Teacher
    stages: StageTracker
    summary: dict = field(default_factory=dict)
    location: RunLocation | None = None


def with_options(overrides: dict | None, **sections: dict) -> dict:
    """`overrides` with the flow's form fields merged in (fields left at None or empty are not set)."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in (overrides or {}).items()}
    for section, values in sections.items():
        given = {k: v for k, v in values.items() if v is not None and v != ""}
        if given:
            merged[section] = {**merged.get(section, {}), **given}
    return merged


@contextlib.contextmanager
def flow_run(prompt_file: str | None, out_dir: str | None, overrides: dict | None, prompt_text: str | None = None):
    """Set up a flow run; on exit stop the teacher and write the summary, even after a failure.

    The prompt is `prompt_text` (pasted) or `prompt_file` (a path or URL): exactly one, checked
    with everything else before any work starts. Both None: a flow on an existing run folder
    (train, evaluate), which has no prompt to read. `out_dir` is a path or a URL; empty, the run
    folder is named from the prompt under P2M_RUNS_ROOT. Inputs given as URLs are fetched first.
    """
    settings = load_settings(overrides)
    overrides, fetched = fetch_inputs(overrides or {}, settings.home)
    if fetched:
        settings = load_settings(overrides)
    try:
        prompt = None
        if prompt_file is not None or prompt_text is not None:
            prompt = read_run_prompt(prompt_file, prompt_text, settings.parse.max_prompt_chars)
        location = run_location(out_dir, prompt, settings.home, settings.runs_root, settings.storage_url)
        if location.url:
            fetched[str(location.run_dir)] = location.url
        pull_run(location)  # a machine that lacks the folder continues from its remote copy
        run_dir = location.run_dir
        if prompt is not None:
            check_run_dir(run_dir, prompt_identity(prompt))
            check_settings_paths(settings)
            # Claimed before anything is written: a folder holding another prompt's run is left untouched.
            claim_run_dir(run_dir, prompt_identity(prompt), str(prompt_file) if prompt_file else "(pasted prompt)")
            if not prompt_file:  # the pasted text is kept with the run, as a prompt file would be
                write_text(run_dir / "prompt.txt", prompt.text + "\n")
        else:
            check_settings_paths(settings)
    except BadInputError as e:  # named as the person gave them: URLs, not this machine's copies
        raise BadInputError(in_user_terms(str(e), fetched)) from None
    run = FlowRun(
        settings,
        run_dir,
        prompt,
        Teacher(settings),
        StageTracker(run_dir, settings.storage_url, location.remote),
        location=location,
    )
    error = None
    try:
        yield run
    except BaseException as e:
        error = e
        raise
    finally:
        run.teacher.close()
        run.summary = run.stages.finish(error)


def results_storage(storage_url: str):
    """A saved RemoteFileSystem block for Prefect results under STORAGE_URL/prefect-results."""
    from prefect.filesystems import RemoteFileSystem  # Prefect's blocks load in a second: only with remote storage

    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    block = RemoteFileSystem(
        basepath=f"{storage_url.rstrip('/')}/prefect-results",
        settings={"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {},
    )
    block.save(RESULTS_BLOCK, overwrite=True)
    return block
