"""A person with only the Prefect UI runs the pipeline, in headless chromium (Debian's, driven by Playwright).

A `prefect server start` with its UI, p2m's deployments and a worker for the cpu pool (the
scripted teacher, moto's S3, tiny models). In the browser: the Run form shows the default number
of examples as a number and refuses -1 before any run starts; the prompt is pasted, the test set
given as an s3:// URL; Submit; on the run's page the summary artifact shows the student's and the
teacher's scores on that test set and the link to the demo, which serves the trained model.
Marker `browser`: `make test-browser` installs chromium and playwright and runs it.
"""

import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest
from p2m.tasks.core.config import GenerationConfig
from p2m.tasks.core.processes import free_port, wait_until_serving
from p2m.tasks.ship.demo_service import stop_demo

from tests.conftest import DATASETS, EXAMPLE, REPO
from tests.flows.test_pipeline import QUICK
from tests.ship.test_demo_browser import CHROMIUM, launch_chromium
from tests.storage.test_storage import s3  # noqa: F401 (the moto fixture)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make test-browser installs it)"),
]

PASTED = EXAMPLE.read_text(encoding="utf-8")
TEST_SET = [("twelve", "12"), ("forty", "40"), ("three hundred one", "301")]
DEPLOY = (
    "from p2m.deployments.deploy import *; ensure_work_pools(); "
    "print(deploy_all(deployment_specs())['p2m-pipeline/pipeline'])"
)


def field(page, name: str):
    """The input of the form field for parameter `name`."""
    label = page.locator("span.schema-form-property__label", has_text=re.compile(rf"^{name}( \(Optional\))?$"))
    return page.locator("div.schema-form-property").filter(has=label).locator("input, textarea").first


def stop(proc: subprocess.Popen) -> None:
    # A worker ignores one SIGTERM for a while: SIGINT twice, then kill.
    for sig in (signal.SIGINT, signal.SIGINT):
        if proc.poll() is None:
            proc.send_signal(sig)
            time.sleep(0.5)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def test_a_pasted_prompt_runs_from_the_form_and_its_page_shows_scores_and_the_demo(tmp_path, numbers_server, s3):
    playwright = pytest.importorskip("playwright.sync_api")
    import json

    from p2m.tasks.storage.remote import filesystem

    filesystem().pipe(
        "p2m/inputs/numbers_test.jsonl",
        "".join(json.dumps({"input": w, "output": d}) + "\n" for w, d in TEST_SET).encode(),
    )
    port, demo_port = free_port(), free_port()
    ui = f"http://127.0.0.1:{port}"
    server_env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": f"{ui}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "true",
    }
    # The worker's machine, as its admin set it up: teacher endpoint, S3 credentials, the datasets,
    # runs kept in S3, small settings for a one-minute run. The person at the UI sees none of it.
    worker_env = {
        **server_env,
        "OPENAI_BASE_URL": numbers_server.base_url,
        "OPENAI_API_KEY": "test",
        "P2M_HOME": str(tmp_path / "home"),
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(tmp_path / "results"),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "P2M_DATASETS_DIR": str(DATASETS),
        "P2M_RUNS_ROOT": "s3://p2m/runs",
        "P2M_DEMO_PORT": str(demo_port),
        **{
            f"P2M_{section.upper()}__{name.upper()}": str(value)
            for section, values in QUICK.items()
            for name, value in values.items()
            if (section, name) not in {("generation", "num_examples"), ("retrieval", "model")}
        },
    }
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=server_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    worker = None
    try:
        wait_until_serving(server, f"{ui}/api/health", "Prefect server", 90, tmp_path / "server.log")
        deployed = subprocess.run(
            [sys.executable, "-c", DEPLOY], env=server_env, cwd=REPO, capture_output=True, text=True, timeout=180
        )
        assert deployed.returncode == 0, deployed.stderr[-2000:]
        deployment_id = deployed.stdout.split()[-1]
        with open(tmp_path / "worker.log", "wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "prefect", "worker", "start", "--pool", "cpu"],
                cwd=REPO,
                env=worker_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        with playwright.sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1300, "height": 1400})
            page.goto(f"{ui}/deployments/deployment/{deployment_id}/run")
            examples = field(page, "num_examples")
            examples.wait_for(timeout=60_000)
            assert examples.get_attribute("type") == "number" and examples.input_value() == str(
                GenerationConfig().num_examples
            )  # the default, as a number
            page.screenshot(path=str(tmp_path / "1-form-defaults.png"))

            field(page, "prompt").fill(PASTED)
            examples.fill("-1")
            page.get_by_role("button", name="Submit").click()
            page.get_by_text(re.compile("must be greater than or equal to 0|minimum", re.I)).first.wait_for(
                timeout=15_000
            )
            page.screenshot(path=str(tmp_path / "2-form-refuses.png"))
            assert httpx.post(f"{ui}/api/flow_runs/count", json={}).json() == 0  # refused before any run started

            examples.fill("6")
            field(page, "eval_data").fill("s3://p2m/inputs/numbers_test.jsonl")
            field(page, "model").fill("tiny-gpt2")
            page.screenshot(path=str(tmp_path / "3-form-filled.png"))
            field(page, "prompt").scroll_into_view_if_needed()
            page.screenshot(path=str(tmp_path / "3-form-prompt.png"))
            run_name = page.locator(".flow-run-name-input input").input_value()
            page.get_by_role("button", name="Submit").click()
            page.wait_for_url(
                re.compile(r".*/deployments/deployment/.*"), timeout=30_000
            )  # Submit leads to the deployment's runs
            deadline = time.monotonic() + 30
            while not (
                found := httpx.post(
                    f"{ui}/api/flow_runs/filter", json={"flow_runs": {"name": {"any_": [run_name]}}}
                ).json()
            ):
                assert time.monotonic() < deadline, "Submit created no flow run"
                time.sleep(0.5)
            [flow_run] = found
            page.goto(f"{ui}/runs/flow-run/{flow_run['id']}")
            flow_run_id = flow_run["id"]

            deadline = time.monotonic() + 600
            while (state := httpx.get(f"{ui}/api/flow_runs/{flow_run_id}").json()["state"])["type"] not in (
                "COMPLETED",
                "FAILED",
                "CRASHED",
            ):
                assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
                time.sleep(2)
            assert state["type"] == "COMPLETED", (tmp_path / "worker.log").read_text()[-5000:]

            page.reload()
            page.get_by_text("Completed").first.wait_for(timeout=30_000)
            page.screenshot(path=str(tmp_path / "4-run-page.png"))
            page.get_by_text("Artifacts", exact=True).first.click()
            page.get_by_text("p2m-summary").first.wait_for(timeout=30_000)
            page.screenshot(path=str(tmp_path / "5-run-artifacts.png"))
            artifacts = httpx.post(
                f"{ui}/api/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}}
            ).json()
            by_key = {a["key"]: a for a in artifacts}
            assert {"p2m-summary", "p2m-loss-curve", "p2m-student-vs-teacher", "p2m-demo"} <= set(by_key)

            page.get_by_text("p2m-summary").first.click()
            page.get_by_text("eval_data (3 examples)").wait_for(timeout=30_000)
            page.set_viewport_size({"width": 1300, "height": 2200})  # the whole summary in one screenshot
            demo_link = page.get_by_role("link", name=f"http://127.0.0.1:{demo_port}/")
            demo_link.wait_for(timeout=10_000)
            page.screenshot(path=str(tmp_path / "6-summary.png"))
            summary_text = page.locator("body").inner_text()

            # The person follows the link: the demo page of this run's model (publishing checked that
            # the model answers through it), titled with the pasted instruction.
            page.goto(demo_link.get_attribute("href"))
            page.get_by_label("Input").wait_for(timeout=60_000)
            page.get_by_text("Convert the number written in English words to digits").first.wait_for(timeout=10_000)
            page.screenshot(path=str(tmp_path / "7-demo.png"))
            browser.close()
        assert re.search(r"exact_match\s+[\d.]+\s+1\.0", summary_text), (
            summary_text
        )  # student and teacher (always right) scored
        assert "Run folder: s3://p2m/runs/convert-the-number-written-in-english" in summary_text
        assert f"http://127.0.0.1:{demo_port}/" in by_key["p2m-demo"]["data"]
    finally:
        stop_demo(tmp_path / "home", demo_port)
        if worker is not None:
            stop(worker)
        server.terminate()
        server.wait(timeout=30)
