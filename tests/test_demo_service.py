"""The demo as a long-running service: published, answering through its API, replaced on republish."""

import os

import pytest

from tasks.demo_service import publish_demo, stop_demo
from tasks.local_teacher import free_port
from tasks.run_store import rows_to_dataset, write_json


@pytest.fixture
def run_folder(tmp_path):
    """A run folder whose tiny model has learned to answer "hello" (1 s of training)."""
    import datasets

    from tasks.config import Settings, TrainConfig
    from tasks.train import train_student

    run = tmp_path / "run"
    rows = [{"input": f"x{i}", "output": "hello", "source": "generated"} for i in range(40)]
    datasets.DatasetDict({k: rows_to_dataset(rows, ("input", "output", "source")) for k in ("train", "validation", "test")}).save_to_disk(
        str(tmp_path / "splits"))
    choice = {"name": "tiny-gpt2", "path": "embedded:tiny-gpt2", "architecture": "decoder-only"}
    train_student(tmp_path / "splits", choice, "Say hello.", TrainConfig(epochs=15, learning_rate=3e-3), run, Settings().home)
    write_json(run / "spec.json", {"instruction": "Say hello.", "demonstrations": [{"input": "abc", "output": "hello"}]})
    write_json(run / "model_choice.json", choice)
    return run


def test_publish_then_replace(run_folder, tmp_path):
    home, port = tmp_path / "home", free_port()
    try:
        first = publish_demo(run_folder, home, port=port)
        assert first["url"] == f"http://127.0.0.1:{port}/" and first["sample_output"] == "hello"
        assert not first["replaced_previous"]
        second = publish_demo(run_folder, home, port=port, auth="dana:secret")
        assert second["replaced_previous"] and second["pid"] != first["pid"] and second["auth"]
        with pytest.raises(ProcessLookupError):
            os.kill(first["pid"], 0)  # the old demo is gone
    finally:
        stop_demo(home, port)
