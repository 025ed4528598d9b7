"""Run folders and Prefect results on S3, against moto's S3 server on loopback.

A run on one machine; the same run on "another machine" (no local folder, no local results)
pulls the folder from S3 and finds every stage cached in the S3 result storage.
"""

import shutil

import pytest

from tests.conftest import DATASETS, EXAMPLE
from tests.flows.test_pipeline import QUICK, states


@pytest.fixture
def s3(monkeypatch):
    import boto3
    from moto.server import ThreadedMotoServer
    from p2m.tasks.core.processes import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for var, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }.items():
        monkeypatch.setenv(var, value)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="p2m")  # s3fs mkdir fails on moto
    yield endpoint
    server.stop()


def test_a_run_continues_from_s3_on_a_machine_without_its_folder(
    tmp_path, s3, prefect_harness, numbers_server, monkeypatch
):
    from p2m.flows.pipeline import pipeline
    from p2m.tasks.storage.remote import filesystem

    monkeypatch.setenv("OPENAI_BASE_URL", numbers_server.base_url)
    overrides = {
        **QUICK,
        "datasets_dir": str(DATASETS),
        "storage_url": "s3://p2m/team",
        "train": {"epochs": 1, "seed": 11},
    }
    out = tmp_path / "runs" / "run"  # the same path on every machine (a deployment parameter)
    first = pipeline(prompt_file=str(EXAMPLE), out_dir=str(out), overrides=overrides)
    assert set(states(first).values()) == {"Completed"}
    fs = filesystem()
    assert fs.exists("p2m/team/runs/run/model/model.safetensors") and fs.exists("p2m/team/runs/run/summary.json")
    assert not fs.exists("p2m/team/runs/run/checkpoints")  # optimizer state stays local
    assert fs.ls("p2m/team/prefect-results")  # the cache records

    shutil.rmtree(out)  # "another machine": no local folder
    again = pipeline(prompt_file=str(EXAMPLE), out_dir=str(out), overrides=overrides)
    assert set(states(again).values()) == {"Cached"}, again["stages"]
    assert (out / "model" / "model.safetensors").exists()


def test_request_cache_is_shared_through_s3(tmp_path, s3, numbers_server, monkeypatch, fast_limits):
    """Two machines (two local caches) with one storage URL: an answer paid on one is never paid on the other."""
    from p2m.tasks.core.config import Settings
    from p2m.tasks.storage.remote import filesystem
    from p2m.tasks.teacher.client import run_sync
    from p2m.tasks.teacher.handle import Teacher

    monkeypatch.setenv("OPENAI_BASE_URL", numbers_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    prompts = [[{"role": "user", "content": f"Input: {w}\n"}] for w in ("seven", "forty-two", "one hundred")]

    def machine(home: str):
        teacher = Teacher(Settings(home=tmp_path / home, storage_url="s3://p2m/two-machines", limits=fast_limits))
        llm = teacher.client()
        answers = [run_sync(llm.acomplete(p, max_tokens=8)) for p in prompts]
        teacher.close()
        return llm, answers

    first, answers = machine("a")
    assert numbers_server.answered == 3 and answers == [["7"], ["42"], ["100"]]
    assert len(filesystem().ls("p2m/two-machines/request-cache")) == 3
    second, again = machine("b")  # nothing local on this one
    assert again == answers and numbers_server.answered == 3 and second.meter.cached == 3
