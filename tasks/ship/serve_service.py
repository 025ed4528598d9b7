"""`p2m serve` as a long-running service: start it, or replace the one on the same port.

The pattern of the published demo (`p2m.tasks.ship.demo_service`): the server runs as its own process
(`p2m serve RUN_DIR`), detached from the flow that started it; a state file per port under
P2M_HOME/students remembers which process serves it, so serving a newer model (a promotion)
stops the old one first. Starting succeeds only when `/v1/models` answers and the student
answers one demonstration through the OpenAI protocol. The API key travels in the environment
(P2M_SERVE__API_KEY), never on a command line, which `ps` shows.
"""

from __future__ import annotations

from pathlib import Path

from p2m.tasks.core.config import ServeConfig
from p2m.tasks.core.errors import P2MError
from p2m.tasks.core.processes import (
    ServiceSlot,
    check_exposure,
    reachable_host,
    service_environment,
    wait_until_serving,
)
from p2m.tasks.core.run_store import read_json, write_json

# A first start may export the model (GGUF conversion and the check on the held-out split).
HEALTH_TIMEOUT_S = 900


def student_slot(home: Path, port: int) -> ServiceSlot:
    """The student server p2m runs on `port` (state in P2M_HOME/students/PORT.json, log beside it)."""
    return ServiceSlot(Path(home), "students", "serve", port)


def stop_student_server(home: Path, port: int) -> bool:
    """Stop the student server p2m started on `port`, if any; returns whether one was running."""
    return student_slot(home, port).stop()


def running_server(home: Path, port: int) -> dict | None:
    """The record of the server p2m started on `port`, if it is still running."""
    return student_slot(home, port).running()


def publish_student(run_dir: Path, home: Path, cfg: ServeConfig) -> dict:
    """Serve the student of `run_dir` on cfg.host:cfg.port, replacing an earlier server there; returns its record.

    Raises P2MError when the server does not come up and answer (its log is in P2M_HOME/students/PORT.log).
    """
    # lazy: the server loads torch (through export); the service runs it in a child process
    from p2m.tasks.ship.serve import STUDENT_KEY_SETTING, model_name

    run_dir = Path(run_dir).resolve()
    if not (run_dir / "model").exists():
        raise P2MError(f"{run_dir} has no trained model to serve; run `p2m run PROMPT --out {run_dir}` first")
    check_exposure(cfg.host, bool(cfg.api_key), cfg.insecure_no_auth, "the student server", STUDENT_KEY_SETTING)
    slot = student_slot(home, cfg.port)
    replaced = slot.stop()
    env = service_environment({"P2M_SERVE__INSECURE_NO_AUTH": str(cfg.insecure_no_auth).lower()})
    if cfg.api_key:
        env["P2M_SERVE__API_KEY"] = cfg.api_key
    proc = slot.start(run_dir, ["--host", cfg.host, "--port", str(cfg.port)], env)
    log_path = slot.log_path
    host = reachable_host(cfg.host)
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
    from p2m.tasks.ship.serve import model_name  # lazy: the server loads torch (through export)

    spec = read_json(Path(run_dir) / "spec.json")
    sample = spec["demonstrations"][0]["input"] if spec.get("demonstrations") else "hello"
    client = openai.OpenAI(base_url=base_url, api_key=api_key or "none", max_retries=2, timeout=120)
    reply = client.chat.completions.create(model=model_name(run_dir), messages=[{"role": "user", "content": sample}])
    return sample, reply.choices[0].message.content
