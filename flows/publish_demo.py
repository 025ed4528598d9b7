"""Publish (or replace) the long-running demo for a run folder, and report its URL in the UI."""

from __future__ import annotations

import socket
from pathlib import Path

from p2m.tasks.core.config import Settings
from p2m.tasks.core.processes import reachable_host
from p2m.tasks.ship.demo_service import publish_demo
from prefect import flow, task
from prefect.cache_policies import NO_CACHE


# Never cached: what it makes is a running process, which a retry (same flow run) must start again.
@task(name="serve_demo", retries=1, retry_delay_seconds=10, cache_policy=NO_CACHE)
def serve_demo_task(run_dir: str, host: str, port: int) -> dict:
    s = Settings()
    return publish_demo(Path(run_dir), s.home, host, port, s.demo_auth, s.demo_insecure_no_auth)


@flow(name="p2m-publish-demo")
def publish_demo_flow(run_dir: str, port: int | None = None, host: str | None = None) -> dict:
    """Serve the demo of `run_dir`, replacing the one on the same port; returns its URL and process.

    Args:
        run_dir: A run folder with a trained model.
        port: Port for the page (default P2M_DEMO_PORT, 7860).
        host: Address to bind (default P2M_DEMO_HOST, 127.0.0.1: this machine only).
    """
    s = Settings()
    record = serve_demo_task(run_dir, host or s.demo_host, port or s.demo_port)
    link_demo(record, host or s.demo_host)
    return record


def link_demo(record: dict, host: str = "127.0.0.1") -> str:
    """A link artifact to the published demo, on the page of the flow run that calls it; returns the URL.

    A demo bound to every interface (`host` 0.0.0.0) is linked by this machine's name, which
    other machines can reach; its record holds the loopback URL its health check used.
    """
    url = record["url"]
    if reachable_host(host) != host:  # a wildcard bind: the record's URL is the loopback one
        url = url.replace(reachable_host(host), socket.getfqdn(), 1)
    try:
        from prefect.artifacts import create_link_artifact

        create_link_artifact(
            url,
            link_text=f"p2m demo: {Path(record['run_dir']).name}",
            key="p2m-demo",
            description="The demo page serving this run's model",
        )
    except Exception:  # no API to write to (a plain call): the returned record says it all
        pass
    return url
