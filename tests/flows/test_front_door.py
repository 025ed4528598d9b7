"""The pipeline as a person at the Prefect UI starts it: the prompt pasted, the test set and the
datasets as s3:// URLs (moto), no run folder given (one is named from the prompt under an s3://
runs root), and the summary saying where the run is."""

import json

import pytest
from p2m.tasks.core.errors import BadInputError
from p2m.tasks.stages.parse import prompt_from_text
from p2m.tasks.storage.locations import run_name

from tests.conftest import DATASETS, EXAMPLE
from tests.flows.test_pipeline import QUICK, states
from tests.storage.test_storage import s3  # noqa: F401 (the moto fixture)

PASTED = EXAMPLE.read_text(encoding="utf-8")
TEST_SET = [("twelve", "12"), ("forty", "40"), ("three hundred one", "301")]


def upload_inputs() -> None:
    from p2m.tasks.storage.remote import filesystem

    fs = filesystem()
    fs.pipe(
        "p2m/inputs/numbers_test.jsonl",
        "".join(json.dumps({"input": w, "output": d}) + "\n" for w, d in TEST_SET).encode(),
    )
    for path in DATASETS.rglob("*"):
        if path.is_file():
            fs.put_file(str(path), f"p2m/inputs/datasets/{path.relative_to(DATASETS).as_posix()}")


def test_a_pasted_prompt_with_inputs_and_run_folder_on_s3(tmp_path, s3, prefect_harness, numbers_server, monkeypatch):
    from p2m.flows.pipeline import pipeline
    from p2m.tasks.storage.remote import filesystem
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    monkeypatch.setenv("OPENAI_BASE_URL", numbers_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    upload_inputs()
    form = dict(
        prompt=PASTED,
        eval_data="s3://p2m/inputs/numbers_test.jsonl",
        datasets_dir="s3://p2m/inputs/datasets",
        overrides={**QUICK, "runs_root": "s3://p2m/team-runs"},
    )
    state = pipeline(**form, return_state=True)
    summary = state.result()
    where = f"s3://p2m/team-runs/{run_name(prompt_from_text(PASTED))}"
    assert summary["location"] == where and set(states(summary).values()) == {"Completed"}, summary["stages"]
    fs = filesystem()
    bucket_path = where.removeprefix("s3://")
    for artifact in ("run.json", "prompt.txt", "spec.json", "metrics.json", "summary.json", "model/model.safetensors"):
        assert fs.exists(f"{bucket_path}/{artifact}"), artifact
    assert fs.cat_file(f"{bucket_path}/prompt.txt").decode().strip() == PASTED.strip()
    metrics = json.loads(fs.cat_file(f"{bucket_path}/metrics.json"))
    assert metrics["student"]["eval_data"]["n"] == metrics["teacher"]["eval_data"]["n"] == len(TEST_SET)
    retrieval = json.loads(fs.cat_file(f"{bucket_path}/retrieval.json"))
    assert (
        retrieval["chosen"] in {p.name for p in DATASETS.iterdir()} and retrieval["rows"] > 0
    )  # read from the S3 folder
    on_the_run = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        artifacts = {a.key: a for a in client.read_artifacts(artifact_filter=on_the_run)}
    assert {"p2m-summary", "p2m-loss-curve", "p2m-student-vs-teacher"} <= set(artifacts)  # what the run's page shows
    artifact = artifacts["p2m-summary"]
    assert f"Run folder: `{where}`" in artifact.data and "## eval_data (3 examples)" in artifact.data

    # The same form again (a re-run, or a retry): the inputs are fetched again, and nothing that
    # did not change runs again.
    again = pipeline(**form)
    assert set(states(again).values()) == {"Cached"}, again["stages"]


def test_the_prompt_given_twice_or_not_at_all_fails_before_any_work(tmp_path, prefect_harness):
    from p2m.flows.pipeline import pipeline

    with pytest.raises(BadInputError, match="given twice"):
        pipeline(prompt=PASTED, prompt_file=str(EXAMPLE), out_dir=str(tmp_path / "run"))
    with pytest.raises(BadInputError, match="no prompt"):
        pipeline(out_dir=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_the_nightly_form_takes_a_pasted_prompt_too(tmp_path, prefect_harness, numbers_server, monkeypatch):
    from p2m.flows.generate import generate_flow
    from p2m.tasks.core.run_store import dataset_rows

    monkeypatch.setenv("OPENAI_BASE_URL", numbers_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    report = generate_flow(
        prompt=PASTED, num_examples=3, overrides={"runs_root": str(tmp_path / "runs"), "generation": {"votes": 1}}
    )
    folder = tmp_path / "runs" / run_name(prompt_from_text(PASTED))
    assert report["accepted"] == 3 and len(dataset_rows(folder / "generated")) == 3
    assert (folder / "prompt.txt").read_text(encoding="utf-8").strip() == PASTED.strip()
