"""Serve (or replace) the student of a run folder as a long-running OpenAI-compatible endpoint."""

from __future__ import annotations

from pathlib import Path

from p2m.tasks.core.config import load_settings
from p2m.tasks.ship.serve_service import publish_student
from prefect import flow, task


@task(retries=1, retry_delay_seconds=10)
def serve_student_task(run_dir: str, host: str | None, port: int | None) -> dict:
    s = load_settings({"serve": {k: v for k, v in {"host": host, "port": port}.items() if v is not None}})
    return publish_student(Path(run_dir), s.home, s.serve)


@flow(name="p2m-serve-student")
def serve_student_flow(run_dir: str, port: int | None = None, host: str | None = None) -> dict:
    """Serve the student of `run_dir` behind /v1/chat/completions, replacing the server on the same port.

    Args:
        run_dir: A run folder with a trained model (exported to GGUF or ONNX on first serve).
        port: Port (default P2M_SERVE__PORT, 8080).
        host: Address to bind (default P2M_SERVE__HOST, 127.0.0.1: this machine only).
    """
    record = serve_student_task(run_dir, host, port)
    try:
        from prefect.artifacts import create_link_artifact

        create_link_artifact(
            record["base_url"], link_text=f"p2m student endpoint: {record['model']}", key="p2m-student-endpoint"
        )
    except Exception:  # no API to write to (a plain call): the returned record says it all
        pass
    return record
