"""Kill -9 in the middle of `p2m generate`, start it again: nothing paid twice, nothing accepted lost."""

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

from p2m.tasks.core.config import GenerationConfig, LimitsConfig
from p2m.tasks.core.run_store import dataset_rows, read_jsonl
from p2m.tasks.stages.generate import generate_examples
from p2m.tasks.stages.parse import parse_prompt, read_prompt_file
from p2m.tasks.teacher.client import Endpoint, LLMClient

from tests.conftest import EXAMPLE, REPO
from tests.fake_llm_server import FakeLLMServer, request_kind, words_to_number

CFG = dict(num_examples=24, votes=2)  # as the command line below sets them


def hashed_teacher(messages, request):
    """Deterministic: the same request always gets the same reply, whoever sends it."""
    from examples.make_datasets import number_to_words

    kind, value = request_kind(messages)
    if kind == "generate":
        numbers = [
            int(hashlib.sha256(f"{messages}{request.get('temperature')}{i}".encode()).hexdigest(), 16) % 90_000 + 1000
            for i in range(value)
        ]
        return json.dumps({"examples": [{"input": number_to_words(n), "output": str(n)} for n in numbers]})
    if kind == "aspects":
        return json.dumps({"aspects": ["size", "round numbers"]})
    return words_to_number(str(value))


def test_kill_9_then_resume(tmp_path, prefect_harness):
    from prefect.settings import PREFECT_API_URL

    with FakeLLMServer(hashed_teacher, latency_s=0.05) as server:
        env = {
            **os.environ,
            "OPENAI_BASE_URL": server.base_url,
            "OPENAI_API_KEY": "test",
            "P2M_HOME": str(tmp_path / "home"),
            "PREFECT_API_URL": PREFECT_API_URL.value(),
        }
        cmd = [
            sys.executable,
            "-m",
            "p2m.flows.cli",
            "generate",
            str(EXAMPLE),
            "--out",
            str(tmp_path / "gen"),
            "--num-examples",
            "24",
            "--votes",
            "2",
            "--max-concurrency",
            "4",
            "--requests-per-minute",
            "6000",
        ]
        proc = subprocess.Popen(
            cmd + ["--seed", "0"], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        while server.answered < 12 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        answered_before = server.answered
        assert 0 < answered_before < 40, "the kill should land mid-generation"

        done = subprocess.run(cmd + ["--seed", "0"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]

        # Every request whose reply reached the cache is never sent again: each appears once as sent.
        log = read_jsonl(tmp_path / "gen" / "generation.jsonl")
        sent_keys = [r["key"] for r in log if not r["cached"]]
        assert len(sent_keys) == len(set(sent_keys))
        assert any(r["cached"] for r in log), "the resumed run should replay from the cache"
        # At most the requests in flight at the kill (max concurrency 4) were answered but not recorded.
        assert server.answered - len(sent_keys) <= 4

        # Nothing accepted is lost: the result equals an uninterrupted run's.
        limits = LimitsConfig(requests_per_minute=6000, max_concurrency=4)
        llm = LLMClient(Endpoint(server.base_url, "test", server.model), limits, tmp_path / "fresh.sqlite")
        reference = asyncio.run(
            generate_examples(llm, parse_prompt(read_prompt_file(EXAMPLE)), GenerationConfig(**CFG))
        )
    resumed = dataset_rows(tmp_path / "gen" / "generated")
    assert {r["source"] for r in resumed} == {"generated"}
    assert [{"input": r["input"], "output": r["output"]} for r in resumed] == reference.examples
