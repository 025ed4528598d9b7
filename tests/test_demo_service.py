"""The demo as a long-running service: published, answering through its API, replaced on republish."""

import os

import pytest

from tasks.demo_service import publish_demo, stop_demo
from tasks.processes import free_port


def test_publish_then_replace(run_folder, tmp_path):
    home, port = tmp_path / "home", free_port()
    try:
        first = publish_demo(run_folder, home, port=port)
        assert first["url"] == f"http://127.0.0.1:{port}/" and first["sample_output"] == "hello"
        assert not first["replaced_previous"]
        second = publish_demo(run_folder, home, port=port, auth="dana:secret")
        assert second["replaced_previous"] and second["pid"] != first["pid"] and second["auth"]
        with pytest.raises(ProcessLookupError):
            os.kill(first["pid"], 0)  # the old demo is gone
    finally:
        stop_demo(home, port)
