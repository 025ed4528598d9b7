"""Child processes that serve HTTP (the local teacher, the published demo): ports and readiness."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx
from p2m.tasks.errors import P2MError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(proc: subprocess.Popen, url: str, name: str, timeout_s: float, log_path: Path) -> None:
    """Return once `url` answers (status below 500); raise P2MError if `proc` dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise P2MError(f"the {name} exited at start (code {proc.returncode}); see {log_path}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise P2MError(f"the {name} did not answer within {timeout_s:.0f}s; see {log_path}")
        time.sleep(0.5)
