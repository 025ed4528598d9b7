"""A label task end to end on a scripted teacher: read as classification, data made per label and
checked, the user's own inputs labelled first and held out, an encoder classifier student."""

from __future__ import annotations

import itertools

from p2m.tasks.core.run_store import read_json, read_jsonl

from tests.conftest import REPO
from tests.fake_llm_server import FakeLLMServer, ticket_teacher

PROMPT = REPO / "examples" / "ticket_classification.txt"


def test_a_ticket_prompt_becomes_a_classifier_trained_on_checked_labels(tmp_path, prefect_harness, monkeypatch):
    from p2m.flows.pipeline import pipeline
    from p2m.tasks.report.render import summary_text

    inputs = tmp_path / "tickets.txt"
    inputs.write_text(
        "".join(
            f"ticket {i}: my invoice is wrong\nticket {i}: crash on save\nticket {i}: I wish for tags\n"
            for i in range(6)
        )
        + "maybe it is fine\n",
        encoding="utf-8",
    )
    ticket_teacher.counter = itertools.count()
    with FakeLLMServer(ticket_teacher, model="ticket-teacher-e2e") as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("P2M_TEACHER_MODEL", server.model)
        summary = pipeline(
            prompt_file=str(PROMPT),
            out_dir=str(tmp_path / "run"),
            inputs=str(inputs),
            overrides={
                "student": {"model": "tiny-bert"},
                "generation": {"num_examples": 12, "batch_size": 3, "examples_per_request": 3},
                "process": {"max_test_examples": 6},
                "train": {"epochs": 2},
            },
        )
    run = tmp_path / "run"
    spec = read_json(run / "spec.json")
    assert spec["kind"] == "classification" and spec["labels"] == ["billing", "bug", "feature request"]
    choice = read_json(run / "model_choice.json")
    assert choice["architecture"] == "encoder-classifier" and choice["labels"] == spec["labels"]
    generation = read_json(run / "generation.json")
    assert generation["sources"]["your_inputs"] == 18 and generation["rejected"]["unsettled_input"] == 1
    assert set(generation["label_definitions"]) == set(spec["labels"])
    import datasets

    splits = datasets.load_from_disk(str(run / "splits"))
    assert set(splits["test"]["source"]) == {"your_inputs"}  # held out from the user's own inputs first
    assert set(splits["train"]["output"]) <= set(spec["labels"])
    predictions = read_jsonl(run / "predictions.jsonl")
    assert {p["student"] for p in predictions} <= set(spec["labels"])  # a classifier answers only with labels
    text = summary_text(summary)
    assert "classification (3 labels: billing, bug, feature request)" in text and "18 your inputs" in text
