"""The nightly loop on a Prefect test server: round 1 trains and promotes, round 2 learns and is promoted,
round 3 has nothing new to learn and keeps the served model; then `p2m rollback`."""

from __future__ import annotations

import json

import pytest
from p2m.flows.cli.main import main
from p2m.tasks.core.errors import BadInputError
from p2m.tasks.core.run_store import content_hash, read_json, read_jsonl

from tests.fake_llm_server import FakeLLMServer


def hello_teacher(messages, request):
    """Writes new examples of the "say hello" task (a fresh made-up word each time) and answers "hello"."""
    prompt = messages[-1]["content"]
    if "Write one new example" in prompt:
        hello_teacher.counter += 1
        return json.dumps({"input": f"gen{2 * hello_teacher.counter}word", "output": "hello"})  # even numbers
    return "hello"


hello_teacher.counter = 0

BASE = {
    "retrieval": {"model": "tiny-gpt2", "dataset": "none"},
    "generation": {"num_examples": 30, "batch_size": 10, "votes": 1},
    "evaluation": {"max_new_tokens": 8},
}
WEAK = {**BASE, "train": {"epochs": 1, "learning_rate": 1e-6}}  # round 1: learns nothing yet
STRONG = {**BASE, "train": {"epochs": 15, "learning_rate": 3e-3}}  # later rounds: learns to say hello


@pytest.mark.slow  # three rounds with training: 90 s on 2 quiet cores, 3 minutes on busy ones
def test_nightly_promotes_once_keeps_once_and_rolls_back(tmp_path, prefect_harness, monkeypatch, capsys):
    import p2m.tasks.nightly.promotion as promotion_module  # republish restarts through these names
    from p2m.flows.nightly import nightly_flow

    prompt = tmp_path / "hello.yaml"
    prompt.write_text("instruction: Say hello.\ndemonstrations:\n  - input: abc\n    output: hello\n")
    eval_data = tmp_path / "test.jsonl"
    eval_data.write_text(
        "".join(json.dumps({"input": f"gen{2 * i + 1}word", "output": "hello"}) + "\n" for i in range(20))
    )
    out = tmp_path / "serving"
    hello_teacher.counter = 0
    restarts = []
    with FakeLLMServer(hello_teacher) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        first = nightly_flow(
            prompt_file=str(prompt), out_dir=str(out), eval_data=str(eval_data), seed=1, overrides=WEAK
        )
        assert first["promoted"] and first["number"] == 1 and (out / "promoted" / "1" / "model").exists()
        assert read_json(out / "nightly" / "test_set.json")["n"] == 20
        first_em = read_jsonl(out / "promotions.jsonl")[0]["exact_match"]
        # From now on a student server p2m started serves this folder: a promotion must restart it, keeping it must not.
        monkeypatch.setattr(promotion_module, "running_server", lambda home, port: {"run_dir": str(out.resolve())})
        monkeypatch.setattr(
            promotion_module,
            "publish_student",
            lambda run_dir, home, cfg: restarts.append(str(run_dir)) or {"base_url": "http://127.0.0.1:8080/v1"},
        )

        second = nightly_flow(
            prompt_file=str(prompt), out_dir=str(out), eval_data=str(eval_data), seed=2, overrides=STRONG
        )
        assert second["promoted"] and second["number"] == 2, second["message"]
        assert second["gate"]["low"] > 0 and second["new_examples"] > 0
        assert content_hash(out / "model") == content_hash(out / "promoted" / "2" / "model")
        assert (
            read_json(out / "metrics.json")["student"]["eval_data"]["exact_match"] > first_em
        )  # reports describe the new model
        assert restarts == [str(out.resolve())]

        # Same seed again, through the command line: the teacher's answers replay from the request cache,
        # nothing new joins the pool, the candidate is the same model: the served one stays.
        for section, values in STRONG.items():
            for key, value in values.items():
                monkeypatch.setenv(f"P2M_{section.upper()}__{key.upper()}", str(value))
        assert main(["nightly", str(prompt), "--out", str(out), "--eval-data", str(eval_data), "--seed", "2"]) == 0
        assert "\nkept model 2: no difference" in capsys.readouterr().out  # after the trainer's log lines
        third = read_jsonl(out / "nightly" / "decisions.jsonl")[-1]
    assert not third["promoted"] and third["number"] == 2 and third["new_examples"] == 0
    assert third["gate"]["low"] <= 0 and third["message"].startswith("kept model 2: ")
    assert not (tmp_path / third["candidate"] / "model").exists() and restarts == [str(out.resolve())]
    decisions = read_jsonl(out / "nightly" / "decisions.jsonl")
    assert [d["promoted"] for d in decisions] == [True, True, False]
    assert [e["number"] for e in read_jsonl(out / "promotions.jsonl")] == [1, 2]
    pool = read_jsonl(out / "nightly" / "pool.jsonl")
    assert len({r["input"].lower() for r in pool}) == len(pool) and not {r["input"] for r in pool} & {
        f"gen{2 * i + 1}word" for i in range(20)
    }

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["p2m-nightly-gate", "p2m-nightly-gate-chart"]))
        )
    assert {a.type for a in artifacts} >= {"table", "image"}

    # Rollback: model 1 is served again; there is nothing before model 1.
    assert main(["rollback", str(out)]) == 0
    assert "serving model 1 again" in capsys.readouterr().out
    assert content_hash(out / "model") == content_hash(out / "promoted" / "1" / "model")
    last = read_jsonl(out / "promotions.jsonl")[-1]
    assert (last["event"], last["number"], last["from"]) == ("rollback", 1, 2)
    assert main(["rollback", str(out)]) == 2
    assert "no earlier one" in capsys.readouterr().err


def test_merge_dedups_and_keeps_test_inputs_out():
    from p2m.tasks.nightly.promotion import merge_examples

    pool = [{"input": "One", "output": "1", "source": "retrieved"}]
    new = [{"input": "one ", "output": "2"}, {"input": "two", "output": "2"}, {"input": "Three", "output": "3"}]
    merged, added = merge_examples(pool, new, [{"input": "three", "output": "3"}])
    assert merged == [
        {"input": "One", "output": "1", "source": "retrieved"},
        {"input": "two", "output": "2", "source": "generated"},
    ]
    assert added == 1


def test_a_test_input_that_differs_only_in_punctuation_stays_out_of_the_pool():
    """The pool is keyed as the process stage deduplicates (`dedup.normalise`): no test contamination."""
    from p2m.tasks.nightly.promotion import merge_examples

    merged, added = merge_examples(
        [], [{"input": "Three, please!", "output": "3"}], [{"input": "three please", "output": "3"}]
    )
    assert merged == [] and added == 0


def test_republish_uses_the_callers_settings(tmp_path, monkeypatch):
    """Ports given to the nightly flow (its overrides) are where republish looks, not the defaults."""
    import p2m.tasks.nightly.promotion as promotion_module
    from p2m.tasks.core.config import load_settings

    seen = []
    monkeypatch.setattr(promotion_module, "running_server", lambda home, port: seen.append(("serve", port)))
    monkeypatch.setattr(
        promotion_module,
        "demo_slot",
        lambda home, port: seen.append(("demo", port)) or type("S", (), {"running": lambda self: None})(),
    )
    settings = load_settings({"serve": {"port": 9191}, "demo_port": 7171, "home": str(tmp_path)})
    assert promotion_module.republish(tmp_path, settings) == []
    assert seen == [("serve", 9191), ("demo", 7171)]


def test_rollback_needs_a_nightly_folder(tmp_path, capsys):
    assert main(["rollback", str(tmp_path)]) == 2
    assert "p2m nightly" in capsys.readouterr().err


def fake_model(folder, weights: bytes):
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "config.json").write_text("{}")
    return folder


def test_promotions_are_kept_served_whole_and_rolled_back_in_order(tmp_path):
    from p2m.tasks.nightly import promotion

    run = tmp_path / "run"
    fake_model(run / "model", b"one")

    def scores(folder):
        return {"model_hash": content_hash(folder), "exact_match": 0.5, "n": 2, "correct": [1, 0]}

    first = promotion.promote(run, run / "model", scores(run / "model"), None, "first model")
    assert (first["number"], promotion.serving_number(run)) == (1, 1) and (
        run / "promoted" / "1" / "model" / "model.safetensors"
    ).exists()
    candidate = fake_model(tmp_path / "round" / "model", b"two")
    (tmp_path / "round" / "train.json").write_text('{"epochs": 3}')
    second = promotion.promote(
        run, candidate, scores(candidate), {"low": 10.0}, "better", {"train.json": tmp_path / "round" / "train.json"}
    )
    assert second["number"] == 2 and not candidate.exists()  # moved into the archive, not copied
    assert (run / "model" / "model.safetensors").read_bytes() == b"two" and read_json(run / "train.json") == {
        "epochs": 3
    }
    assert promotion.serving_scores(run, [{}, {}])["model_hash"] == second["model_hash"]  # reused, not recomputed
    assert not list(run.glob(".model.*"))  # the swap leaves nothing behind
    record = promotion.rollback(run)
    assert (record["number"], record["from"]) == (1, 2) and (run / "model" / "model.safetensors").read_bytes() == b"one"
    assert [e["event"] for e in promotion.promotions(run)] == [
        "promote",
        "promote",
        "rollback",
    ] and promotion.serving_number(run) == 1
    third = promotion.promote(
        run, fake_model(tmp_path / "r3" / "model", b"three"), scores(tmp_path / "r3" / "model"), None, "better"
    )
    assert third["number"] == 3  # numbers are never reused after a rollback
    assert promotion.rollback(run)["number"] == 1  # 2 was rolled back already: before 3 came 1
    with pytest.raises(BadInputError, match="no earlier one"):
        promotion.rollback(run)


def test_the_test_set_is_frozen_at_the_first_round(tmp_path):
    from p2m.tasks.nightly.promotion import freeze_test_set

    data = tmp_path / "eval.jsonl"
    data.write_text('{"input": "a", "output": "1"}\n{"input": "b", "output": "2"}\n')
    assert [r["input"] for r in freeze_test_set(tmp_path / "run", data)] == ["a", "b"]
    data.write_text('{"input": "c", "output": "3"}\n')
    assert [r["input"] for r in freeze_test_set(tmp_path / "run", data)] == [
        "a",
        "b",
    ]  # later changes do not move the goalposts


@pytest.mark.parametrize("lost", ["model", "scores.json"])
def test_rollback_to_a_model_whose_saved_copy_is_gone_is_one_line_and_changes_nothing(tmp_path, capsys, lost):
    """promoted/1 lost (its model or its scores): exit 2 with one line; model 2 stays served (it was a traceback)."""
    import shutil

    from p2m.tasks.nightly import promotion

    run = tmp_path / "run"
    fake_model(run / "model", b"one")
    for n, weights in ((1, b"one"), (2, b"two")):
        model = run / "model" if n == 1 else fake_model(tmp_path / f"r{n}" / "model", weights)
        promotion.promote(run, model, {"model_hash": content_hash(model), "exact_match": 0.5, "n": 2}, None, "ok")
    target = run / "promoted" / "1" / lost
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    events = (run / "promotions.jsonl").read_text()
    assert main(["rollback", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot roll back to model 1" in err[0] and "model 2 is still served" in err[0], err
    assert (run / "model" / "model.safetensors").read_bytes() == b"two"
    assert (run / "promotions.jsonl").read_text() == events
