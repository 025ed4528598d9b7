"""p2m as a service: deployments on a real Prefect server, a real worker, a failed run retried.

The run is triggered as the UI's Run button does (`run_deployment`), fails in training (its
checkpoint folder cannot be created), the cause is removed, and `prefect flow-run retry` re-runs
it under the same flow-run id: every stage before training is served from the cache.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from deployments.deploy import deploy_all, deployment_specs, ensure_work_pools
from tasks.run_store import read_json
from tests.conftest import DATASETS, EXAMPLE, REPO
from tests.test_pipeline import QUICK, states


def wait_for_final_state(client, flow_run_id, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.read_flow_run(flow_run_id)
        if run.state and run.state.is_final():
            return run.state
        time.sleep(1)
    raise AssertionError(f"flow run {flow_run_id} did not finish in {timeout}s")


@pytest.fixture
def start_workers(prefect_harness, numbers_server, tmp_path):
    """start_workers(pools, **env) starts one worker per pool against the harness's server; returns the env."""
    from prefect.settings import PREFECT_API_URL

    started = []

    def start(pools, **extra_env):
        env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "OPENAI_BASE_URL": numbers_server.base_url,
               "OPENAI_API_KEY": "test", "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_LOGGING_LEVEL": "WARNING", **extra_env}
        for pool in pools:
            log = open(tmp_path / "worker.log", "ab")
            started.append((subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool], cwd=REPO,
                                             env=env, stdout=log, stderr=subprocess.STDOUT), log))
        return env

    yield start
    for worker, log in started:
        # A worker ignores one SIGTERM for a while (../shared/PREFECT.md): SIGINT twice, then kill.
        for sig in (signal.SIGINT, signal.SIGINT):
            worker.send_signal(sig)
            time.sleep(0.5)
        try:
            worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()


def test_deployed_run_fails_in_training_and_retry_reruns_only_training_onward(tmp_path, start_workers):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    env = start_workers(["cpu"])
    ensure_work_pools()
    deploy_all(deployment_specs())
    from tasks.parse import parse_prompt, read_prompt_file
    from tasks.run_store import claim_run_dir

    out = tmp_path / "run"
    claim_run_dir(out, parse_prompt(read_prompt_file(EXAMPLE)).content_hash(), str(EXAMPLE))
    (out / "checkpoints").write_text("a file where training wants its checkpoint folder")
    overrides = {**QUICK, "datasets_dir": str(DATASETS)}
    flow_run = run_deployment("p2m-pipeline/pipeline", parameters={"prompt_file": str(EXAMPLE), "out_dir": str(out), "overrides": overrides},
                              timeout=0)
    with get_client(sync_client=True) as client:
        assert wait_for_final_state(client, flow_run.id).is_failed(), (tmp_path / "worker.log").read_text()[-3000:]
        failed = states(read_json(out / "summary.json"))
        assert failed["train"] == "Failed" and failed["process"] == "Completed"

        (out / "checkpoints").unlink()  # the cause, fixed
        retry = subprocess.run([sys.executable, "-m", "prefect", "flow-run", "retry", str(flow_run.id)], env=env,
                               capture_output=True, text=True, timeout=120)
        assert retry.returncode == 0, retry.stdout + retry.stderr
        assert wait_for_final_state(client, flow_run.id).is_completed(), (tmp_path / "worker.log").read_text()[-3000:]
    resumed = states(read_json(out / "summary.json"))
    assert [resumed[s] for s in ("parse", "retrieve_datasets", "generate", "retrieve_model", "process")] == ["Cached"] * 5
    assert [resumed[s] for s in ("train", "evaluate", "publish_demo")] == ["Completed"] * 3


def test_training_runs_on_the_gpu_pool_as_a_subflow(tmp_path, start_workers):
    """With P2M_TRAIN_DEPLOYMENT set, the pipeline (on the cpu pool) hands train+evaluate to the
    deployment on the gpu pool and waits; the child shows as a subflow; its stages join the summary."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    start_workers(["cpu", "gpu"], P2M_TRAIN_DEPLOYMENT="p2m-train-evaluate/gpu")
    ensure_work_pools()
    deploy_all(deployment_specs())
    out = tmp_path / "run"
    flow_run = run_deployment("p2m-pipeline/pipeline", timeout=0, parameters={
        "prompt_file": str(EXAMPLE), "out_dir": str(out), "overrides": {**QUICK, "datasets_dir": str(DATASETS)}})
    with get_client(sync_client=True) as client:
        assert wait_for_final_state(client, flow_run.id).is_completed(), (tmp_path / "worker.log").read_text()[-3000:]
        children = [r for r in client.read_flow_runs(limit=20) if r.parent_task_run_id and r.deployment_id]
        gpu = client.read_deployment_by_name("p2m-train-evaluate/gpu")
    assert any(r.deployment_id == gpu.id for r in children)
    stages = read_json(out / "summary.json")["stages"]
    assert [(s["stage"], s.get("via")) for s in stages if s["stage"] in ("train", "evaluate")] == [
        ("train", "p2m-train-evaluate/gpu"), ("evaluate", "p2m-train-evaluate/gpu")]
    assert read_json(out / "metrics.json")["student"]["held_out"]["n"] > 0
