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
from p2m.deployments.deploy import deploy_all, deployment_specs, ensure_work_pools
from p2m.tasks.core.run_store import read_json

from tests.conftest import DATASETS, EXAMPLE, REPO
from tests.fake_llm_server import request_kind
from tests.flows.test_pipeline import QUICK, states


def retry_from_the_cli(flow_run_id, env: dict) -> None:
    """`prefect flow-run retry ID`, as a person re-running only what failed would; must succeed."""
    retry = subprocess.run(
        [sys.executable, "-m", "prefect", "flow-run", "retry", str(flow_run_id)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert retry.returncode == 0, retry.stdout + retry.stderr


def wait_for_final_state(client, flow_run_id, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.read_flow_run(flow_run_id)
        if run.state and run.state.is_final():
            return run.state
        time.sleep(1)
    raise AssertionError(f"flow run {flow_run_id} did not finish in {timeout}s")


class Workers:
    """Prefect workers started as subprocesses against the harness's server."""

    def __init__(self, log_path, llm_url: str):
        from prefect.settings import PREFECT_API_URL

        self.log_path = log_path
        self.env = {
            **os.environ,
            "PREFECT_API_URL": PREFECT_API_URL.value(),
            "OPENAI_BASE_URL": llm_url,
            "OPENAI_API_KEY": "test",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
        self.started: list[subprocess.Popen] = []

    def start(self, pools, **extra_env) -> dict:
        """One worker per pool; returns the environment they run with."""
        env = {**self.env, **extra_env}
        for pool in pools:
            with open(self.log_path, "ab") as log:
                self.started.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool],
                        cwd=REPO,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        return env

    def kill_hard(self) -> int:
        """SIGKILL every worker and everything it started, as a lost machine would; returns how many processes died."""
        import psutil

        victims = []
        for worker in self.started:
            parent = psutil.Process(worker.pid)
            victims += [parent, *parent.children(recursive=True)]
        for proc in victims:
            proc.kill()
        psutil.wait_procs(victims, timeout=10)
        self.started = []
        return len(victims)

    def log_tail(self) -> str:
        return self.log_path.read_text()[-3000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        for worker in self.started:
            # A worker ignores one SIGTERM for a while: SIGINT twice, then kill.
            for sig in (signal.SIGINT, signal.SIGINT):
                worker.send_signal(sig)
                time.sleep(0.5)
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()


@pytest.fixture
def workers(prefect_harness, numbers_server, tmp_path):
    started = Workers(tmp_path / "worker.log", numbers_server.base_url)
    yield started
    started.stop()


def test_deployed_run_fails_in_training_and_retry_reruns_only_training_onward(tmp_path, workers):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    env = workers.start(["cpu"])
    ensure_work_pools()
    deploy_all(deployment_specs())
    from p2m.tasks.core.run_store import claim_run_dir
    from p2m.tasks.stages.parse import parse_prompt, read_prompt_file

    out = tmp_path / "run"
    claim_run_dir(out, parse_prompt(read_prompt_file(EXAMPLE)).content_hash(), str(EXAMPLE))
    (out / "checkpoints").write_text("a file where training wants its checkpoint folder")
    overrides = {**QUICK, "datasets_dir": str(DATASETS)}
    # publish_demo off: the deployment serves the demo by default (a long-running process these tests do not need).
    flow_run = run_deployment(
        "p2m-pipeline/pipeline",
        parameters={"prompt_file": str(EXAMPLE), "out_dir": str(out), "overrides": overrides, "publish_demo": False},
        timeout=0,
    )
    with get_client(sync_client=True) as client:
        assert wait_for_final_state(client, flow_run.id).is_failed(), workers.log_tail()
        failed = states(read_json(out / "summary.json"))
        assert failed["train"] == "Failed" and failed["process"] == "Completed"

        (out / "checkpoints").unlink()  # the cause, fixed
        retry_from_the_cli(flow_run.id, env)
        assert wait_for_final_state(client, flow_run.id).is_completed(), workers.log_tail()
    resumed = states(read_json(out / "summary.json"))
    assert [resumed[s] for s in ("parse", "retrieve_datasets", "generate", "retrieve_model", "process")] == [
        "Cached"
    ] * 5
    assert [resumed[s] for s in ("train", "evaluate", "publish_demo")] == ["Completed"] * 3


def test_training_runs_on_the_gpu_pool_as_a_subflow(tmp_path, workers):
    """With P2M_TRAIN_DEPLOYMENT set, the pipeline (on the cpu pool) hands train+evaluate to the
    deployment on the gpu pool and waits; the child shows as a subflow; its stages join the summary."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    workers.start(["cpu", "gpu"], P2M_TRAIN_DEPLOYMENT="p2m-train-evaluate/gpu")
    ensure_work_pools()
    deploy_all(deployment_specs())
    out = tmp_path / "run"
    flow_run = run_deployment(
        "p2m-pipeline/pipeline",
        timeout=0,
        parameters={
            "prompt_file": str(EXAMPLE),
            "out_dir": str(out),
            "overrides": {**QUICK, "datasets_dir": str(DATASETS)},
            "publish_demo": False,
        },
    )
    with get_client(sync_client=True) as client:
        assert wait_for_final_state(client, flow_run.id).is_completed(), workers.log_tail()
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

        gpu = client.read_deployment_by_name("p2m-train-evaluate/gpu")
        # The gpu deployment's runs, whatever else the session's server holds (a first-20 page missed them).
        children = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[gpu.id])))
    assert any(r.parent_task_run_id for r in children)
    stages = read_json(out / "summary.json")["stages"]
    assert [(s["stage"], s.get("via")) for s in stages if s["stage"] in ("train", "evaluate")] == [
        ("train", "p2m-train-evaluate/gpu"),
        ("evaluate", "p2m-train-evaluate/gpu"),
    ]
    assert read_json(out / "metrics.json")["student"]["held_out"]["n"] > 0


@pytest.fixture
def crash_detection(prefect_harness):
    """p2m's crash automation with a 60 s window, removed afterwards: it would mark the runs of
    later tests' workers (heartbeat every 180 s) as crashed."""
    from p2m.deployments.deploy import CRASH_AUTOMATION, ensure_crash_detection
    from prefect.client.orchestration import get_client

    ensure_crash_detection(within_seconds=60)
    yield
    with get_client(sync_client=True) as client:
        for automation in client.read_automations_by_name(CRASH_AUTOMATION):
            client.delete_automation(automation.id)


def test_worker_killed_mid_run_is_marked_crashed_and_retry_keeps_every_finished_stage(
    tmp_path, workers, numbers_server, crash_detection
):
    """The machine running a deployed run dies during evaluation (worker and flow process SIGKILLed).
    Heartbeats stop, p2m's automation marks the run Crashed; `prefect flow-run retry` on a new
    worker serves every stage that had finished from the cache and runs evaluation onward."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    # Heartbeats every 30 s (Prefect's minimum); two missed beats mark the run crashed. A P2M home
    # of its own: earlier tests' request caches would answer the teacher baseline without asking.
    machine = {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30", "P2M_HOME": str(tmp_path / "home")}
    env = workers.start(["cpu"], **machine)
    ensure_work_pools()
    deploy_all(deployment_specs())
    # The teacher baseline (evaluation's temperature-0 answers, QUICK's 8 new tokens; generation's
    # votes are temperature-0 answers too, with the generation's token budget) never returns.
    numbers_server.stall_if = lambda body: (
        body.get("temperature") == 0
        and body.get("max_tokens") == QUICK["evaluation"]["max_new_tokens"]
        and request_kind(body["messages"])[0] == "answer"
    )
    out = tmp_path / "run"
    flow_run = run_deployment(
        "p2m-pipeline/pipeline",
        timeout=0,
        parameters={
            "prompt_file": str(EXAMPLE),
            "out_dir": str(out),
            "datasets_dir": str(DATASETS),
            "overrides": QUICK,
            "publish_demo": False,
        },
    )
    deadline = time.monotonic() + 300
    while not numbers_server.stalled:
        assert time.monotonic() < deadline, workers.log_tail()
        time.sleep(0.5)
    before = states(read_json(out / "summary.json"))
    assert before["train"] == "Completed" and "evaluate" not in before
    assert workers.kill_hard() >= 2  # the worker and the flow run's process

    with get_client(sync_client=True) as client:
        assert client.read_flow_run(flow_run.id).state.is_running()  # nobody is left to say otherwise
        crashed = wait_for_final_state(client, flow_run.id, timeout=180)
        assert crashed.is_crashed(), crashed
        numbers_server.stall_if = None
        workers.start(["cpu"], **machine)
        retry_from_the_cli(flow_run.id, env)
        assert wait_for_final_state(client, flow_run.id).is_completed(), workers.log_tail()
    resumed = states(read_json(out / "summary.json"))
    assert [resumed[s] for s in ("parse", "retrieve_datasets", "generate", "retrieve_model", "process", "train")] == [
        "Cached"
    ] * 6
    assert [resumed[s] for s in ("evaluate", "publish_demo")] == ["Completed"] * 2
    assert read_json(out / "metrics.json")["teacher"]["held_out"]["n"] > 0
