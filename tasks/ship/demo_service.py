"""Publishing the demo as a long-running service: start it, or replace the one on the same port.

The demo runs as its own process (`p2m demo RUN_DIR`), detached from the flow that published it,
so it keeps serving after the flow ends. A small state file per port under P2M_HOME/demos
remembers which process serves it, so publishing a newer model stops the old one first.
Publishing succeeds only when the page answers and the model answers one demonstration through
the page's own API.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from p2m.tasks.core.errors import P2MError
from p2m.tasks.core.processes import (
    ServiceSlot,
    check_exposure,
    reachable_host,
    service_environment,
    wait_until_serving,
)
from p2m.tasks.core.run_store import write_json

HEALTH_TIMEOUT_S = 180


def demo_slot(home: Path, port: int) -> ServiceSlot:
    """The demo p2m runs on `port` (state in P2M_HOME/demos/PORT.json, log beside it)."""
    return ServiceSlot(Path(home), "demos", "demo", port)


def stop_demo(home: Path, port: int) -> bool:
    """Stop the demo p2m started on `port`, if any; returns whether one was running.

    Only a process that the state file still describes is stopped; a stale file is just removed.
    """
    return demo_slot(home, port).stop(wait_s=5)


def publish_demo(
    run_dir: Path,
    home: Path,
    host: str = "127.0.0.1",
    port: int = 7860,
    auth: str | None = None,
    insecure: bool = False,
) -> dict:
    """Serve the demo of `run_dir` on host:port, replacing an earlier one there; returns its record.

    `auth` ("user:password") puts Gradio's login page in front of it; beyond loopback, one is
    needed unless `insecure` (`p2m.tasks.core.processes.check_exposure`). Raises P2MError when the
    page does not come up healthy (its log is in P2M_HOME/demos/PORT.log).
    """
    run_dir = Path(run_dir).resolve()
    if not (run_dir / "model").exists():
        raise P2MError(f"{run_dir} has no trained model to publish; run `p2m run PROMPT --out {run_dir}` first")
    check_exposure(host, bool(auth), insecure, "the demo", "P2M_DEMO_AUTH (user:password)")
    slot = demo_slot(home, port)
    replaced = slot.stop(wait_s=5)
    env = service_environment({"P2M_DEMO_INSECURE_NO_AUTH": str(insecure).lower()})
    if auth:
        env["P2M_DEMO_AUTH"] = auth  # in the environment, which only this user can read; a command line is public
    proc = slot.start(run_dir, ["--host", host, "--port", str(port)], env)
    log_path = slot.log_path
    url = f"http://{reachable_host(host)}:{port}/"
    sample = check_health(url, proc, run_dir, auth, log_path)
    record = {
        "url": url,
        "pid": proc.pid,
        "run_dir": str(run_dir),
        "replaced_previous": replaced,
        "auth": bool(auth),
        "sample_input": sample[0],
        "sample_output": sample[1],
        "log": str(log_path),
    }
    write_json(run_dir / "demo_service.json", record)
    return record


def check_health(url: str, proc: subprocess.Popen, run_dir: Path, auth: str | None, log_path: Path) -> tuple[str, str]:
    """Wait until the page answers, then ask the model one demonstration through the page's API."""
    # lazy: the demo app loads torch and gradio; the service runs it in a child process
    from p2m.tasks.ship.demo import ask_demo

    wait_until_serving(proc, url, "demo", HEALTH_TIMEOUT_S, log_path)
    return ask_demo(url, run_dir, auth)
