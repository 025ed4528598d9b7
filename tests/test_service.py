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
def cpu_worker(prefect_harness, numbers_server, tmp_path):
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "OPENAI_BASE_URL": numbers_server.base_url,
           "OPENAI_API_KEY": "test", "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_LOGGING_LEVEL": "WARNING"}
    log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "cpu"], cwd=REPO, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    yield env
    # A worker ignores one SIGTERM for a while (../shared/PREFECT.md): SIGINT twice, then kill.
    for sig in (signal.SIGINT, signal.SIGINT):
        worker.send_signal(sig)
        time.sleep(0.5)
    try:
        worker.wait(timeout=10)
    except subprocess.TimeoutExpired:
        worker.kill()
    log.close()


def test_deployed_run_fails_in_training_and_retry_reruns_only_training_onward(tmp_path, cpu_worker):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

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
        retry = subprocess.run([sys.executable, "-m", "prefect", "flow-run", "retry", str(flow_run.id)], env=cpu_worker,
                               capture_output=True, text=True, timeout=120)
        assert retry.returncode == 0, retry.stdout + retry.stderr
        assert wait_for_final_state(client, flow_run.id).is_completed(), (tmp_path / "worker.log").read_text()[-3000:]
    resumed = states(read_json(out / "summary.json"))
    assert [resumed[s] for s in ("parse", "retrieve_datasets", "generate", "retrieve_model", "process")] == ["Cached"] * 5
    assert [resumed[s] for s in ("train", "evaluate", "publish_demo")] == ["Completed"] * 3
