"""Publishing the demo as a long-running service: start it, or replace the one on the same port.

The demo runs as its own process (`p2m demo RUN_DIR`), detached from the flow that published it,
so it keeps serving after the flow ends. A small state file per port under P2M_HOME/demos
remembers which process serves it, so publishing a newer model stops the old one first.
Publishing succeeds only when the page answers and the model answers one demonstration through
the page's own API.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from p2m.tasks.errors import P2MError
from p2m.tasks.processes import wait_until_serving
from p2m.tasks.run_store import read_json, write_json

HEALTH_TIMEOUT_S = 180


def _state_file(home: Path, port: int) -> Path:
    return Path(home) / "demos" / f"{port}.json"


def started_demo(record: dict) -> bool:
    """Whether the process in a state file is still the demo p2m started: same process id, same
    start time, a `demo` command line. A stale file (the demo died, its id was reused) is not."""
    import psutil

    try:
        proc = psutil.Process(int(record["pid"]))
        same_start = abs(proc.create_time() - float(record["started"])) < 5
        return same_start and "demo" in proc.cmdline() and os.getpgid(proc.pid) == proc.pid
    except (psutil.Error, KeyError, TypeError, ValueError, ProcessLookupError):
        return False


def stop_demo(home: Path, port: int) -> bool:
    """Stop the demo p2m started on `port`, if any; returns whether one was running.

    Only a process that `started_demo` recognises is stopped; a stale state file is just removed.
    """
    state = _state_file(home, port)
    if not state.exists():
        return False
    try:
        record = read_json(state)
    except ValueError:
        record = {}
    state.unlink()
    if not started_demo(record):
        return False
    pid = int(record["pid"])
    try:
        os.killpg(pid, signal.SIGTERM)  # the demo leads its own process group
    except ProcessLookupError:
        return False
    for _ in range(50):
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    os.killpg(pid, signal.SIGKILL)
    return True


def publish_demo(run_dir: Path, home: Path, host: str = "127.0.0.1", port: int = 7860, auth: str | None = None) -> dict:
    """Serve the demo of `run_dir` on host:port, replacing an earlier one there; returns its record.

    `auth` ("user:password") puts Gradio's login page in front of it. Raises P2MError when the
    page does not come up healthy (its log is in P2M_HOME/demos/PORT.log).
    """
    run_dir = Path(run_dir).resolve()
    if not (run_dir / "model").exists():
        raise P2MError(f"{run_dir} has no trained model to publish; run `p2m run PROMPT --out {run_dir}` first")
    replaced = stop_demo(home, port)
    log_path = _state_file(home, port).with_suffix(".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "p2m.flows.cli", "demo", str(run_dir), "--host", host, "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if k != "P2M_DEMO_AUTH"}
    if auth:
        env["P2M_DEMO_AUTH"] = auth  # in the environment, which only this user can read; a command line is public
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=Path(__file__).resolve().parent.parent,
        )
    import psutil

    write_json(
        _state_file(home, port),
        {"pid": proc.pid, "run_dir": str(run_dir), "started": psutil.Process(proc.pid).create_time()},
    )
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/"
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
    from p2m.tasks.demo import ask_demo

    wait_until_serving(proc, url, "demo", HEALTH_TIMEOUT_S, log_path)
    return ask_demo(url, run_dir, auth)
