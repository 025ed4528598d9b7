"""Publish (or replace) the long-running demo for a run folder, and report its URL in the UI."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from p2m.tasks.config import Settings
from p2m.tasks.demo_service import publish_demo


@task(retries=1, retry_delay_seconds=10)
def publish_demo_task(run_dir: str, host: str, port: int) -> dict:
    s = Settings()
    return publish_demo(Path(run_dir), s.home, host, port, s.demo_auth)


@flow(name="p2m-publish-demo")
def publish_demo_flow(run_dir: str, port: int | None = None, host: str | None = None) -> dict:
    """Serve the demo of `run_dir`, replacing the one on the same port; returns its URL and process.

    Args:
        run_dir: A run folder with a trained model.
        port: Port for the page (default P2M_DEMO_PORT, 7860).
        host: Address to bind (default P2M_DEMO_HOST, 127.0.0.1: this machine only).
    """
    s = Settings()
    record = publish_demo_task(run_dir, host or s.demo_host, port or s.demo_port)
    try:
        from prefect.artifacts import create_link_artifact

        create_link_artifact(record["url"], link_text=f"p2m demo: {Path(run_dir).name}", key="p2m-demo")
    except Exception:  # no API to write to (a plain call): the returned record says it all
        pass
    return record
