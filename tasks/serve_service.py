"""`p2m serve` as a long-running service: start it, or replace the one on the same port.

The pattern of the published demo (`p2m.tasks.demo_service`): the server runs as its own process
(`p2m serve RUN_DIR`), detached from the flow that started it; a state file per port under
P2M_HOME/students remembers which process serves it, so serving a newer model (a promotion)
stops the old one first. Starting succeeds only when `/v1/models` answers and the student
answers one demonstration through the OpenAI protocol. The API key travels in the environment
(P2M_SERVE__API_KEY), never on a command line, which `ps` shows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from p2m.tasks.config import ServeConfig
from p2m.tasks.errors import P2MError
from p2m.tasks.processes import wait_until_serving
from p2m.tasks.run_store import read_json, write_json

# A first start may export the model (GGUF conversion and the check on the held-out split).
HEALTH_TIMEOUT_S = 900


def _state_file(home: Path, port: int) -> Path:
    return Path(home) / "students" / f"{port}.json"


def started_server(record: dict) -> bool:
    """Whether the process in a state file is still the server p2m started (same id, start time, command)."""
    import psutil

    try:
        proc = psutil.Process(int(record["pid"]))
        return (
            abs(proc.create_time() - float(record["started"])) < 5
            and "serve" in proc.cmdline()
            and os.getpgid(proc.pid) == proc.pid
        )
    except (psutil.Error, KeyError, TypeError, ValueError, ProcessLookupError):
        return False


def stop_student_server(home: Path, port: int) -> bool:
    """Stop the student server p2m started on `port`, if any; returns whether one was running."""
    state = _state_file(home, port)
    if not state.exists():
        return False
    try:
        record = read_json(state)
    except ValueError:
        record = {}
    state.unlink()
    if not started_server(record):
        return False
    pid = int(record["pid"])
    try:
        os.killpg(pid, signal.SIGTERM)  # the server leads its own process group
    except ProcessLookupError:
        return False
    for _ in range(100):
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    os.killpg(pid, signal.SIGKILL)
    return True


def running_server(home: Path, port: int) -> dict | None:
    """The record of the server p2m started on `port`, if it is still running."""
    state = _state_file(home, port)
    try:
        record = read_json(state) if state.exists() else None
    except ValueError:
        return None
    return record if record and started_server(record) else None


def publish_student(run_dir: Path, home: Path, cfg: ServeConfig) -> dict:
    """Serve the student of `run_dir` on cfg.host:cfg.port, replacing an earlier server there; returns its record.

    Raises P2MError when the server does not come up and answer (its log is in P2M_HOME/students/PORT.log).
    """
    from p2m.tasks.serve import model_name

    run_dir = Path(run_dir).resolve()
    if not (run_dir / "model").exists():
        raise P2MError(f"{run_dir} has no trained model to serve; run `p2m run PROMPT --out {run_dir}` first")
    replaced = stop_student_server(home, cfg.port)
    log_path = _state_file(home, cfg.port).with_suffix(".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "p2m.flows.cli",
        "serve",
        str(run_dir),
        "--host",
        cfg.host,
        "--port",
        str(cfg.port),
    ]
    env = {k: v for k, v in os.environ.items() if k != "P2M_SERVE__API_KEY"}
    if cfg.api_key:
        env["P2M_SERVE__API_KEY"] = cfg.api_key
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
        _state_file(home, cfg.port),
        {"pid": proc.pid, "run_dir": str(run_dir), "started": psutil.Process(proc.pid).create_time()},
    )
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    base_url = f"http://{host}:{cfg.port}/v1"
    wait_until_serving(proc, f"http://{host}:{cfg.port}/health", "student server", HEALTH_TIMEOUT_S, log_path)
    sample, answer = ask_student(base_url, run_dir, cfg.api_key)
    record = {
        "base_url": base_url,
        "model": model_name(run_dir),
        "pid": proc.pid,
        "run_dir": str(run_dir),
        "replaced_previous": replaced,
        "api_key": bool(cfg.api_key),
        "sample_input": sample,
        "sample_output": answer,
        "log": str(log_path),
    }
    write_json(run_dir / "serve.json", record)
    return record


def ask_student(base_url: str, run_dir: Path, api_key: str | None = None) -> tuple[str, str]:
    """(a demonstration's input, the served student's answer to it), asked with the openai client."""
    import openai
    from p2m.tasks.serve import model_name

    spec = read_json(Path(run_dir) / "spec.json")
    sample = spec["demonstrations"][0]["input"] if spec.get("demonstrations") else "hello"
    client = openai.OpenAI(base_url=base_url, api_key=api_key or "none", max_retries=2, timeout=120)
    reply = client.chat.completions.create(model=model_name(run_dir), messages=[{"role": "user", "content": sample}])
    return sample, reply.choices[0].message.content
