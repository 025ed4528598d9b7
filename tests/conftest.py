"""Test set-up: no network, every p2m and Prefect folder in a temporary directory.

Flow tests share one Prefect test harness (about 10 s to start) whose result storage points at
this session's temporary folder: the harness alone does not isolate it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="p2m-tests-"))
os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "TOKENIZERS_PARALLELISM": "false",
        "P2M_HOME": str(_SESSION_DIR / "p2m-home"),
        "PREFECT_HOME": str(_SESSION_DIR / "prefect-home"),
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(_SESSION_DIR / "prefect-results"),
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
)
for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
    os.environ.pop(var, None)

import pytest  # noqa: E402

from tests.fake_llm_server import FakeLLMServer, numbers_teacher  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "numbers_to_digits.yaml"
DATASETS = REPO / "examples" / "datasets"


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(), temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


@pytest.fixture
def numbers_server():
    """A correct, deterministic teacher for the numbers task behind the OpenAI protocol."""
    numbers_teacher.counter = 0
    with FakeLLMServer(numbers_teacher) as server:
        yield server


@pytest.fixture
def fast_limits():
    from p2m.tasks.core.config import LimitsConfig

    return LimitsConfig(requests_per_minute=60_000, tokens_per_minute=10_000_000, request_timeout=5)


@pytest.fixture
def run_folder(tmp_path):
    """A run folder whose tiny model has learned to answer "hello" (1 s of training)."""
    import datasets
    from p2m.tasks.core.config import Settings, TrainConfig
    from p2m.tasks.core.run_store import rows_to_dataset, write_json
    from p2m.tasks.stages.train import train_student

    run = tmp_path / "run"
    rows = [{"input": f"x{i}", "output": "hello", "source": "generated"} for i in range(40)]
    datasets.DatasetDict(
        {k: rows_to_dataset(rows, ("input", "output", "source")) for k in ("train", "validation", "test")}
    ).save_to_disk(str(tmp_path / "splits"))
    choice = {"name": "tiny-gpt2", "path": "embedded:tiny-gpt2", "architecture": "decoder-only"}
    train_student(
        tmp_path / "splits", choice, "Say hello.", TrainConfig(epochs=15, learning_rate=3e-3), run, Settings().home
    )
    write_json(
        run / "spec.json", {"instruction": "Say hello.", "demonstrations": [{"input": "abc", "output": "hello"}]}
    )
    write_json(run / "model_choice.json", choice)
    return run
