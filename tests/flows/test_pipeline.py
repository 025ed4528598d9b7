"""The whole flow on tiny models and a scripted teacher: states, caching, resume after failure, errors."""

import base64
import json

import pytest
from p2m.flows.cli.main import main
from p2m.tasks.core.run_store import read_json

from tests.conftest import DATASETS, EXAMPLE

QUICK = {
    "retrieval": {"max_rows": 60},
    "student": {"model": "tiny-gpt2"},
    "generation": {"num_examples": 6, "batch_size": 2, "examples_per_request": 2, "votes": 2},
    "process": {"max_test_examples": 8},
    "train": {"epochs": 1},
    "evaluation": {"max_new_tokens": 8},
}


def run_pipeline(out, server, monkeypatch, **extra):
    from p2m.flows.pipeline import pipeline

    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    return pipeline(
        prompt_file=str(EXAMPLE), out_dir=str(out), overrides={**QUICK, "datasets_dir": str(DATASETS), **extra}
    )


def states(summary):
    return {s["stage"]: s["state"] for s in summary["stages"]}


def test_run_then_rerun_is_all_cached_and_a_failed_training_resumes(
    tmp_path, prefect_harness, numbers_server, monkeypatch
):
    out = tmp_path / "run"
    summary = run_pipeline(out, numbers_server, monkeypatch)
    assert set(states(summary).values()) == {"Completed"}, summary["stages"]
    for artifact in (
        "spec.json",
        "retrieval.json",
        "generated",
        "generation.jsonl",
        "model_choice.json",
        "splits",
        "model",
        "train_log.jsonl",
        "metrics.json",
        "predictions.jsonl",
        "loss_curve.png",
        "student_vs_teacher.png",
        "demo.json",
    ):
        assert (out / artifact).exists(), artifact
    metrics = read_json(out / "metrics.json")
    assert set(metrics["student"]["held_out"]) >= {"exact_match", "chrf", "bertscore_f1"}
    assert metrics["teacher"]["held_out"]["exact_match"] == 1.0  # the scripted teacher is always right
    assert read_json(out / "summary.json")["stages"] == summary["stages"]
    assert summary["generated"] == 6
    # The plots are Prefect image artifacts too, carrying the PNG itself (the UI needs no access to the folder).
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        plots = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["p2m-loss-curve", "p2m-student-vs-teacher"]))
        )
    images = {a.key: a.data for a in plots if a.type == "image"}
    assert (
        images["p2m-student-vs-teacher"]
        == "data:image/png;base64," + base64.b64encode((out / "student_vs_teacher.png").read_bytes()).decode()
    )
    assert images["p2m-loss-curve"].startswith("data:image/png;base64,")

    # Same command again: nothing runs, the teacher is not asked anything.
    asked = numbers_server.answered
    again = run_pipeline(out, numbers_server, monkeypatch)
    assert set(states(again).values()) == {"Cached"}, again["stages"]
    assert numbers_server.answered == asked

    # A changed training setting fails in training; fixing it re-runs only training onward.
    import p2m.tasks.stages.train

    real = p2m.tasks.stages.train.train_student
    monkeypatch.setattr(
        p2m.tasks.stages.train, "train_student", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("GPU fell off"))
    )
    changed = {**QUICK, "train": {**QUICK["train"], "learning_rate": 1e-4}}
    with pytest.raises(RuntimeError, match="GPU fell off"):
        run_pipeline(out, numbers_server, monkeypatch, **changed)
    failed_summary = read_json(out / "summary.json")
    failed = states(failed_summary)
    assert failed["train"] == "Failed" and failed["process"] == "Cached" and "evaluate" not in failed
    assert failed_summary["finished"] is False and "GPU fell off" in failed_summary["error"]
    monkeypatch.setattr(p2m.tasks.stages.train, "train_student", real)
    resumed = states(run_pipeline(out, numbers_server, monkeypatch, **changed))
    assert [resumed[s] for s in ("parse", "retrieve_datasets", "generate", "retrieve_model", "process")] == [
        "Cached"
    ] * 5
    assert [resumed[s] for s in ("train", "evaluate", "publish_demo")] == ["Completed"] * 3
    # The teacher's answers on the held-out split came from the request cache: no speed is claimed.
    teacher_scores = read_json(out / "metrics.json")["teacher"]["held_out"]
    assert teacher_scores["answers_from_cache"] == teacher_scores["n"] and "ms_per_example" not in teacher_scores

    # The train+evaluate flow on the same folder and settings finds the pipeline's results cached;
    # `p2m evaluate --eval-data` scores a real test set without training again.
    from p2m.flows.train_evaluate import train_evaluate_flow

    alone = train_evaluate_flow(run_dir=str(out), overrides={**changed, "datasets_dir": str(DATASETS)})
    assert states(alone) == {"train": "Cached", "evaluate": "Cached"}
    eval_file = tmp_path / "real.jsonl"
    eval_file.write_text(
        "\n".join(json.dumps({"input": w, "output": d}) for w, d in [("twelve", "12"), ("forty", "40")])
    )
    assert main(["evaluate", str(out), "--eval-data", str(eval_file)]) == 0
    assert states(read_json(out / "summary.json")) == {"evaluate": "Completed"}
    assert read_json(out / "metrics.json")["teacher"]["eval_data"]["n"] == 2


def test_deleted_artifact_is_rebuilt_not_trusted(tmp_path, prefect_harness, numbers_server, monkeypatch):
    import shutil

    out = tmp_path / "run"
    run_pipeline(out, numbers_server, monkeypatch, train={**QUICK["train"], "seed": 7})
    shutil.rmtree(out / "model")
    again = states(run_pipeline(out, numbers_server, monkeypatch, train={**QUICK["train"], "seed": 7}))
    assert again["train"] == "Completed" and again["process"] == "Cached"
    assert (out / "model").exists()


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (lambda d: None, ["missing.txt"], "does not exist"),
        (lambda d: (d / "empty.txt").write_text(""), ["empty.txt"], "is empty"),
        (lambda d: (d / "p.yaml").write_text("demonstrations: []\n"), ["p.yaml"], "instruction"),
    ],
)
def test_cli_bad_prompt_exits_2_with_one_line(tmp_path, capsys, setup, args, message, prefect_harness):
    setup(tmp_path)
    assert main(["run", str(tmp_path / args[0]), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("p2m: error:") and message in err[-1]


def test_cli_unreachable_endpoint_and_missing_key_exit_2(tmp_path, capsys, monkeypatch, prefect_harness):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert main(["run", str(EXAMPLE), "--out", str(tmp_path / "a"), "--datasets-dir", str(DATASETS)]) == 2
    assert "cannot reach the LLM endpoint" in capsys.readouterr().err
    monkeypatch.setenv("OPENAI_BASE_URL", "https://api.openai.com/v1")
    assert main(["run", str(EXAMPLE), "--out", str(tmp_path / "b")]) == 2
    assert "needs a key" in capsys.readouterr().err


def test_cli_refuses_a_folder_holding_another_prompts_run(tmp_path, capsys, prefect_harness):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"spec_hash": "someone-else", "prompt_file": "other.yaml"}))
    assert main(["run", str(EXAMPLE), "--out", str(out)]) == 2
    assert "holds the run of another prompt" in capsys.readouterr().err
    assert (out / "run.json").exists()  # nothing was deleted


def test_generate_command_writes_dataset_and_request_log(
    tmp_path, capsys, prefect_harness, numbers_server, monkeypatch
):
    from p2m.tasks.core.run_store import dataset_rows, read_jsonl

    monkeypatch.setenv("OPENAI_BASE_URL", numbers_server.base_url)
    out = tmp_path / "gen"
    assert (
        main(
            [
                "generate",
                str(EXAMPLE),
                "--out",
                str(out),
                "--num-examples",
                "5",
                "--votes",
                "1",
                "--requests-per-minute",
                "6000",
            ]
        )
        == 0
    )
    assert "5 examples" in capsys.readouterr().out
    rows = dataset_rows(out / "generated")
    assert len(rows) == 5 and all(r["output"].isdigit() for r in rows)
    log = read_jsonl(out / "generation.jsonl")
    # Every request is logged, answered by the server or (from earlier tests' runs) by the cache.
    assert sum(not r["cached"] for r in log) == numbers_server.answered and {r["purpose"] for r in log} == {
        "aspects",
        "generate",
    }  # the variety plan, then the examples


def test_a_person_chooses_the_dataset_in_the_prefect_ui(tmp_path, prefect_harness, numbers_server, monkeypatch):
    """The run pauses with the candidates; the answer (as the UI's form sends it) picks dataset and columns."""
    import threading
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateName
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.flow_runs import resume_flow_run

    out = tmp_path / "run"
    errors: list = []

    def run():
        try:
            run_pipeline(out, numbers_server, monkeypatch, retrieval={**QUICK["retrieval"], "choose": "ui"})
        except Exception as e:  # surfaced below
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    paused = FlowRunFilter(state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Paused"])))
    deadline = time.monotonic() + 120
    with get_client(sync_client=True) as client:
        while (
            not (runs := client.read_flow_runs(flow_run_filter=paused, limit=5, sort=FlowRunSort.START_TIME_DESC))
            and time.monotonic() < deadline
        ):
            time.sleep(0.5)
    assert runs, "the run never paused for a choice"
    resume_flow_run(
        runs[0].id, run_input={"dataset": "celsius_to_fahrenheit", "input_column": "input", "output_column": "output"}
    )
    thread.join(timeout=600)
    assert not errors, errors
    record = read_json(out / "retrieval.json")
    assert record["chosen"] == "celsius_to_fahrenheit" and record["columns_mapped"] == "given"
    assert states(read_json(out / "summary.json"))["rank_datasets"] == "Completed"


def quick_env(monkeypatch, server):
    """The QUICK settings as P2M_* variables, for tests that go through the command line."""
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    for section, values in QUICK.items():
        for name, value in values.items():
            monkeypatch.setenv(f"P2M_{section.upper()}__{name.upper()}", str(value))


def parsing_numbers_teacher(messages, request):
    """The numbers teacher, which also splits a free-text prompt (as a capable LLM would)."""
    from tests.fake_llm_server import numbers_teacher

    if messages[0]["content"].startswith("You split a task prompt"):
        return json.dumps(
            {
                "instruction": "Convert the number written in English words to digits.",
                "language": "ja",
                "demonstrations": [
                    {"input": "three hundred forty-two", "output": "342"},
                    {"input": "seventeen", "output": "17"},
                ],
            }
        )
    return numbers_teacher(messages, request)


@pytest.mark.parametrize(
    "text",
    [
        "英語で書かれた数を数字に直してください。\n\nthree hundred forty-two => 342\nseventeen => 17\n",
        "Convert the number written in English words to digits.\n\n"
        "Input: three hundred forty-two\nOutput: 342\n\nInput: seventeen\nOutput: 17\n",
    ],
)
def test_a_free_text_prompt_runs_on_a_fresh_folder(tmp_path, capsys, prefect_harness, monkeypatch, text):
    from tests.fake_llm_server import FakeLLMServer

    prompt = tmp_path / "prompt.txt"
    prompt.write_text(text, encoding="utf-8")
    out = tmp_path / "fresh" / "run"
    with FakeLLMServer(parsing_numbers_teacher) as server:
        quick_env(monkeypatch, server)
        code = main(["run", str(prompt), "--out", str(out), "--datasets-dir", str(DATASETS), "--num-examples", "6"])
    assert code == 0, capsys.readouterr().err
    spec = read_json(out / "spec.json")
    assert spec["parsed_by"] in ("llm", "rules") and [d["output"] for d in spec["demonstrations"]] == ["342", "17"]
    assert read_json(out / "summary.json")["finished"] is True
    # An English prompt in Input:/Output: blocks is split by rule without asking the teacher; any other by the teacher.
    assert (out / "parse.jsonl").exists() == (spec["parsed_by"] == "llm") and (out / "model").exists()
    assert spec["parsed_by"] == ("rules" if text.startswith("Convert") else "llm")


def test_a_refused_folder_is_left_exactly_as_it_was(tmp_path, capsys, prefect_harness, numbers_server, monkeypatch):
    out = tmp_path / "run"
    run_pipeline(out, numbers_server, monkeypatch)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    other = tmp_path / "b.yaml"
    other.write_text("instruction: Reverse the text.\ndemonstrations:\n  - input: abc\n    output: cba\n")
    assert main(["run", str(other), "--out", str(out)]) == 2
    assert "holds the run of another prompt" in capsys.readouterr().err
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()} == before
    assert read_json(out / "summary.json")["finished"] is True
