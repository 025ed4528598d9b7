"""Training in two CPU processes (DDP over gloo, the code path several GPUs take): the same losses as one process."""

import pytest
from p2m.tasks.core.config import ProcessConfig, Settings, TrainConfig
from p2m.tasks.core.run_store import read_jsonl, rows_to_dataset
from p2m.tasks.stages.parse import parse_prompt, read_prompt_file
from p2m.tasks.stages.process import make_splits
from p2m.tasks.stages.train import train_student

from tests.conftest import EXAMPLE

SPEC = parse_prompt(read_prompt_file(EXAMPLE))


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    out = tmp_path_factory.mktemp("splits")
    rows = [{"input": f"number {i}", "output": str(i)} for i in range(60)]
    rows_to_dataset(rows[:40]).save_to_disk(str(out / "retrieved"))
    rows_to_dataset(rows[40:]).save_to_disk(str(out / "generated"))
    make_splits(SPEC, out / "retrieved", out / "generated", ProcessConfig(max_test_examples=6), out)
    return out / "splits"


@pytest.fixture(scope="module")
def tiny_without_dropout(tmp_path_factory):
    """The tiny GPT-2 built from its config (p2m.tasks.storage.embedded), dropout off: one process and two
    then see the same numbers, so any difference is the distribution's."""
    from p2m.tasks.storage.embedded import resolve_model_path
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_model_path("embedded:tiny-gpt2", Settings().home)
    model = AutoModelForCausalLM.from_pretrained(source)
    model.config.update({"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0})
    target = tmp_path_factory.mktemp("tiny-gpt2-no-dropout")
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    return {"name": "tiny-gpt2", "path": str(target), "architecture": "decoder-only"}


def test_two_processes_learn_what_one_learns(splits, tiny_without_dropout, tmp_path):
    """52 training examples in batches of 4 (no partial batch), each batch split 2 + 2 over two
    gloo processes: the same steps and the same training loss at every logged step as one process
    (gradients averaged, the loss normalised by the whole batch's tokens). The validation loss is
    averaged per process by the Trainer, so it agrees to within 3%, not exactly."""
    cfg = TrainConfig(epochs=2, batch_size=4, learning_rate=3e-3)
    home = Settings().home
    one = train_student(splits, tiny_without_dropout, SPEC.instruction, cfg, tmp_path / "one", home)
    cfg_two = cfg.model_copy(update={"processes": 2})
    two = train_student(splits, tiny_without_dropout, SPEC.instruction, cfg_two, tmp_path / "two", home)
    assert (one["processes"], two["processes"]) == (1, 2)
    assert two["train_examples"] == 52 and two["steps"] == one["steps"] == 26
    assert two["batch_size"] == one["batch_size"] == 4
    log_one, log_two = (read_jsonl(tmp_path / run / "train_log.jsonl") for run in ("one", "two"))
    steps_one = [e["loss"] for e in log_one if "loss" in e]
    steps_two = [e["loss"] for e in log_two if "loss" in e]
    assert len(steps_one) > 10 and steps_two == pytest.approx(steps_one, rel=1e-3)
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-3)
    assert steps_two[-1] < 0.7 * steps_two[0]  # it learned
    eval_one = [e["eval_loss"] for e in log_one if "eval_loss" in e]
    eval_two = [e["eval_loss"] for e in log_two if "eval_loss" in e]
    assert len(eval_two) == 2 and eval_two == pytest.approx(eval_one, rel=0.03)
    assert (tmp_path / "two" / "model" / "model.safetensors").exists()  # rank 0 wrote the model


def test_the_embedded_tiny_model_with_dropout_trains_in_two_processes(splits, tmp_path):
    """The stage as it runs (dropout on: masks differ per process): the loss within 5% of one process."""
    cfg = TrainConfig(epochs=1, batch_size=4, learning_rate=3e-3)
    choice = {"name": "tiny-gpt2", "path": "embedded:tiny-gpt2", "architecture": "decoder-only"}
    home = Settings().home
    one = train_student(splits, choice, SPEC.instruction, cfg, tmp_path / "one", home)
    two = train_student(
        splits, choice, SPEC.instruction, cfg.model_copy(update={"processes": 2}), tmp_path / "two", home
    )
    assert two["processes"] == 2 and two["train_loss"] == pytest.approx(one["train_loss"], rel=0.05)


def test_the_process_count_follows_the_devices(monkeypatch):
    import torch
    from p2m.tasks.core.errors import P2MError
    from p2m.tasks.student.launch import training_processes

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_processes(TrainConfig()) == 1  # a CPU: one process unless asked
    assert training_processes(TrainConfig(processes=2)) == 2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert training_processes(TrainConfig()) == 4  # a GPU machine: every card
    with pytest.raises(P2MError, match="one process per GPU"):
        training_processes(TrainConfig(processes=8))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert training_processes(TrainConfig()) == 1
    # Where training runs is no part of what it learns: not in the stage's cache key.
    assert TrainConfig(processes=4).model_dump() == TrainConfig().model_dump()
