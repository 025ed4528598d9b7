"""The quick start with the real embedded models (SmolLM2 teacher and student): minutes, so `-m slow`."""

import pytest
from p2m.flows.cli.main import main
from p2m.tasks.core.run_store import read_json

from tests.conftest import DATASETS, EXAMPLE, REPO


@pytest.mark.slow
def test_offline_quick_start_trains_a_student_that_beats_its_teacher(tmp_path, prefect_harness):
    out = tmp_path / "run"
    args = [
        "run",
        str(EXAMPLE),
        "--out",
        str(out),
        "--datasets-dir",
        str(DATASETS),
        "--num-examples",
        "4",
        "--max-api-calls",
        "12",
        "--epochs",
        "1",
        "--eval-data",
        str(REPO / "examples" / "numbers_to_digits_test.jsonl"),
    ]
    assert main(args) == 0
    metrics = read_json(out / "metrics.json")
    student, teacher = metrics["student"]["held_out"], metrics["teacher"]["held_out"]
    assert student["exact_match"] >= 0.8
    assert student["exact_match"] > teacher["exact_match"] + 0.3
    assert main(args) == 0
    assert {s["state"] for s in read_json(out / "summary.json")["stages"]} == {"Cached"}
