"""Stops what a p2m command started when the command itself is killed outright (kill -9, the OOM killer).

A p2m run starts child processes: Prefect's temporary API server, the local teacher, a demo
checked in the pipeline. When p2m ends normally it stops them; killed with SIGKILL it cannot,
and they would run on as orphans holding ports and gigabytes. `start_reaper()` starts a small
watcher in its own session (so a Ctrl-C in the terminal does not take it down first); it notes
the command's descendants every half second and, once the command is gone, stops those still
running. Processes started in a session of their own (a demo `p2m publish` leaves serving) are
not the command's to stop and are left alone.

Run by hand: `python -m p2m.tasks.core.reaper PID`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

POLL_SECONDS = 0.5
GRACE_SECONDS = 5


def descendants(pid: int) -> dict[int, float]:
    """{pid: start time} of the process's descendants in its own session."""
    import psutil

    try:
        parent = psutil.Process(pid)
        session = os.getsid(pid)
        found = {}
        for child in parent.children(recursive=True):
            try:
                if os.getsid(child.pid) == session:
                    found[child.pid] = child.create_time()
            except (psutil.Error, ProcessLookupError):
                continue
        return found
    except (psutil.Error, ProcessLookupError):
        return {}


def stop_all(processes: dict[int, float]) -> list[int]:
    """SIGTERM the processes that are still the ones noted (same start time), then SIGKILL what
    is left after GRACE_SECONDS; returns the process ids stopped."""
    import psutil

    alive = []
    for pid, started in processes.items():
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - started) < 1:
                proc.terminate()
                alive.append(proc)
        except psutil.Error:
            continue
    _, still = psutil.wait_procs(alive, timeout=GRACE_SECONDS)
    for proc in still:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return [p.pid for p in alive]


def watch(pid: int) -> None:
    """Note `pid`'s descendants until it is gone, then stop the ones still running."""
    import psutil

    seen: dict[int, float] = {}
    try:
        watched = psutil.Process(pid)
        while watched.is_running() and watched.status() != psutil.STATUS_ZOMBIE:
            seen = descendants(pid) or seen
            time.sleep(POLL_SECONDS)
    except psutil.Error:
        pass
    stop_all(seen)


def start_reaper() -> subprocess.Popen:
    """Start the watcher for this process; it exits by itself once this process has ended."""
    return subprocess.Popen(
        [sys.executable, "-m", "p2m.tasks.core.reaper", str(os.getpid())],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


if __name__ == "__main__":
    watch(int(sys.argv[1]))
