"""Run folders and Prefect results on S3, against moto's S3 server on loopback.

A run on one machine; the same run on "another machine" (no local folder, no local results)
pulls the folder from S3 and finds every stage cached in the S3 result storage.
"""

import shutil

import pytest

from tests.conftest import DATASETS, EXAMPLE
from tests.test_pipeline import QUICK, states


@pytest.fixture
def s3(monkeypatch):
    import boto3
    from moto.server import ThreadedMotoServer

    from tasks.processes import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for var, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(var, value)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="p2m")  # s3fs mkdir fails on moto
    yield endpoint
    server.stop()


def test_a_run_continues_from_s3_on_a_machine_without_its_folder(tmp_path, s3, prefect_harness, numbers_server, monkeypatch):
    from flows.pipeline import pipeline
    from tasks.storage import filesystem

    monkeypatch.setenv("OPENAI_BASE_URL", numbers_server.base_url)
    overrides = {**QUICK, "datasets_dir": str(DATASETS), "storage_url": "s3://p2m/team", "train": {"epochs": 1, "seed": 11}}
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
