"""Train and evaluate on their own, for a run folder that already has its splits and model choice.

The flow the `gpu` work pool runs; `p2m train RUN_DIR` and `p2m evaluate RUN_DIR` run
its stages alone. The pipeline runs the same two stages through `train_and_evaluate`, with the
same inputs, so each side finds the other's results cached.
"""

from __future__ import annotations

from pathlib import Path

from p2m.flows.run.cache_keys import file_hash
from p2m.flows.run.stage_tasks import evaluate_task, ref, train_task
from p2m.flows.run.tracking import FlowRun, flow_run
from p2m.tasks.core.errors import BadInputError, P2MError
from p2m.tasks.core.run_store import artifact_ref, read_json
from p2m.tasks.core.spec import PromptSpec
from p2m.tasks.storage.remote import pull_folder
from prefect import flow

STAGES = ("train", "evaluate")


def check_run_folder(run_dir: Path, stages) -> None:
    """Raise BadInputError unless `run_dir` holds what the given stages read (made by `p2m run`)."""
    needed = ["spec.json", "splits", "model_choice.json"] + (["model"] if "train" not in stages else [])
    missing = [n for n in needed if not (Path(run_dir) / n).exists()]
    if missing:
        raise BadInputError(f"{run_dir} has no {', '.join(missing)}; run `p2m run PROMPT --out {run_dir}` first")


def train_and_evaluate(
    run: FlowRun, spec: PromptSpec, splits: dict, choice: dict, stages: tuple[str, ...] = STAGES
) -> tuple[dict, dict | None]:
    """Run the train and/or evaluate stages; returns (model ref, metrics or None)."""
    s = run.settings
    if "train" in stages:
        model = ref(
            run.stages.run(
                "train",
                train_task,
                "model",
                splits=splits,
                choice=choice,
                instruction=spec.instruction,
                cfg=s.train,
                run_dir=run.run_dir,
                home=s.home,
            )
        )
    else:
        model = artifact_ref(run.run_dir / "model")
    metrics = None
    if "evaluate" in stages:
        metrics = run.stages.run(
            "evaluate",
            evaluate_task,
            "metrics.json",
            spec=spec,
            splits=splits,
            model=model,
            architecture=choice["architecture"],
            cfg=s.evaluation,
            eval_data_hash=file_hash(s.evaluation.eval_data),
            run_dir=run.run_dir,
            teacher=run.teacher,
        )
    return model, metrics


def train_and_evaluate_on_deployment(run: FlowRun, deployment: str, overrides: dict | None) -> tuple[dict, dict]:
    """Run the train+evaluate flow as `deployment` (on its work pool, e.g. the GPU machine) and wait.

    The child is a subflow of this run in the UI and can be retried alone. It works on the same
    run folder (shared storage); its stage states join this run's summary.
    """
    from prefect.deployments import run_deployment

    # A run folder given as a URL is passed as the URL: the GPU machine works on its own copy of it.
    where = run.location.url if run.location and run.location.url else str(run.run_dir)
    child = run_deployment(deployment, parameters={"run_dir": where, "overrides": overrides}, timeout=None)
    if run.location and run.location.remote:
        pull_folder(run.run_dir, run.location.remote, changed=True)  # what the other machine wrote
    child_summary = (
        read_json(run.run_dir / "summary.json") if (run.run_dir / "summary.json").exists() else {"stages": []}
    )
    run.stages.stages += [{**stage, "via": deployment} for stage in child_summary["stages"]]
    if not child.state or not child.state.is_completed():
        raise P2MError(
            f"train+evaluate on {deployment} ended {child.state.name if child.state else 'without a state'}; "
            f"see flow run {child.name} in the Prefect UI, fix the cause and retry it"
        )
    return artifact_ref(run.run_dir / "model"), read_json(run.run_dir / "metrics.json")


@flow(name="p2m-train-evaluate")
def train_evaluate_flow(run_dir: str, overrides: dict | None = None, stages: list[str] | None = None) -> dict:
    """Train and/or evaluate the run in `run_dir` (which `p2m run` made); returns the summary."""
    with flow_run(None, run_dir, overrides) as run:
        check_run_folder(run.run_dir, stages or STAGES)
        model, metrics = train_and_evaluate(
            run,
            PromptSpec(**read_json(run.run_dir / "spec.json")),
            artifact_ref(run.run_dir / "splits"),
            read_json(run.run_dir / "model_choice.json"),
            tuple(stages or STAGES),
        )
        run.stages.details.update(model=model["path"], metrics=metrics)
    return run.summary
