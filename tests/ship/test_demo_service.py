"""The demo as a long-running service: published, answering through its API, replaced on republish."""

import os

import pytest
from p2m.tasks.core.processes import free_port
from p2m.tasks.ship.demo_service import publish_demo, stop_demo


def test_publish_then_replace(run_folder, tmp_path):
    home, port = tmp_path / "home", free_port()
    try:
        first = publish_demo(run_folder, home, port=port)
        assert first["url"] == f"http://127.0.0.1:{port}/" and first["sample_output"] == "hello"
        assert not first["replaced_previous"]
        second = publish_demo(run_folder, home, port=port, auth="dana:secret")
        assert second["replaced_previous"] and second["pid"] != first["pid"] and second["auth"]
        import psutil

        assert "secret" not in " ".join(psutil.Process(second["pid"]).cmdline())  # `ps` shows command lines to everyone
        with pytest.raises(ProcessLookupError):
            os.kill(first["pid"], 0)  # the old demo is gone
    finally:
        stop_demo(home, port)


def test_a_stale_state_file_never_stops_someone_elses_process(tmp_path):
    """The demo that was on the port died long ago and its process id now belongs to something
    else: publishing again must not kill that process (it did: any pid in the file was killed)."""
    import json
    import subprocess

    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        state = tmp_path / "home" / "demos" / "7999.json"
        state.parent.mkdir(parents=True)
        state.write_text(json.dumps({"pid": other.pid, "run_dir": "/gone", "started": 0}))
        assert stop_demo(tmp_path / "home", 7999) is False
        assert other.poll() is None and not state.exists()
    finally:
        other.kill()
