"""The encoder-classifier student: training, calibration, evaluation, ONNX export, serving and the
demo, on a tiny BERT built from a config (random start: the code paths, learned in seconds), and
once on the real embedded MiniLM."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from p2m.tasks.core.config import ClassifierTrainConfig, EvalConfig, ServeConfig, Settings, TrainConfig
from p2m.tasks.core.errors import BadInputError
from p2m.tasks.core.run_store import read_json, read_jsonl, rows_to_dataset, write_json
from p2m.tasks.stages.train import train_student
from p2m.tasks.student.classifier import (
    TEMPERATURE_KEY,
    closed_label_set,
    expected_calibration_error,
    fit_temperature,
    label_report,
    nll,
    probabilities_from_logits,
)
from p2m.tasks.student.inference import generate_outputs, load_model

LABELS = ["red", "green", "blue", "purple"]  # purple has no examples: the head still has its output
LETTERS = {"red": "xy", "green": "qw", "blue": "zk"}
INSTRUCTION = "Which colour does this string stand for?"


def toy_rows(n: int, seed: int) -> list[dict]:
    """`n` strings whose letters give their label away (a byte-level tiny BERT separates them in seconds)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = ["red", "green", "blue"][i % 3]
        text = "".join(rng.choice(LETTERS[label]) for _ in range(rng.randint(4, 12)))
        rows.append({"input": text, "output": label, "source": "generated"})
    return rows


def save_splits(folder, train: list[dict], validation: list[dict], test: list[dict]) -> None:
    import datasets

    columns = ("input", "output", "source")
    datasets.DatasetDict(
        {
            "train": rows_to_dataset(train, columns),
            "validation": rows_to_dataset(validation, columns),
            "test": rows_to_dataset(test, columns),
        }
    ).save_to_disk(str(folder / "splits"))


def make_label_run(folder, name: str = "tiny-bert", cfg: TrainConfig | None = None, sizes=(60, 15, 15)) -> dict:
    """A run folder (splits, spec, model choice, trained model) for the toy colour task; returns train.json."""
    save_splits(folder, toy_rows(sizes[0], 0), toy_rows(sizes[1], 1), toy_rows(sizes[2], 2))
    choice = {"name": name, "path": f"embedded:{name}", "architecture": "encoder-classifier", "labels": LABELS}
    cfg = cfg or TrainConfig(epochs=15, learning_rate=3e-3)  # a random tiny encoder needs a big step
    record = train_student(folder / "splits", choice, INSTRUCTION, cfg, folder, Settings().home)
    demos = [{"input": "xyxy", "output": "red"}, {"input": "qwqw", "output": "green"}]
    write_json(folder / "spec.json", {"instruction": INSTRUCTION, "demonstrations": demos})
    write_json(folder / "model_choice.json", choice)
    return record


@pytest.fixture(scope="module")
def label_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classifier") / "run"
    folder.mkdir()
    return folder, make_label_run(folder)


def test_training_separates_the_labels_and_saves_a_calibrated_classifier(label_run):
    run, record = label_run
    assert record["architecture"] == "encoder-classifier" and record["labels"] == LABELS
    assert record["label_counts"] == {"red": 20, "green": 20, "blue": 20, "purple": 0}
    assert record["best_eval_accuracy"] == 1.0 and record["steps"] > 0 and not record["resumed"]
    calibration = record["calibration"]
    assert calibration["validation_examples"] == 15 and calibration["nll_after"] <= calibration["nll_before"]
    assert {"ece_before", "ece_after", "temperature"} <= set(calibration)
    assert read_json(run / "train.json") == record
    log = read_jsonl(run / "train_log.jsonl")
    assert any("eval_accuracy" in e for e in log) and any("loss" in e for e in log)
    config = json.loads((run / "model" / "config.json").read_text())
    assert config[TEMPERATURE_KEY] == pytest.approx(calibration["temperature"], abs=1e-3)
    assert [config["id2label"][str(i)] for i in range(4)] == LABELS

    model, tokenizer = load_model(run / "model", "encoder-classifier")
    inputs = [r["input"] for r in toy_rows(15, 2)]
    answers = generate_outputs(model, tokenizer, "encoder-classifier", INSTRUCTION, inputs, batch_size=4)
    assert answers == [r["output"] for r in toy_rows(15, 2)]


def test_predictions_are_labels_with_probabilities_summing_to_one(label_run):
    from p2m.tasks.student.runtime import TorchStudent

    run, _ = label_run
    student = TorchStudent(run / "model", "encoder-classifier", INSTRUCTION, max_tokens=16)
    answer = student.predict("zkzkzz")
    assert answer.text == "blue" and answer.completion_tokens == 1 and answer.prompt_tokens > 0
    assert set(answer.probabilities) == set(LABELS)
    assert sum(answer.probabilities.values()) == pytest.approx(1.0)
    assert max(answer.probabilities, key=answer.probabilities.get) == "blue"


def test_temperature_scaling_lowers_nll_on_an_overconfident_set():
    # Logits of 8 on the predicted class, right 70% of the time: far more confident than accurate.
    gen = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 3, (300,), generator=gen)
    wrong = (targets + torch.randint(1, 3, (300,), generator=gen)) % 3
    predicted = torch.where(torch.rand(300, generator=gen) < 0.7, targets, wrong)
    logits = torch.nn.functional.one_hot(predicted, 3).float() * 8.0
    temperature = fit_temperature(logits, targets)
    assert temperature > 2.0  # softened
    assert nll(logits, targets, temperature) < nll(logits, targets) - 1.0
    before = expected_calibration_error(probabilities_from_logits(logits.numpy()), targets.numpy())
    after = expected_calibration_error(probabilities_from_logits(logits.numpy(), temperature), targets.numpy())
    assert after < before and after < 0.05
    # The argmax, so accuracy, is unchanged by a temperature.
    assert (probabilities_from_logits(logits.numpy(), temperature).argmax(1) == predicted.numpy()).all()


def test_the_classifier_defaults_give_way_to_what_the_user_set():
    assert ClassifierTrainConfig.from_train(TrainConfig()) == ClassifierTrainConfig()
    assert ClassifierTrainConfig().learning_rate == 1e-4 and ClassifierTrainConfig().batch_size == 8
    tuned = ClassifierTrainConfig.from_train(TrainConfig(epochs=4, learning_rate=3e-4, seed=7))
    assert (tuned.epochs, tuned.learning_rate, tuned.seed, tuned.batch_size) == (4, 3e-4, 7, 8)
    # Through JSON (a training deployment, DDP processes) every field comes back set: same result.
    again = TrainConfig(**json.loads(TrainConfig(epochs=4).model_dump_json()))
    assert ClassifierTrainConfig.from_train(again).learning_rate == 1e-4


def test_a_choice_without_labels_is_refused(tmp_path):
    save_splits(tmp_path, toy_rows(6, 0), toy_rows(3, 1), toy_rows(3, 2))
    choice = {"name": "tiny-bert", "path": "embedded:tiny-bert", "architecture": "encoder-classifier"}
    with pytest.raises(BadInputError, match="needs the task's label set"):
        train_student(tmp_path / "splits", choice, INSTRUCTION, TrainConfig(), tmp_path, Settings().home)


def test_training_resumes_and_outputs_outside_the_labels_are_dropped(tmp_path):
    rows = toy_rows(30, 0) + [{"input": "xyz", "output": "Magenta", "source": "generated"}]
    rows[0]["output"] = " RED "  # case and spaces folded: still red
    save_splits(tmp_path, rows, toy_rows(6, 1), toy_rows(6, 2))
    choice = {"name": "tiny-bert", "path": "embedded:tiny-bert", "architecture": "encoder-classifier", "labels": LABELS}
    cfg = TrainConfig(epochs=1, learning_rate=3e-3)
    first = train_student(tmp_path / "splits", choice, INSTRUCTION, cfg, tmp_path, Settings().home)
    assert first["dropped_examples"] == {"train": 1, "validation": 0} and first["train_examples"] == 30
    again = train_student(tmp_path / "splits", choice, INSTRUCTION, cfg, tmp_path, Settings().home)
    assert again["resumed"] and again["steps"] == first["steps"]


def test_evaluation_scores_each_label_and_draws_the_confusion_matrix(label_run, tmp_path):
    from p2m.tasks.core.spec import PromptSpec
    from p2m.tasks.report.render import write_model_card
    from p2m.tasks.stages.evaluate import evaluate_run

    run, _ = label_run
    spec = PromptSpec(instruction=INSTRUCTION, demonstrations=[])
    metrics = evaluate_run(spec, run / "splits", run / "model", "encoder-classifier", EvalConfig(), tmp_path)
    held = metrics["student"]["held_out"]
    assert held["exact_match"] == 1.0 and held["macro_f1"] == 1.0
    assert set(held["per_label"]) == set(LABELS)
    assert held["per_label"]["red"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 5}
    assert held["per_label"]["purple"]["support"] == 0
    assert held["confusion"]["labels"] == LABELS and held["confusion"]["matrix"][2] == [0, 0, 5, 0]
    assert read_json(tmp_path / "metrics.json")["student"]["held_out"]["confusion"] == held["confusion"]
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 0
    (tmp_path / "train.json").write_text((run / "train.json").read_text())
    card = write_model_card(tmp_path, instruction=INSTRUCTION).read_text()
    assert "## Per label: held_out (macro F1 1.00)" in card and "| red | 1.00 | 1.00 | 1.00 | 5 |" in card
    assert "`purple`" in card and "Output:" not in card  # the card says it answers labels, not a prompt


def test_label_report_counts_answers_outside_the_set_and_finds_closed_sets():
    report = label_report(["a", "B", "c", "nonsense", "a"], ["a", "b", "b", "a", "c"], ["a", "b", "c"])
    assert report["confusion"] == {
        "labels": ["a", "b", "c", "(other)"],
        "matrix": [[1, 0, 0, 1], [0, 1, 1, 0], [1, 0, 0, 0]],
    }
    assert report["per_label"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert report["per_label"]["c"]["f1"] == 0.0 and report["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0) / 3, 1e-3)
    assert closed_label_set(["spam", "ham", "spam", "ham", "Spam"]) == ["ham", "spam"]
    assert closed_label_set([str(i) for i in range(10)]) is None  # every answer different: open-ended
    assert closed_label_set(["x"], ["p", "q"]) == ["p", "q"]  # the student's own labels win


def test_onnx_int8_export_answers_as_the_original_and_gguf_is_refused(label_run):
    from p2m.tasks.ship.export import check_run_for_export, export_student, load_student

    run, _ = label_run
    cfg = ServeConfig(max_tokens=16)
    record = export_student(run, "onnx", "int8", cfg, cfg.max_tokens)
    assert record["files"] == ["model.onnx"] and record["architecture"] == "encoder-classifier"
    assert record["exact_match"] == record["reference_exact_match"] == 1.0 and record["agreement"] == 1.0
    onnx = load_student(run / "exports" / "onnx-int8", "encoder-classifier", INSTRUCTION, cfg.max_tokens)
    torch_answer = load_student_torch(run).predict("qwqqw")
    answer = onnx.predict("qwqqw")
    assert answer.text == torch_answer.text == "green"
    assert sum(answer.probabilities.values()) == pytest.approx(1.0)
    for label in LABELS:  # int8 weights: probabilities close to the original's, not equal
        assert answer.probabilities[label] == pytest.approx(torch_answer.probabilities[label], abs=0.05)
    with pytest.raises(BadInputError, match="GGUF .* encoder-classifier: use --format onnx"):
        check_run_for_export(run, "gguf")


def load_student_torch(run):
    from p2m.tasks.student.runtime import TorchStudent

    return TorchStudent(run / "model", "encoder-classifier", INSTRUCTION, max_tokens=16)


def test_served_classifier_answers_the_label_and_its_distribution_as_logprobs(label_run):
    import openai
    from p2m.tasks.ship.serve import build_app, model_name, open_student

    from tests.ship.test_export_serve import ServerThread

    run, _ = label_run
    student, record = open_student(run, None, None, ServeConfig(max_tokens=16))
    assert (record["format"], record["quantize"]) == ("onnx", "fp32")  # ONNX is this kind's default
    name = model_name(run)
    try:
        with ServerThread(build_app(student, name, parallel=2, record=record)) as base_url:
            client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
            messages = [{"role": "user", "content": "xyxyy"}]
            plain = client.chat.completions.create(model=name, messages=messages)
            assert plain.choices[0].message.content == "red" and plain.choices[0].logprobs is None
            reply = client.chat.completions.create(model=name, messages=messages, logprobs=True, top_logprobs=3)
            content = reply.choices[0].logprobs.content
            assert len(content) == 1 and content[0].token == "red" and content[0].bytes == list(b"red")
            top = content[0].top_logprobs
            assert len(top) == 3 and top[0].token == "red" and top[0].logprob == pytest.approx(content[0].logprob)
            assert [t.logprob for t in top] == sorted((t.logprob for t in top), reverse=True)
            everything = client.chat.completions.create(model=name, messages=messages, logprobs=True, top_logprobs=4)
            assert sum(math.exp(t.logprob) for t in everything.choices[0].logprobs.content[0].top_logprobs) == (
                pytest.approx(1.0, abs=1e-4)
            )
            with pytest.raises(openai.BadRequestError, match="top_logprobs"):
                client.chat.completions.create(model=name, messages=messages, logprobs=True, top_logprobs=99)
    finally:
        student.close()


def test_the_demo_shows_every_label_with_its_probability(label_run):
    from p2m.tasks.ship.demo import make_predictor

    run, _ = label_run
    predict, _ = make_predictor(run)
    shown = predict("zkzk")
    assert set(shown) == set(LABELS) and max(shown, key=shown.get) == "blue"
    assert sum(shown.values()) == pytest.approx(1.0)
    # Through the page's API (a gr.Label): the publish-demo stage's check records the label.
    from p2m.tasks.stages.demo import check_demo

    record = check_demo(run)
    assert record["sample_input"] == "xyxy" and record["sample_output"] == "red"


def test_encoder_folders_are_classifier_candidates_only_for_label_tasks(tmp_path):
    from p2m.tasks.core.config import StudentConfig
    from p2m.tasks.retrieval.registry import architecture_of, scan_models
    from p2m.tasks.stages.retrieve_model import model_pool
    from p2m.tasks.storage.embedded import minilm_path, resolve_model_path

    assert resolve_model_path("embedded:all-minilm-l6-v2", tmp_path) == minilm_path()
    assert {architecture_of(t) for t in ("bert", "roberta", "distilbert", "deberta-v2", "xlm-roberta", "mpnet")} == {
        "encoder-classifier"
    }
    assert (architecture_of("gpt2"), architecture_of("t5"), architecture_of("clip")) == (
        "decoder-only",
        "encoder-decoder",
        None,
    )
    folder = tmp_path / "models" / "my-bert"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "model.safetensors").write_bytes(b"0" * 1000)
    records = {r.name: r for r in scan_models(tmp_path / "models")}
    assert records["my-bert"].architecture == "encoder-classifier"
    assert records["all-minilm-l6-v2"].path == "embedded:all-minilm-l6-v2"
    assert records["tiny-bert"].architecture == "encoder-classifier" and records["tiny-bert"].test_only
    assert (records["tiny-t5"].architecture, records["tiny-gpt2"].architecture) == ("encoder-decoder", "decoder-only")
    generative = {r.name for r in model_pool(list(records.values()), StudentConfig())}
    labelled = {r.name for r in model_pool(list(records.values()), StudentConfig(), "classification")}
    assert "my-bert" not in generative and "all-minilm-l6-v2" not in generative
    assert {"my-bert", "all-minilm-l6-v2"} <= labelled


@pytest.mark.slow  # 60-90 s on 2 busy cores (a checkpoint of weights and optimizer state every epoch)
def test_the_embedded_minilm_learns_a_toy_label_task(tmp_path):
    """The real all-MiniLM-L6-v2 (22.7M parameters) with a new head, a few epochs on a tiny set."""
    phrases = {
        "billing": ["I was charged twice", "refund my payment", "my invoice is wrong", "update my credit card"],
        "bug": ["the app crashes on start", "error when I click save", "the page will not load", "login is broken"],
        "praise": ["great product, thanks", "I love the new design", "works perfectly", "you folks are wonderful"],
    }
    rows = [{"input": p, "output": label, "source": "generated"} for label, ps in phrases.items() for p in ps]
    save_splits(tmp_path, rows * 3, rows, rows)
    labels = list(phrases)
    choice = {"name": "all-minilm-l6-v2", "path": "embedded:all-minilm-l6-v2", "architecture": "encoder-classifier"}
    choice["labels"] = labels
    cfg = TrainConfig(epochs=6, learning_rate=1e-4)
    record = train_student(tmp_path / "splits", choice, "Route the message.", cfg, tmp_path, Settings().home)
    assert record["best_eval_accuracy"] >= 0.75 and record["calibration"]["validation_examples"] == 12
    model, tokenizer = load_model(tmp_path / "model", "encoder-classifier")
    answers = generate_outputs(model, tokenizer, "encoder-classifier", "", ["my card was charged two times"])
    assert answers[0] in labels


def test_the_quick_student_learns_in_seconds_and_answers_the_same_twice():
    from p2m.tasks.core.config import Settings
    from p2m.tasks.storage.embedded import resolve_model_path
    from p2m.tasks.student.classifier import quick_classifier

    base = resolve_model_path("embedded:tiny-bert", Settings().home)
    cfg = ClassifierTrainConfig(learning_rate=3e-3)  # a random tiny encoder needs a big step
    texts = [r["input"] for r in toy_rows(30, 5)]
    answers = quick_classifier(base, LABELS, toy_rows(90, 4), texts, epochs=6, cfg=cfg)
    truth = [r["output"] for r in toy_rows(30, 5)]
    assert sum(label == t for (label, _), t in zip(answers, truth, strict=True)) / len(truth) >= 0.9
    assert all(math.isclose(sum(p.values()), 1.0, rel_tol=1e-6) and set(p) == set(LABELS) for _, p in answers)
    assert quick_classifier(base, LABELS, toy_rows(90, 4), texts, epochs=6, cfg=cfg) == answers  # seeded
    with pytest.raises(BadInputError, match="one of the labels"):
        quick_classifier(base, LABELS, [{"input": "x", "output": "teal"}], texts)
