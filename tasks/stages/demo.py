"""Stage, publish demo: check that the run's model answers through its Gradio page.

The stage starts the page (`p2m.tasks.ship.demo`) on a free loopback port, asks it one
demonstration through the page's own API (`/predict`), stops it and writes `demo.json` with the
command that serves it for good (`p2m demo RUN_DIR`).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from p2m.tasks.core.processes import free_port
from p2m.tasks.core.run_store import write_json
from p2m.tasks.ship.demo import ask_demo, serve_demo


def check_demo(run_dir: Path) -> dict:
    """Start the demo on a free port, ask it one example through its API, stop it; write demo.json."""
    run_dir = Path(run_dir)
    app, url = serve_demo(run_dir, port=free_port(), block=False)
    try:
        sample, answer = ask_demo(url, run_dir)
    finally:
        with contextlib.redirect_stdout(io.StringIO()):  # Gradio prints "Closing server running on port"
            app.close()
    record = {"command": f"p2m demo {run_dir}", "checked": True, "sample_input": sample, "sample_output": answer}
    write_json(run_dir / "demo.json", record)
    return record
