"""Child processes that serve HTTP (the local teacher, the demo, the student server): ports, readiness,
and the long-running ones p2m starts and later replaces."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from p2m.tasks.core.errors import BadInputError, P2MError
from p2m.tasks.core.run_store import read_json, write_json

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # where the services start: the checkout or site-packages/p2m


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_port_free(host: str, port: int) -> None:
    """Raise BadInputError when nothing can listen on `host`:`port` (taken, not this machine's, not a port).

    Checked before a server starts: llama.cpp's server, told a port it cannot bind, waits forever.
    """
    with socket.socket() as s:
        # As the servers bind: a port whose last server just stopped (connections in TIME_WAIT) is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except (OSError, OverflowError) as e:
            reason = getattr(e, "strerror", None) or "invalid port"
            raise BadInputError(f"cannot serve on {host}:{port} ({reason}); pass another --port") from None


WILDCARD_HOSTS = ("0.0.0.0", "::")  # bind to every interface; not an address a client can connect to


def reachable_host(host: str) -> str:
    """The address a client on this machine connects to for a server bound to `host`: the
    loopback for a wildcard bind (0.0.0.0, ::), else `host` itself. Health checks and the URLs
    p2m reports are built on it (`p2m.flows.publish_demo.link_demo` names this machine instead,
    for other machines to reach)."""
    return "127.0.0.1" if host in WILDCARD_HOSTS else host


def is_loopback(host: str) -> bool:
    """Whether `host` is an address only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def check_exposure(host: str, protected: bool, insecure: bool, what: str, protect_with: str) -> None:
    """Refuse to serve `what` beyond this machine with nothing in front of it.

    Raises BadInputError when `host` is not a loopback address, nothing protects the service
    (`protected`: a key or a password is set) and the user did not ask for it open (`insecure`,
    --insecure-no-auth); with that, prints a warning instead.
    """
    if protected or is_loopback(host):
        return
    if not insecure:
        raise BadInputError(
            f"{what} on {host} would answer anyone who can reach this machine: set {protect_with}, "
            "or pass --insecure-no-auth to serve it open anyway"
        )
    print(
        f"p2m: warning: {what} on {host} is open to anyone who can reach this machine (--insecure-no-auth)",
        file=sys.stderr,
        flush=True,
    )


def service_environment(keep: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a long-running service, without the secrets it never needs
    (the teacher's key, the demo's password, the student server's key), plus `keep`."""
    secrets = ("OPENAI_API_KEY", "P2M_DEMO_AUTH", "P2M_SERVE__API_KEY")
    return {k: v for k, v in os.environ.items() if k not in secrets} | (keep or {})


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


@dataclass(frozen=True)
class ServiceSlot:
    """The long-running `p2m COMMAND RUN_DIR` process on one port (a demo, a student server).

    A state file HOME/FOLDER/PORT.json remembers which process serves the port, so publishing a
    newer model stops the old one first. A process is p2m's only while the file's process id,
    start time and command word all still match: a stale file (the process died and its id was
    reused) never gets someone else's process killed.
    """

    home: Path
    folder: str  # under home: "demos", "students"
    command: str  # the p2m subcommand: "demo", "serve"
    port: int

    @property
    def state_file(self) -> Path:
        return Path(self.home) / self.folder / f"{self.port}.json"

    @property
    def log_path(self) -> Path:
        return self.state_file.with_suffix(".log")

    def is_ours(self, record: dict) -> bool:
        """Whether `record`'s process is still the one p2m started: same id, start time and command."""
        import psutil

        try:
            proc = psutil.Process(int(record["pid"]))
            same_start = abs(proc.create_time() - float(record["started"])) < 5
            return same_start and self.command in proc.cmdline() and os.getpgid(proc.pid) == proc.pid
        except (psutil.Error, KeyError, TypeError, ValueError, ProcessLookupError):
            return False

    def running(self) -> dict | None:
        """The state record of p2m's process on this port, if it still runs."""
        try:
            record = read_json(self.state_file) if self.state_file.exists() else None
        except ValueError:
            return None
        return record if record and self.is_ours(record) else None

    def stop(self, wait_s: float = 10) -> bool:
        """Stop p2m's process on this port (its whole process group), if any; returns whether one ran."""
        record = self.running()
        self.state_file.unlink(missing_ok=True)
        if record is None:
            return False
        pid = int(record["pid"])
        try:
            os.killpg(pid, signal.SIGTERM)  # it leads its own process group
        except ProcessLookupError:
            return False
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.1)
        os.killpg(pid, signal.SIGKILL)
        return True

    def start(self, run_dir: Path, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        """Start `p2m COMMAND RUN_DIR ARGS...` detached (own session), output to the log; records it.

        Secrets go in `env`, never in `args`: a command line is visible to every local user.
        """
        import psutil

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "p2m.flows.cli", self.command, str(run_dir), *args]
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=PACKAGE_ROOT
            )
        started = psutil.Process(proc.pid).create_time()
        write_json(self.state_file, {"pid": proc.pid, "run_dir": str(run_dir), "started": started})
        return proc
