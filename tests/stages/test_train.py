"""Training and evaluation on tiny models of both architectures (random weights: the code paths, not the quality)."""

import json

import pytest
from p2m.tasks.core.config import EvalConfig, ProcessConfig, TrainConfig
from p2m.tasks.core.run_store import read_jsonl, rows_to_dataset
from p2m.tasks.report.render import write_model_card
from p2m.tasks.stages.evaluate import evaluate_run
from p2m.tasks.stages.parse import parse_prompt, read_prompt_file
from p2m.tasks.stages.process import make_splits
from p2m.tasks.stages.train import choose_max_length, encode_example, train_student
from p2m.tasks.student.inference import exact_match, normalise_answer

from tests.conftest import EXAMPLE

SPEC = parse_prompt(read_prompt_file(EXAMPLE))


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    out = tmp_path_factory.mktemp("splits")
    rows = [{"input": f"number {i}", "output": str(i)} for i in range(40)]
    rows_to_dataset(rows[:30]).save_to_disk(str(out / "retrieved"))
    rows_to_dataset(rows[25:]).save_to_disk(str(out / "generated"))  # 5 overlap: deduplicated
    record = make_splits(SPEC, out / "retrieved", out / "generated", ProcessConfig(max_test_examples=6), out)
    return out, record


def test_splits_are_deduplicated_and_disjoint(splits):
    out, record = splits
    assert record["deduplicated_pool"] == 40
    assert record["sizes"]["test"] == 4 and record["train_sources"]["demonstration"] == 4
    import datasets

    ds = datasets.load_from_disk(str(out / "splits"))
    assert not set(ds["test"]["input"]) & set(ds["train"]["input"])


@pytest.mark.parametrize(
    "model, architecture, lora",
    [("tiny-gpt2", "decoder-only", False), ("tiny-t5", "encoder-decoder", False), ("tiny-gpt2", "decoder-only", True)],
)
def test_train_then_evaluate_both_architectures(splits, tmp_path, model, architecture, lora):
    from p2m.tasks.core.config import Settings

    out, _ = splits
    choice = {"name": model, "path": f"embedded:{model}", "architecture": architecture}
    record = train_student(
        out / "splits",
        choice,
        SPEC.instruction,
        TrainConfig(epochs=2, batch_size=8, lora=lora),
        tmp_path,
        Settings().home,
    )
    assert record["steps"] > 0 and record["architecture"] == architecture
    log = read_jsonl(tmp_path / "train_log.jsonl")
    assert sum("eval_loss" in e for e in log) == 2  # validation every epoch: loss and generation metrics
    assert sum("eval_exact_match" in e for e in log) == 2
    assert (tmp_path / "model" / "model.safetensors").exists() and not (tmp_path / "model" / "README.md").exists()
    metrics = evaluate_run(
        SPEC, out / "splits", tmp_path / "model", architecture, EvalConfig(max_new_tokens=4), tmp_path
    )
    assert set(metrics["student"]["held_out"]) >= {"exact_match", "chrf", "bertscore_f1", "ms_per_example"}
    assert len(read_jsonl(tmp_path / "predictions.jsonl")) == 4
    write_model_card(tmp_path, instruction=SPEC.instruction)  # what the evaluate task does after evaluate_run
    assert (
        "Scores: held_out" in (tmp_path / "model_card.md").read_text()
    )  # the card is its own artifact, after evaluation


def test_training_resumes_from_its_last_checkpoint(splits, tmp_path):
    from p2m.tasks.core.config import Settings

    out, _ = splits
    choice = {"name": "tiny-gpt2", "path": "embedded:tiny-gpt2", "architecture": "decoder-only"}
    first = train_student(out / "splits", choice, SPEC.instruction, TrainConfig(epochs=1), tmp_path, Settings().home)
    assert not first["resumed"]
    # Same settings again, checkpoints still there (an interrupted run restarted): it resumes.
    again = train_student(out / "splits", choice, SPEC.instruction, TrainConfig(epochs=1), tmp_path, Settings().home)
    assert again["resumed"] and again["steps"] == first["steps"]


def test_decoder_labels_mask_the_prompt():
    from transformers import ByT5Tokenizer

    tok = ByT5Tokenizer()
    enc = encode_example(tok, "decoder-only", "Q: 1\nOutput:", "one", max_length=64)
    n_prompt = len(tok("Q: 1\nOutput:")["input_ids"])
    assert enc["labels"][:n_prompt] == [-100] * n_prompt and enc["labels"][n_prompt:] == enc["input_ids"][n_prompt:]
    assert choose_max_length([30] * 99 + [400], cap=None) == 30  # the outlier is truncated
    assert choose_max_length([30] * 99 + [400], cap=20) == 20


def test_batch_size_follows_sequence_length_when_not_set(splits, tmp_path):
    from p2m.tasks.core.config import Settings
    from p2m.tasks.stages.train import choose_batch_size

    assert choose_batch_size(32, 135_000_000, cuda=False) == 64 and choose_batch_size(512, 135_000_000, cuda=False) == 4
    out, _ = splits
    choice = {"name": "tiny-gpt2", "path": "embedded:tiny-gpt2", "architecture": "decoder-only"}
    record = train_student(
        out / "splits", choice, SPEC.instruction, TrainConfig(epochs=1, batch_size=None), tmp_path, Settings().home
    )
    assert record["batch_size"] == choose_batch_size(
        record["max_length"], 0, cuda=False, num_examples=record["train_examples"]
    )
    assert choose_batch_size(32, 135_000_000, cuda=False, num_examples=200) == 8  # 25 steps an epoch for a small set


def test_exact_match_normalises():
    assert normalise_answer("The  Answer.") == "answer"
    assert exact_match(["342", "the cat"], ["342.", "Cat"]) == 1.0


def test_gpu_decisions_without_a_gpu(monkeypatch):
    """No GPU on these machines: the choices a GPU worker makes are checked on their inputs."""
    import torch
    from p2m.tasks.stages.train import choose_batch_size, mixed_precision

    assert mixed_precision(cuda=True, bf16_supported=True) == {"bf16": True, "fp16": False}  # A100, H100, L4
    assert mixed_precision(cuda=True, bf16_supported=False) == {"bf16": False, "fp16": True}  # T4, V100
    assert mixed_precision(cuda=False, bf16_supported=False) == {"bf16": False, "fp16": False}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (16 * 2**30, 24 * 2**30))
    assert choose_batch_size(512, 135_000_000, cuda=True) == 64  # a small model on a free 16 GB card: the cap
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (2 * 2**30, 24 * 2**30))
    assert choose_batch_size(512, 1_000_000_000, cuda=True) == 2  # a 1B model on a nearly full card: the floor budget


def test_a_perfect_validation_score_trains_on_and_ties_go_to_the_lower_loss(splits, tmp_path, monkeypatch):
    """Every epoch all right on validation (generation scripted): training does not stop at the
    first perfect score, and the epoch kept is the one with the lowest validation loss."""
    import datasets
    from p2m.tasks.core.config import Settings
    from p2m.tasks.stages import train

    out, _ = splits
    references = [r["output"] for r in datasets.load_from_disk(str(out / "splits"))["validation"]]
    monkeypatch.setattr(train, "generate_outputs", lambda *args, **kwargs: list(references))
    choice = {"name": "tiny-gpt2", "path": "embedded:tiny-gpt2", "architecture": "decoder-only"}
    cfg = TrainConfig(epochs=4, learning_rate=1e-3)
    train_student(out / "splits", choice, SPEC.instruction, cfg, tmp_path, Settings().home)
    log = read_jsonl(tmp_path / "train_log.jsonl")
    evals = [e for e in log if "eval_loss" in e]
    assert [e["epoch"] for e in evals] == [1.0, 2.0, 3.0, 4.0]  # the first perfect score did not end it
    assert all(e.get("eval_exact_match", 1.0) == 1.0 for e in log if "eval_exact_match" in e)
    state = json.loads(sorted((tmp_path / "checkpoints").glob("*/checkpoint-*/trainer_state.json"))[-1].read_text())
    best = min(evals, key=lambda e: e["eval_loss"])
    assert state["best_global_step"] == best["step"]
