"""Exports (GGUF, ONNX) of tiny trained students, checked against the original; the OpenAI-compatible server."""

from __future__ import annotations

import threading
import time

import pytest
from p2m.flows.cli.main import main
from p2m.tasks.core.config import ServeConfig
from p2m.tasks.core.errors import P2MError
from p2m.tasks.core.run_store import read_json


def make_run(folder, name: str):
    """A run folder whose tiny model has learned to answer "hello" (a few seconds of training)."""
    import datasets
    from p2m.tasks.core.config import Settings, TrainConfig
    from p2m.tasks.core.run_store import rows_to_dataset, write_json
    from p2m.tasks.stages.train import train_student

    rows = [{"input": f"x{i}", "output": "hello", "source": "generated"} for i in range(40)]
    datasets.DatasetDict(
        {k: rows_to_dataset(rows, ("input", "output", "source")) for k in ("train", "validation", "test")}
    ).save_to_disk(str(folder / "splits"))
    arch = "decoder-only" if name == "tiny-gpt2" else "encoder-decoder"
    choice = {"name": name, "path": f"embedded:{name}", "architecture": arch}
    train_student(
        folder / "splits", choice, "Say hello.", TrainConfig(epochs=15, learning_rate=3e-3), folder, Settings().home
    )
    write_json(
        folder / "spec.json", {"instruction": "Say hello.", "demonstrations": [{"input": "abc", "output": "hello"}]}
    )
    write_json(folder / "model_choice.json", choice)
    return folder


@pytest.fixture(scope="module")
def gpt2_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("gpt2") / "run", "tiny-gpt2")


@pytest.fixture(scope="module")
def t5_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("t5") / "run", "tiny-t5")


CFG = ServeConfig(parallel=2, max_tokens=16)


# The default run keeps one export per runtime (GGUF q8_0, ONNX int8); the encoder-decoder ONNX export
# is also made, checked and served by the served-student test below.
@pytest.mark.parametrize(
    "fixture, fmt, quant, files",
    [
        ("gpt2_run", "gguf", "q8_0", ["model-q8_0.gguf"]),
        ("gpt2_run", "onnx", "int8", ["model.onnx"]),
        pytest.param("gpt2_run", "gguf", None, ["model-f16.gguf"], marks=pytest.mark.slow),
        pytest.param("t5_run", "onnx", None, ["decoder.onnx", "encoder.onnx"], marks=pytest.mark.slow),
    ],
)
def test_export_round_trip_matches_the_original(request, fixture, fmt, quant, files):
    from p2m.tasks.ship.export import export_student

    run = request.getfixturevalue(fixture)
    record = export_student(run, fmt, quant, CFG, CFG.max_tokens)
    name = f"{fmt}-{quant or ('f16' if fmt == 'gguf' else 'fp32')}"
    assert record["path"] == str(run / "exports" / name)
    assert record["files"] == files and all((run / "exports" / name / f).exists() for f in files)
    assert read_json(run / "exports" / name / "export.json")["exact_match"] == record["exact_match"]
    assert abs(record["exact_match"] - record["reference_exact_match"]) <= 0.01
    assert record["reference_exact_match"] > 0.5  # the student learned its task: the check compares real answers
    assert record["agreement"] >= 0.95 and record["n"] == 40
    assert record["size_mb"] > 0 and 0 < record["ms_p50"] <= record["ms_p95"]
    # The original was measured once per model: a second export reuses exports/reference.json.
    assert read_json(run / "exports" / "reference.json")["model_hash"] == record["model_hash"]
    # The per-format report: the model card gains a row for this export beside the original's.
    card = (run / "model_card.md").read_text()
    assert (
        "## Formats (held-out split, CPU, batch 1)" in card
        and f"| {name} | {record['size_mb']} |" in card
        and "| safetensors |" in card
    )


def test_an_export_that_drifts_is_refused_with_both_numbers_and_nothing_is_kept(gpt2_run, monkeypatch):
    import p2m.tasks.ship.export as export
    from p2m.tasks.student.runtime import Answer

    before = sorted(p.name for p in (gpt2_run / "exports").iterdir()) if (gpt2_run / "exports").exists() else []

    class Wrong:
        def predict(self, text):
            return Answer("goodbye", 1, 1)

        def close(self):
            pass

    monkeypatch.setattr(export, "load_student", lambda *a, **k: Wrong())
    with pytest.raises(
        P2MError,
        match=(
            r"onnx-fp32 export scores 0\.0% exact match .* "
            r"against \d+\.\d% for the original model \([\d.]+ points lower.*not kept"
        ),
    ):
        export.export_student(gpt2_run, "onnx", None, CFG, CFG.max_tokens)
    assert sorted(p.name for p in (gpt2_run / "exports").iterdir()) == before  # no onnx-fp32, no temporary folder left


def test_export_command_errors_are_one_line(t5_run, tmp_path, capsys):
    assert main(["export", str(t5_run), "--format", "gguf"]) == 2
    assert "decoder-only" in capsys.readouterr().err
    assert main(["export", str(t5_run), "--format", "onnx", "--quantize", "q8_0"]) == 2
    assert "not a onnx option" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--format", "onnx"]) == 2
    assert "run `p2m run" in capsys.readouterr().err


def test_the_gguf_export_command_shows_only_p2m_lines(gpt2_run):
    """llama.cpp logs every load and request at its default verbosity: some 300 lines on the terminal
    of `p2m export --format gguf` (and `p2m serve`), around p2m's own few."""
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "p2m.flows.cli", "export", str(gpt2_run), "--format", "gguf", "--quantize", "q8_0"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr[:2000]
    assert "exact match" in done.stdout and len(done.stdout.strip().splitlines()) < 10, done.stdout


class ServerThread:
    """uvicorn serving an app on a free loopback port, in a thread, for the length of a `with`."""

    def __init__(self, app):
        import uvicorn
        from p2m.tasks.core.processes import free_port

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}/v1"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.mark.parametrize("fixture", ["gpt2_run", "t5_run"])
def test_served_student_answers_the_openai_client_as_evaluation_would(request, fixture):
    import openai
    from p2m.tasks.ship.serve import build_app, model_name, open_student
    from p2m.tasks.student.runtime import TorchStudent

    run = request.getfixturevalue(fixture)
    student, record = open_student(run, None, None, CFG)
    assert record["format"] == ("gguf" if fixture == "gpt2_run" else "onnx")
    assert record["quantize"] == ("q8_0" if fixture == "gpt2_run" else "fp32")
    arch = read_json(run / "model_choice.json")["architecture"]
    original = TorchStudent(run / "model", arch, "Say hello.", CFG.max_tokens)
    name = model_name(run)
    try:
        with ServerThread(build_app(student, name, api_key="k3y", parallel=2, record=record)) as base_url:
            client = openai.OpenAI(base_url=base_url, api_key="k3y", max_retries=0)
            assert [m.id for m in client.models.list()] == [name]
            # The app's teacher call, with base_url and model changed: system message and all.
            reply = client.chat.completions.create(
                model=name,
                messages=[{"role": "system", "content": "You convert things."}, {"role": "user", "content": "x7"}],
            )
            assert reply.choices[0].message.content == original.predict("x7").text
            assert reply.choices[0].finish_reason == "stop" and reply.usage.prompt_tokens > 0
            stream = client.chat.completions.create(
                model=name, messages=[{"role": "user", "content": "x7"}], stream=True
            )
            assert "".join(c.choices[0].delta.content or "" for c in stream) == reply.choices[0].message.content
            # Concurrent clients get the same answers as one at a time.
            from concurrent.futures import ThreadPoolExecutor

            inputs = [f"x{i}" for i in range(8)]
            with ThreadPoolExecutor(4) as pool:
                served = list(
                    pool.map(
                        lambda x: (
                            client.chat.completions.create(model=name, messages=[{"role": "user", "content": x}])
                            .choices[0]
                            .message.content
                        ),
                        inputs,
                    )
                )
            assert served == [original.predict(x).text for x in inputs]
            with pytest.raises(openai.NotFoundError):
                client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x7"}])
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0).models.list()
            with pytest.raises(openai.BadRequestError):
                client.chat.completions.create(model=name, messages=[{"role": "system", "content": "no user"}])
    finally:
        student.close()


@pytest.mark.slow  # two `p2m serve` processes start (and the GGUF export is made): 30-75 s
def test_publish_student_serves_in_its_own_process_and_replaces_it(gpt2_run, tmp_path):
    import os

    import psutil
    from p2m.tasks.core.processes import free_port
    from p2m.tasks.ship.serve_service import publish_student, running_server, stop_student_server

    home, cfg = tmp_path / "home", ServeConfig(port=free_port(), api_key="k3y", parallel=2, max_tokens=16)
    try:
        first = publish_student(gpt2_run, home, cfg)
        assert (
            first["base_url"] == f"http://127.0.0.1:{cfg.port}/v1"
            and first["api_key"]
            and not first["replaced_previous"]
        )
        assert (
            first["sample_input"] == "abc"
            and first["sample_output"] == read_json(gpt2_run / "serve.json")["sample_output"]
        )
        assert "k3y" not in " ".join(psutil.Process(first["pid"]).cmdline())  # the key travels in the environment
        second = publish_student(gpt2_run, home, cfg)  # what a promotion does: the old server makes way
        assert second["replaced_previous"] and second["pid"] != first["pid"]
        assert running_server(home, cfg.port)["pid"] == second["pid"]
        with pytest.raises(ProcessLookupError):
            os.kill(first["pid"], 0)
    finally:
        stop_student_server(home, cfg.port)
    assert running_server(home, cfg.port) is None
