"""The nightly loop: new data, a retrained candidate, and a promotion gate before it replaces the served model.

    first round:  pipeline -> freeze the test set -> promote model 1
    later rounds: generate (new seed) -> merge with the pool (dedup) -> train candidate
                  -> score served and candidate on the fixed test set -> paired bootstrap
                  -> promote (evaluate, republish demo, restart `p2m serve`) or keep (and say why)

The folder layout is in `p2m.tasks.nightly.promotion`; the gate is `p2m.tasks.nightly.gate`.
"""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

from p2m.flows.generate import NumExamples
from p2m.flows.pipeline import pipeline
from p2m.flows.run.cache_keys import file_hash
from p2m.flows.run.stage_tasks import evaluate_task, generate_task, ref, stage, train_task
from p2m.flows.run.tracking import flow_run, with_options
from p2m.tasks.core.config import load_settings
from p2m.tasks.core.run_store import append_jsonl, artifact_ref, content_hash, dataset_rows, read_json, write_json
from p2m.tasks.core.spec import PromptSpec
from p2m.tasks.nightly import promotion
from p2m.tasks.nightly.gate import paired_bootstrap
from prefect import flow, task


@stage(promotion, retries=0)
def score_task(
    model: dict,
    architecture: str,
    instruction: str,
    test_hash: str,
    test_rows: list[dict],
    batch_size: int,
    max_new_tokens: int,
) -> dict:
    """Per-example exact match of a model (an artifact ref) on the fixed test set."""
    return promotion.score_model(Path(model["path"]), architecture, instruction, test_rows, batch_size, max_new_tokens)


@task
def gate_task(serving: list[int], candidate: list[int], resamples: int, confidence: float, seed: int) -> dict:
    return paired_bootstrap(serving, candidate, resamples, confidence, seed).as_dict()


@flow(name="p2m-nightly")
def nightly_flow(
    prompt_file: str = "",
    out_dir: str = "",
    eval_data: str | None = None,
    datasets_dir: str | None = None,
    num_examples: NumExamples = None,
    fresh_seed: bool = True,
    seed: int | None = None,
    overrides: dict | None = None,
    prompt: str = "",
    inputs: str = "",
) -> dict:
    """One round of the nightly loop for the prompt in the serving folder `out_dir`; returns the round's record.

    Args:
        prompt_file: Path of the prompt file (empty when the prompt is pasted into `prompt`).
        out_dir: The serving run folder (made by the first round).
        eval_data: A real test set, used as the fixed test set (else the first round's held-out split is frozen).
        datasets_dir: Folder of local datasets for the first round's retrieval.
        num_examples: Examples to generate each round.
        fresh_seed: Seed generation with today's date, so each night samples new data.
        seed: An explicit generation seed (wins over fresh_seed).
        overrides: Any other settings, nested by section as in .env.example.
        prompt: The prompt itself, pasted (free text or YAML); give this or prompt_file, not both.
        inputs: Your latest unlabelled inputs (a file with an input column, or one per line; a path or URL): the teacher labels them into each round's new data.
    """  # noqa: E501 - Prefect shows each Args line as one parameter description
    if seed is None and fresh_seed:
        seed = int(datetime.date.today().strftime("%Y%m%d"))
    overrides = with_options(
        overrides,
        generation={"num_examples": num_examples, "seed": seed, "inputs": inputs},
        evaluation={"eval_data": eval_data},
    )
    if datasets_dir:
        overrides["datasets_dir"] = datasets_dir
    out = Path(out_dir).resolve()
    if not promotion.promotions(out):
        return first_round(prompt_file, prompt, out, overrides)
    return later_round(prompt_file, prompt, out, overrides)


def first_round(prompt_file: str, prompt: str, out: Path, overrides: dict) -> dict:
    """Run the whole pipeline, freeze the test set, and promote its model as model 1."""
    summary = pipeline(prompt_file=prompt_file, prompt=prompt, out_dir=str(out), overrides=overrides)

    s = load_settings(overrides)
    test_rows = promotion.freeze_test_set(out, s.evaluation.eval_data)
    spec, choice = PromptSpec(**read_json(out / "spec.json")), read_json(out / "model_choice.json")
    scores = score_task(
        artifact_ref(out / "model"),
        choice["architecture"],
        spec.instruction,
        content_hash(promotion.test_set_path(out)),
        test_rows,
        s.evaluation.batch_size,
        s.evaluation.max_new_tokens,
    )
    record = promotion.promote(out, out / "model", scores, None, "first model")
    restarted = promotion.republish(out, s)
    message = (
        f"round 1: trained and promoted model 1 ({scores['exact_match']:.1%} exact match on the fixed test set of "
        f"{scores['n']}); it is served from {out}/model"
    )
    result = {
        "round": 1,
        "promoted": True,
        "number": 1,
        "message": message,
        "restarted": restarted,
        "pipeline_finished": summary.get("finished"),
    }
    append_jsonl(
        out / promotion.NIGHTLY / "decisions.jsonl", result | {"at": record["at"], "exact_match": scores["exact_match"]}
    )
    report_artifact(None, result, scores, None)
    return result


def later_round(prompt_file: str, prompt: str, out: Path, overrides: dict) -> dict:
    """New data, a candidate trained on the merged pool, the gate, and promote or keep."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    candidate_dir = out / promotion.NIGHTLY / "rounds" / stamp
    with flow_run(prompt_file, str(candidate_dir), overrides, prompt_text=prompt) as run:
        s, stages = run.settings, run.stages
        spec, choice = PromptSpec(**read_json(out / "spec.json")), read_json(out / "model_choice.json")
        write_json(candidate_dir / "spec.json", spec.model_dump())
        test_rows = promotion.freeze_test_set(out, s.evaluation.eval_data)
        test_hash = content_hash(promotion.test_set_path(out))
        generated = stages.run(
            "generate",
            generate_task,
            "generated",
            spec=spec,
            cfg=s.generation,
            run_dir=candidate_dir,
            teacher=run.teacher,
            inputs_hash=file_hash(s.generation.inputs),
        )
        pool, added = promotion.merge_examples(
            promotion.read_pool(out), dataset_rows(Path(generated["path"])), test_rows
        )
        sizes = promotion.write_round_splits(pool, test_rows, candidate_dir, s.process.val_fraction, s.generation.seed)
        model = ref(
            stages.run(
                "train",
                train_task,
                "model",
                splits=artifact_ref(candidate_dir / "splits"),
                choice=choice,
                instruction=spec.instruction,
                cfg=s.train,
                run_dir=candidate_dir,
                home=s.home,
            )
        )
        score = dict(
            architecture=choice["architecture"],
            instruction=spec.instruction,
            test_hash=test_hash,
            test_rows=test_rows,
            batch_size=s.evaluation.batch_size,
            max_new_tokens=s.evaluation.max_new_tokens,
        )
        served = promotion.serving_scores(out, test_rows) or stages.run(
            "score_served", score_task, "splits", model=artifact_ref(out / "model"), **score
        )
        new = stages.run("score_candidate", score_task, "model", model=model, **score)
        decision = gate_task(
            served["correct"], new["correct"], s.nightly.resamples, s.nightly.confidence, s.nightly.seed
        )
        promotion.write_pool(out, pool)
        number = promotion.serving_number(out)
        restarted: list[str] = []
        if decision["promote"]:
            record = promotion.promote(
                out,
                candidate_dir / "model",
                new,
                decision,
                decision["reason"],
                {"train.json": candidate_dir / "train.json", "train_log.jsonl": candidate_dir / "train_log.jsonl"},
            )
            # The served folder's own reports (metrics.json, plots, model card) now describe the new model.
            stages.run(
                "evaluate",
                evaluate_task,
                "metrics.json",
                spec=spec,
                splits=artifact_ref(out / "splits"),
                model=artifact_ref(out / "model"),
                architecture=choice["architecture"],
                cfg=s.evaluation,
                eval_data_hash=file_hash(s.evaluation.eval_data),
                run_dir=out,
                teacher=run.teacher,
            )
            restarted = promotion.republish(out, s)
            message = f"promoted model {record['number']} in place of model {number}: {decision['reason']}"
        else:
            shutil.rmtree(
                candidate_dir / "model", ignore_errors=True
            )  # kept out: its answers and scores stay in the round's record
            message = f"kept model {number}: {decision['reason']}"
        result = {
            "round": stamp,
            "promoted": decision["promote"],
            "number": promotion.serving_number(out),
            "message": message,
            "gate": decision,
            "new_examples": added,
            "pool": len(pool),
            "splits": sizes,
            "restarted": restarted,
            "candidate": str(candidate_dir),
        }
        write_json(candidate_dir / "decision.json", result | {"served_scores": served, "candidate_scores": new})
        append_jsonl(
            out / promotion.NIGHTLY / "decisions.jsonl",
            result | {"at": datetime.datetime.now().isoformat(timespec="seconds")},
        )
        stages.details.update(nightly=result)
        report_artifact(decision, result, new, served)
    return result


def report_artifact(decision: dict | None, result: dict, candidate: dict, served: dict | None) -> None:
    """The round as Prefect artifacts: a table (served vs candidate) and a chart of the interval."""
    try:
        from prefect.artifacts import create_image_artifact, create_table_artifact
    except ImportError:
        return
    rows = [{"model": "candidate", "exact_match_%": round(candidate["exact_match"] * 100, 2), "n": candidate["n"]}]
    if served:
        rows.insert(
            0,
            {
                "model": f"served (model {result['number'] if not result['promoted'] else 'before'})",
                "exact_match_%": round(served["exact_match"] * 100, 2),
                "n": served["n"],
            },
        )
    if decision:
        rows.append(
            {
                "model": "difference (candidate - served)",
                "exact_match_%": decision["difference"],
                "n": (
                    f"{decision['confidence']:.0%} interval [{decision['low']}, {decision['high']}], "
                    f"{decision['resamples']} resamples"
                ),
            }
        )
    try:
        create_table_artifact(rows, key="p2m-nightly-gate", description=result["message"])
        if decision:
            create_image_artifact(gate_chart(decision), key="p2m-nightly-gate-chart", description=result["message"])
    except Exception:  # no Prefect API to write to (a plain call): decisions.jsonl has it all
        pass


def gate_chart(decision: dict) -> str:
    """A PNG (as a data URL) of both models' exact match and the interval of their difference."""
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(7, 3))
    left.bar(
        ["served", "candidate"], [decision["serving_exact_match"], decision["new_exact_match"]], color=["#888", "#3a7"]
    )
    left.set_ylim(0, 100), left.set_ylabel("exact match %"), left.set_title("Fixed test set")
    right.errorbar(
        [0],
        [decision["difference"]],
        yerr=[[decision["difference"] - decision["low"]], [decision["high"] - decision["difference"]]],
        fmt="o",
        capsize=8,
        color="#3a7" if decision["promote"] else "#c44",
    )
    right.axhline(0, color="#444", linewidth=1), right.set_xticks([]), right.set_ylabel("points")
    right.set_title(f"Difference, {decision['confidence']:.0%} interval")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
