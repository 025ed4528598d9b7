"""Serving beyond this machine: never open without a key (student) or a password (demo), unless
asked for with --insecure-no-auth, which warns; services keep no secret they do not need."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from p2m.tasks.core.config import ServeConfig
from p2m.tasks.core.errors import BadInputError
from p2m.tasks.core.processes import check_exposure, free_port, is_loopback, service_environment, wait_until_serving

from tests.conftest import REPO


def p2m(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "p2m.flows.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=os.environ | (env or {}),
        timeout=120,
    )


def test_loopback_addresses():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "myhost.example"))


def test_open_beyond_loopback_is_refused_unless_asked_for_and_then_warned(capsys):
    check_exposure("127.0.0.1", protected=False, insecure=False, what="the demo", protect_with="X")
    check_exposure("0.0.0.0", protected=True, insecure=False, what="the demo", protect_with="X")
    with pytest.raises(BadInputError, match="the demo on 0.0.0.0 would answer anyone.*set X.*--insecure-no-auth"):
        check_exposure("0.0.0.0", protected=False, insecure=False, what="the demo", protect_with="X")
    assert capsys.readouterr().err == ""
    check_exposure("0.0.0.0", protected=False, insecure=True, what="the demo", protect_with="X")
    assert "warning: the demo on 0.0.0.0 is open to anyone" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_serve_and_demo_on_every_interface_without_a_secret_exit_2_in_one_line(run_folder, command):
    done = p2m(command, str(run_folder), "--host", "0.0.0.0", "--port", str(free_port()))
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "--insecure-no-auth" in done.stderr, done.stderr


def test_publishing_beyond_loopback_without_a_secret_starts_nothing(run_folder, tmp_path):
    from p2m.tasks.ship.demo_service import publish_demo
    from p2m.tasks.ship.serve_service import publish_student

    with pytest.raises(BadInputError, match="P2M_SERVE__API_KEY"):
        publish_student(run_folder, tmp_path / "home", ServeConfig(host="0.0.0.0", port=free_port()))
    with pytest.raises(BadInputError, match="P2M_DEMO_AUTH"):
        publish_demo(run_folder, tmp_path / "home", host="0.0.0.0", port=free_port())
    assert not (tmp_path / "home").exists()  # no state file: no process was started


def test_long_running_services_do_not_inherit_the_teachers_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-teacher")
    monkeypatch.setenv("P2M_DEMO_AUTH", "u:p")
    env = service_environment({"P2M_SERVE__API_KEY": "k3y"})
    assert "OPENAI_API_KEY" not in env and "P2M_DEMO_AUTH" not in env and env["P2M_SERVE__API_KEY"] == "k3y"


def test_a_student_on_every_interface_refuses_requests_without_its_key(run_folder, tmp_path):
    """`p2m serve --host 0.0.0.0` with a key: /v1/ needs it, /health answers without giving any path."""
    import shutil

    shutil.copytree(run_folder.parent / "splits", run_folder / "splits")  # the export is checked on the test split
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "p2m.flows.cli", "serve", str(run_folder), "--host", "0.0.0.0", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=os.environ | {"P2M_SERVE__API_KEY": "k3y", "P2M_SERVE__PARALLEL": "1", "P2M_SERVE__MAX_TOKENS": "8"},
        )
    try:
        wait_until_serving(proc, f"http://127.0.0.1:{port}/health", "student server", 300, log)
        health = httpx.get(f"http://127.0.0.1:{port}/health")
        assert health.status_code == 200 and str(run_folder) not in health.text and "/" not in health.json()["model"]
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401
        keyed = httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": "Bearer k3y"})
        assert keyed.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
