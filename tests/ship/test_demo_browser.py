"""The published demo in a real headless browser (Debian's chromium, driven by Playwright).

Needs chromium and playwright, which the default set-up does not install: `make test-browser`
installs them and runs this file; elsewhere it is skipped.
"""

import shutil

import pytest
from p2m.tasks.core.processes import free_port
from p2m.tasks.ship.demo_service import publish_demo, stop_demo

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def launch_chromium(playwright):
    """Debian's headless chromium, with nothing that would reach the network or need a GPU."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    )


pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make test-browser installs it)"),
]


def test_page_loads_takes_input_and_shows_the_answer(run_folder, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    home, port = tmp_path / "home", free_port()
    try:
        record = publish_demo(run_folder, home, port=port)
        with playwright.sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page()
            page.goto(record["url"])
            page.get_by_label("Input").fill("abc")
            page.get_by_role("button", name="Submit").click()
            output = page.get_by_label("Output")
            page.wait_for_function("el => el.value.length > 0", arg=output.element_handle(), timeout=60_000)
            answer = output.input_value()
            page.screenshot(path=str(tmp_path / "demo.png"))
            browser.close()
        assert answer == record["sample_output"] == "hello"  # the page shows what the model answers
    finally:
        stop_demo(home, port)
