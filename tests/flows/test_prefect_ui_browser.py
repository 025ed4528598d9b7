"""The run's plots as image artifacts in the Prefect UI, looked at in a real headless browser.

A `prefect server start` with its UI on loopback; a flow run publishes a PNG with
`plot_artifacts`; the artifact's page in chromium shows the image (decoded, not a broken icon).
Marker `browser`: `make test-browser` installs chromium and playwright and runs it.
"""

import os
import subprocess
import sys

import httpx
import pytest
from p2m.tasks.core.processes import free_port, wait_until_serving

from tests.conftest import REPO
from tests.ship.test_demo_browser import CHROMIUM, launch_chromium

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make test-browser installs it)"),
]

PUBLISH = """
import sys
from pathlib import Path
from prefect import flow
from p2m.flows.run.tracking import plot_artifacts

@flow
def publish(run_dir: str):
    return plot_artifacts(Path(run_dir))

print(publish(sys.argv[1]))
"""


def test_plot_artifact_renders_in_the_prefect_ui(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([0, 1, 2], [3.0, 1.5, 0.7], label="train loss")
    fig.savefig(tmp_path / "loss_curve.png", dpi=100)
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "true",
    }
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_serving(server, f"http://127.0.0.1:{port}/api/health", "Prefect server", 90, tmp_path / "server.log")
        made = subprocess.run(
            [sys.executable, "-c", PUBLISH, str(tmp_path)],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert made.returncode == 0 and "p2m-loss-curve" in made.stdout, made.stderr[-2000:]
        with playwright.sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page()
            found = httpx.post(
                f"http://127.0.0.1:{port}/api/artifacts/filter",
                json={"artifacts": {"key": {"any_": ["p2m-loss-curve"]}}},
            ).json()
            page.goto(f"http://127.0.0.1:{port}/artifacts/artifact/{found[0]['id']}")
            image = page.locator("img[src^='data:image/png']").first
            image.wait_for(timeout=60_000)
            width = page.wait_for_function(
                "img => img.complete && img.naturalWidth", arg=image.element_handle(), timeout=30_000
            ).json_value()
            page.screenshot(path=str(tmp_path / "artifact.png"), full_page=True)
            browser.close()
        assert width == 600  # the 6-inch, 100-dpi plot, decoded by the browser
    finally:
        server.terminate()
        server.wait(timeout=30)
