"""Hard to break: bad input ends in one line on stderr and exit code 2 with nothing already made
changed; teacher faults are survived, or end the stage with a reason and the counts.

The command-line cases run `p2m` as a real process, as a user would: what they see on the
terminal is what is checked.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from p2m.tasks.core.config import LimitsConfig
from p2m.tasks.core.errors import P2MError
from p2m.tasks.core.spec import prompt_identity
from p2m.tasks.stages.parse import read_prompt_file
from p2m.tasks.teacher.client import Endpoint, LLMClient

from tests.conftest import DATASETS, EXAMPLE, REPO
from tests.fake_llm_server import FakeLLMServer, numbers_teacher

pytestmark = pytest.mark.reliability

GOOD_YAML = "instruction: Reverse the text.\ndemonstrations:\n  - input: abc\n    output: cba\n"


def p2m(*args: str, cwd: Path, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """`p2m ARGS` as its own process (no network, this session's P2M and Prefect homes)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "p2m.flows.cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def snapshot(folder: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder of bad inputs, and a run folder of the example prompt that must never change."""
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.txt").write_text("")
    (d / "binary.txt").write_bytes(os.urandom(2000) + b"\0")
    (d / "latin1.txt").write_bytes("Résumé: classe le ticket.\nInput: café\nOutput: boisson\n".encode("latin-1"))
    (d / "huge.txt").write_text("Classify.\n" + "Input: x\nOutput: y\n" * 20_000)
    (d / "bomb.yaml").write_text(
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
        "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
        "instruction: *c\n"
    )
    (d / "broken.yaml").write_text("instruction: Reverse it.\ndemonstrations:\n  - input: [abc\n")
    (d / "list.yaml").write_text("instruction:\n  - Reverse\n  - the text\n")
    (d / "nooutput.yaml").write_text("instruction: Reverse.\ndemonstrations:\n  - input: abc\n")
    (d / "unknown.yaml").write_text(GOOD_YAML + "instructions: typo\n")
    (d / "good.yaml").write_text(GOOD_YAML)
    (d / "a_file").write_text("not a folder")
    (d / "eval_empty.jsonl").write_text("")
    (d / "eval_broken.jsonl").write_text('{"input": "one", "output": "1"}\n{"input": "two", "output": \n')
    (d / "eval_nooutput.jsonl").write_text('{"input": "one", "output": "1"}\n{"input": "two"}\n')
    (d / "eval_quotes.csv").write_text('input,output\n"one,1\n')
    (d / "prices.json").write_text('{"m": "cheap"}')
    (d / "notadir").mkdir()
    (d / "notadir" / "stray.txt").write_text("someone's file")
    (d / "models" / "custom").mkdir(parents=True)  # a model folder whose config asks for custom code
    (d / "models" / "custom" / "config.json").write_text('{"model_type": "magic", "auto_map": {"AutoModel": "m.M"}}')
    made = d / "made"  # the example prompt's run folder, as if finished earlier
    made.mkdir()
    (made / "run.json").write_text(
        json.dumps({"prompt_hash": prompt_identity(read_prompt_file(EXAMPLE)), "prompt_file": str(EXAMPLE)})
    )
    (made / "summary.json").write_text('{"finished": true, "metrics": {"student": {}}}')
    (made / "spec.json").write_text("{}")
    (made / "model").mkdir()
    return d


EX = str(EXAMPLE)
BAD_INPUTS = [
    # (case, arguments with {d} for the folder of bad inputs, extra environment, words the one line must hold)
    ("missing prompt", ["run", "{d}/nope.txt", "--out", "{d}/o"], {}, "does not exist"),
    ("empty prompt", ["run", "{d}/empty.txt", "--out", "{d}/o"], {}, "is empty"),
    ("binary prompt", ["run", "{d}/binary.txt", "--out", "{d}/o"], {}, "binary"),
    ("latin-1 prompt", ["run", "{d}/latin1.txt", "--out", "{d}/o"], {}, "not UTF-8"),
    ("folder as prompt", ["run", "{d}", "--out", "{d}/o"], {}, "is a folder"),
    ("huge prompt", ["run", "{d}/huge.txt", "--out", "{d}/o"], {}, "P2M_PARSE__MAX_PROMPT_CHARS"),
    ("YAML alias bomb", ["run", "{d}/bomb.yaml", "--out", "{d}/o"], {}, "aliases"),
    ("malformed YAML", ["run", "{d}/broken.yaml", "--out", "{d}/o"], {}, "not valid YAML"),
    ("instruction as a list", ["run", "{d}/list.yaml", "--out", "{d}/o"], {}, "must be text"),
    ("demonstration without output", ["run", "{d}/nooutput.yaml", "--out", "{d}/o"], {}, "demonstration 1"),
    ("unknown YAML key", ["run", "{d}/unknown.yaml", "--out", "{d}/o"], {}, "unknown key"),
    ("--out is a file", ["run", EX, "--out", "{d}/a_file"], {}, "is a file"),
    ("--out holds another prompt's run", ["run", "{d}/good.yaml", "--out", "{d}/made"], {}, "another prompt"),
    ("--out holds other files", ["run", EX, "--out", "{d}/notadir"], {}, "not a p2m run folder"),
    ("--eval-data missing", ["run", EX, "--out", "{d}/made", "--eval-data", "{d}/nope.jsonl"], {}, "does not exist"),
    ("--eval-data empty", ["run", EX, "--out", "{d}/made", "--eval-data", "{d}/eval_empty.jsonl"], {}, "no rows"),
    (
        "--eval-data partly broken",
        ["run", EX, "--out", "{d}/made", "--eval-data", "{d}/eval_broken.jsonl"],
        {},
        "line 2",
    ),
    (
        "--eval-data row without output",
        ["run", EX, "--out", "{d}/made", "--eval-data", "{d}/eval_nooutput.jsonl"],
        {},
        "row 2",
    ),
    (
        "--eval-data CSV quote left open",
        ["run", EX, "--out", "{d}/made", "--eval-data", "{d}/eval_quotes.csv"],
        {},
        "line",
    ),
    ("--datasets-dir is a file", ["run", EX, "--out", "{d}/made", "--datasets-dir", "{d}/a_file"], {}, "not a folder"),
    (
        "--datasets-index not an index",
        ["run", EX, "--out", "{d}/made", "--datasets-index", "{d}/a_file"],
        {},
        "not an index",
    ),
    (
        "--dataset unknown",
        ["run", EX, "--out", "{d}/made", "--datasets-dir", str(DATASETS), "--dataset", "nope"],
        {},
        "no such dataset",
    ),
    ("--model unknown", ["run", EX, "--out", "{d}/made", "--model", "gpt-17"], {}, "unknown"),
    (
        "--model whose folder needs custom code",
        ["run", EX, "--out", "{d}/made", "--models-dir", "{d}/models", "--model", "custom"],
        {},
        "model type magic is not supported (it needs custom code",
    ),
    ("--num-examples negative", ["run", EX, "--out", "{d}/made", "--num-examples", "-3"], {}, "num_examples"),
    ("--num-examples huge", ["run", EX, "--out", "{d}/made", "--num-examples", "1000000000"], {}, "num_examples"),
    ("--num-examples not a number", ["run", EX, "--num-examples", "many"], {}, "invalid int"),
    ("unknown flag", ["run", EX, "--epoch", "3"], {}, "unrecognized arguments"),
    (
        "misspelt variable",
        ["run", EX, "--out", "{d}/made"],
        {"P2M_GENERATON__NUM_EXAMPLES": "5"},
        "P2M_GENERATION__NUM_EXAMPLES",
    ),
    ("bad variable value", ["run", EX, "--out", "{d}/made"], {"P2M_TRAIN__EPOCHS": "three"}, "P2M_TRAIN__EPOCHS"),
    (
        "OpenAI without a key",
        ["run", EX, "--out", "{d}/made"],
        {"OPENAI_BASE_URL": "https://api.openai.com/v1"},
        "needs a key",
    ),
    (
        "endpoint that is no URL",
        ["run", EX, "--out", "{d}/made"],
        {"OPENAI_BASE_URL": "localhost:8000"},
        "not an http(s) URL",
    ),
    ("bad price table", ["run", EX, "--out", "{d}/made"], {"P2M_PRICES_FILE": "{d}/prices.json"}, "P2M_PRICES_FILE"),
    ("train without a run", ["train", "{d}/notadir"], {}, "p2m run PROMPT"),
    ("evaluate with broken test set", ["evaluate", "{d}/made", "--eval-data", "{d}/eval_broken.jsonl"], {}, "line 2"),
    ("demo without a model", ["demo", "{d}/notadir"], {}, "no trained model"),
    ("demo login without a password", ["demo", "{d}/made", "--auth", "dana"], {}, "user:password"),
    ("generate into a file", ["generate", EX, "--out", "{d}/a_file"], {}, "is a file"),
    ("index into a file", ["index", "--out", "{d}/a_file"], {}, "is a file"),
    ("serve without a model", ["serve", "{d}/notadir"], {}, "no trained model"),
    ("export without a run", ["export", "{d}/notadir", "--format", "gguf"], {}, "p2m run PROMPT"),
    (
        "export with the other format's quantization",
        ["export", "{d}/made", "--format", "onnx", "--quantize", "q8_0"],
        {},
        "not a onnx option",
    ),
    ("rollback of a folder that is no nightly run", ["rollback", "{d}/made"], {}, "promotions.jsonl"),
    ("unknown teacher model", ["teacher", "--model", "gpt-17"], {}, "neither an embedded teacher"),
    ("teacher on a port that is none", ["teacher", "--port", "99999"], {}, "invalid port"),
    ("serve on a port that is none", ["serve", "{d}/made", "--port", "99999"], {}, "invalid port"),
    ("demo on port 0", ["demo", "{d}/made", "--port", "0"], {}, "invalid port"),
    ("publish on a port that is none", ["publish", "{d}/made", "--port", "http"], {}, "invalid port"),
    ("publish-student on a negative port", ["publish-student", "{d}/made", "--port", "-1"], {}, "invalid port"),
    (
        "deploy with a missing nightly prompt",
        ["deploy", "--nightly-prompt", "{d}/nope.txt", "--nightly-out", "{d}/nightly"],
        {"PREFECT_API_URL": "http://127.0.0.1:9/api"},
        "does not exist",
    ),
    (
        "deploy with half the nightly job",
        ["deploy", "--nightly-prompt", EX],
        {"PREFECT_API_URL": "http://127.0.0.1:9/api"},
        "--nightly-out",
    ),
    (
        "deploy with the nightly run folder holding another prompt's run",
        ["deploy", "--nightly-prompt", "{d}/good.yaml", "--nightly-out", "{d}/made"],
        {"PREFECT_API_URL": "http://127.0.0.1:9/api"},
        "another prompt",
    ),
    (
        "deploy with the index refresh into a file",
        ["deploy", "--index-out", "{d}/a_file"],
        {"PREFECT_API_URL": "http://127.0.0.1:9/api"},
        "is a file",
    ),
    ("index with a negative --hub-limit", ["index", "--out", "{d}/ix", "--hub-limit", "-1"], {}, "invalid count"),
    ("index from the Hub offline", ["index", "--out", "{d}/ix", "--hub-limit", "5"], {}, "HF_HUB_OFFLINE=0"),
    (
        "index from a Hub that does not answer",
        ["index", "--out", "{d}/ix", "--hub-limit", "5"],
        {"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"},
        "unreachable",
    ),
]


@pytest.mark.parametrize("case, args, env, words", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2_and_changes_nothing(workdir, case, args, env, words):
    before = snapshot(workdir)
    fill = lambda s: s.replace("{d}", str(workdir))  # noqa: E731
    result = p2m(*map(fill, args), cwd=REPO, env={k: fill(v) for k, v in env.items()})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("p2m: error: "), result.stderr
    assert words in lines[0], lines[0]
    assert snapshot(workdir) == before, "something already made was changed"


def test_an_unreachable_teacher_is_one_line_after_the_flow_started(workdir, tmp_path):
    """The teacher is contacted only when a stage needs it: the error comes from inside the flow,
    and Prefect's own error log and traceback stay off the terminal."""
    result = p2m(
        "run",
        EX,
        "--out",
        str(tmp_path / "run"),
        "--datasets-dir",
        str(DATASETS),
        "--model",
        "tiny-gpt2",
        "--num-examples",
        "4",
        cwd=REPO,
        env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"},
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2
    assert lines[-1].startswith("p2m: error: cannot reach the LLM endpoint"), result.stderr
    assert not [line for line in lines if "Traceback" in line or "ERROR" in line], result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["finished"] is False and "cannot reach" in summary["error"]


# --- teacher faults, on the LLM client ------------------------------------------------------

MSG = [{"role": "user", "content": "hi"}]


def client(server, tmp_path, **limits) -> LLMClient:
    settings = {
        "requests_per_minute": 60_000,
        "tokens_per_minute": 10_000_000,
        "request_timeout": 2,
        "give_up_after": 60,
    } | limits
    return LLMClient(
        Endpoint(server.base_url, "k", server.model),
        LimitsConfig(**settings),
        tmp_path / "cache.sqlite",
        log_path=tmp_path / "log.jsonl",
    )


def test_a_429_storm_with_short_retry_after_slows_down_and_succeeds(tmp_path):
    with FakeLLMServer(lambda m, r: "ok") as server:
        server.faults.extend(["429"] * 5)  # each says: retry after 50 ms
        c = client(server, tmp_path)
        started = time.monotonic()
        assert c.complete(MSG) == ["ok"]
    assert c.meter.rate_limited == 5 and c.meter.sent == 6
    assert time.monotonic() - started > 0.25 + 0.5 + 1 + 2 + 4 - 0.5  # backoff stretched the 50 ms, growing each time


def test_500s_then_an_answer(tmp_path):
    with FakeLLMServer(lambda m, r: "ok") as server:
        server.faults.extend(["500"] * 3)
        c = client(server, tmp_path)
        assert c.complete(MSG) == ["ok"] and c.meter.server_errors == 3


def test_a_teacher_that_hangs_ends_the_stage_within_its_give_up_time(tmp_path):
    with FakeLLMServer(lambda m, r: "ok") as server:
        server.fault_always = "hang"
        c = client(server, tmp_path, request_timeout=1, give_up_after=4)

        async def four():
            return await asyncio.gather(*[c.acomplete(MSG, salt=str(i)) for i in range(4)], return_exceptions=True)

        started = time.monotonic()
        results = asyncio.run(four())
        server.fault_always = None
    assert time.monotonic() - started < 20
    assert all(
        isinstance(r, P2MError) and "has answered nothing" in str(r) and "timeouts" in str(r) for r in results
    ), results


def test_an_endpoint_that_is_not_an_openai_server_is_named(tmp_path):
    with FakeLLMServer(lambda m, r: "ok") as server:
        server.fault_always = "html"
        c = client(server, tmp_path)
        with pytest.raises(P2MError, match="does not answer like an OpenAI chat-completions server.*nginx"):
            c.complete(MSG)
        assert c.meter.bad_replies == 3


@pytest.mark.parametrize("fault", ["badjson", "notopenai"])
def test_a_broken_body_from_a_working_server_is_retried_and_counted(tmp_path, fault):
    with FakeLLMServer(lambda m, r: "ok") as server:
        c = client(server, tmp_path)
        assert c.complete(MSG, salt="first") == ["ok"]
        server.faults.append(fault)
        assert c.complete(MSG, salt="second") == ["ok"] and c.meter.bad_replies == 1


def test_truncated_bodies_before_the_first_answer_are_retried(tmp_path):
    """A teacher whose first replies are JSON cut off in transit, then whole: every request is answered
    (it used to stop the stage after three, as if the endpoint were no OpenAI server)."""
    with FakeLLMServer(lambda m, r: "ok") as server:
        server.faults.extend(["badjson"] * 4)
        c = client(server, tmp_path)

        async def four():
            return await asyncio.gather(*[c.acomplete(MSG, salt=str(i)) for i in range(4)])

        assert asyncio.run(four()) == [["ok"]] * 4
    assert c.meter.bad_replies == 4


def test_a_reply_without_choices_is_retried_and_never_cached(tmp_path):
    with FakeLLMServer(lambda m, r: "ok") as server:
        c = client(server, tmp_path)
        assert c.complete(MSG, salt="first") == ["ok"]
        server.faults.append("empty")
        assert c.complete(MSG) == ["ok"] and c.meter.bad_replies == 1
        assert [r["status"] for r in server.requests] == [200, 200, 200]


def test_a_teacher_that_only_sends_empty_choices_stops_with_the_reason(tmp_path):
    with FakeLLMServer(lambda m, r: "ok") as server:
        server.fault_always = "empty"
        with pytest.raises(P2MError, match="without any choice"):
            client(server, tmp_path).complete(MSG)
        server.fault_always = None
        assert client(server, tmp_path).complete(MSG) == ["ok"]  # nothing was cached


def test_generation_without_a_single_example_fails_and_is_not_cached(tmp_path, prefect_harness, monkeypatch):
    """Every reply empty: generation fails with the reason; once the teacher is fixed, the same
    command generates (the empty stage result was not cached)."""
    from p2m.flows.generate import generate_flow

    overrides = {"generation": {"num_examples": 3, "batch_size": 1}}
    with FakeLLMServer(numbers_teacher, model="teacher-that-recovers") as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("P2M_TEACHER_MODEL", server.model)  # its own request cache keys
        server.fault_always = "empty"
        with pytest.raises(P2MError, match="without any choice"):
            generate_flow(prompt_file=str(EXAMPLE), out_dir=str(tmp_path / "gen"), overrides=overrides)
        assert "without any choice" in json.loads((tmp_path / "gen" / "generation.json").read_text())["failed"]
        server.fault_always = None
        result = generate_flow(prompt_file=str(EXAMPLE), out_dir=str(tmp_path / "gen"), overrides=overrides)
    assert json.loads((tmp_path / "gen" / "generation.json").read_text())["accepted"] >= 3, result


def test_generation_that_accepts_nothing_fails_with_the_rejects(tmp_path, prefect_harness, monkeypatch):
    from p2m.flows.generate import generate_flow

    with FakeLLMServer(lambda m, r: "not json at all", model="teacher-without-json") as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("P2M_TEACHER_MODEL", server.model)  # its own request cache keys
        with pytest.raises(P2MError, match="no usable example.*not_json"):
            generate_flow(
                prompt_file=str(EXAMPLE),
                out_dir=str(tmp_path / "gen"),
                overrides={"generation": {"num_examples": 3, "batch_size": 1, "max_stale_batches": 2}},
            )


def test_a_rejected_key_is_never_retried(tmp_path):
    with FakeLLMServer(lambda m, r: "ok") as server:
        server.fault_always = "401"
        c = client(server, tmp_path)
        with pytest.raises(P2MError, match="rejected the API key"):
            c.complete(MSG)
        assert c.meter.sent == 1


def test_a_server_that_dies_and_returns(tmp_path):
    first = FakeLLMServer(lambda m, r: "ok")
    with first:
        c = client(first, tmp_path, request_timeout=2)
        assert c.complete(MSG, salt="a") == ["ok"]
    port = first.port

    def restart():
        time.sleep(3)
        with FakeLLMServer(lambda m, r: "back", port=port):
            time.sleep(20)

    threading.Thread(target=restart, daemon=True).start()
    assert c.complete(MSG, salt="b") == ["back"]
    assert c.meter.connection_errors >= 1


def test_truncated_replies_are_rejected_and_counted(tmp_path, fast_limits):
    from p2m.tasks.core.config import GenerationConfig
    from p2m.tasks.stages.generate import generate_examples
    from p2m.tasks.stages.parse import parse_prompt

    spec = parse_prompt(read_prompt_file(EXAMPLE))
    with FakeLLMServer(lambda m, r: '{"input": "forty-one", "outp') as server:
        llm = LLMClient(Endpoint(server.base_url, "k", server.model), fast_limits, tmp_path / "c.sqlite")
        report = asyncio.run(
            generate_examples(llm, spec, GenerationConfig(num_examples=5, batch_size=2, max_stale_batches=2))
        )
    assert report.examples == [] and report.rejected == {"not_json": 4} and "2 batches in a row" in report.stop_reason


def test_a_user_error_in_generation_is_not_retried_and_the_counts_are_written(tmp_path, prefect_harness, monkeypatch):
    """A 401 inside an async batch task: Prefect's retries must not repeat it (they did, when the
    retry condition got a coroutine instead of the exception); generation.json says what happened."""
    from p2m.flows.generate import generate_flow

    with FakeLLMServer(lambda m, r: "ok") as server:
        server.fault_always = "401"
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        # Its own model name: no request cache or cached batch of an earlier test can answer for the endpoint.
        monkeypatch.setenv("P2M_TEACHER_MODEL", "teacher-with-a-bad-key")
        with pytest.raises(P2MError, match="rejected the API key"):
            generate_flow(
                prompt_file=str(EXAMPLE),
                out_dir=str(tmp_path / "gen"),
                overrides={"generation": {"num_examples": 3, "batch_size": 1}},
            )
        assert len(server.requests) == 1
    report = json.loads((tmp_path / "gen" / "generation.json").read_text())
    assert "rejected the API key" in report["failed"] and report["usage"]["sent"] == 1


def test_kill_9_leaves_no_process_behind(tmp_path):
    """`p2m run` killed outright: the reaper stops Prefect's temporary server (and any teacher) it started."""
    import psutil

    with FakeLLMServer(lambda m, r: "ok", latency_s=5) as server:
        env = {**os.environ, "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "k"}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "p2m.flows.cli",
                "run",
                EX,
                "--out",
                str(tmp_path / "run"),
                "--model",
                "tiny-gpt2",
                "--num-examples",
                "50",
                "--dataset",
                "none",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Not `p2m` as a console script but `python -m p2m.flows.cli`: main() gets no argv either way.
        deadline = time.monotonic() + 120
        children: list = []
        while time.monotonic() < deadline and not server.requests:
            children = [
                c for c in psutil.Process(proc.pid).children(recursive=True) if "reaper" not in " ".join(c.cmdline())
            ]
            time.sleep(0.5)
        assert server.requests and children, "the run never reached generation"
        children = [
            c for c in psutil.Process(proc.pid).children(recursive=True) if "reaper" not in " ".join(c.cmdline())
        ]
        proc.kill()
        proc.wait()
        _, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, [c.cmdline() for c in alive]


def test_sigterm_while_waiting_out_a_429_stops_at_once_and_says_how_to_resume(tmp_path):
    """`p2m generate` told by the teacher to come back in 10 minutes: SIGTERM (what `docker stop`,
    systemd and Kubernetes send) ends it within seconds, with the line Ctrl-C gives, instead of
    being ignored until the wait is over."""
    import signal

    with FakeLLMServer(lambda m, r: "ok", model="teacher-that-says-later") as server:
        server.fault_always, server.retry_after_s = "429", 600
        env = {
            **os.environ,
            "OPENAI_BASE_URL": server.base_url,
            "OPENAI_API_KEY": "k",
            "P2M_TEACHER_MODEL": server.model,
        }
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "p2m.flows.cli",
                "generate",
                EX,
                "--out",
                str(tmp_path / "gen"),
                "--num-examples",
                "3",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not server.requests and proc.poll() is None:
            time.sleep(0.2)
        assert server.requests, proc.communicate()[1]
        time.sleep(1)  # well into the wait
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        try:
            _, stderr = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert time.monotonic() - started < 10
    assert proc.returncode in (130, 143), stderr
    last = stderr.strip().splitlines()[-1]  # after the stages' progress lines
    assert last.startswith("p2m: interrupted") and "run the same command again" in last, stderr
    assert "Traceback" not in stderr, stderr


def test_the_summary_of_a_failed_run_names_the_stage_and_why(tmp_path, prefect_harness):
    """A run that stops in a stage: summary.json and the printed summary say which stage and why
    (they said only why, and the stage table showed one Failed row among many)."""
    from p2m.flows.run.tracking import StageTracker
    from p2m.tasks.report.render import summary_text
    from prefect import flow, task

    @task
    def train_that_fails():
        raise P2MError("the student does not fit in memory: lower P2M_TRAIN__BATCH_SIZE")

    @flow
    def run_that_fails():
        tracker = StageTracker(tmp_path)
        try:
            tracker.run("train", train_that_fails, "model")
        except P2MError as e:
            return tracker.finish(e)

    summary = run_that_fails()
    assert summary["finished"] is False and summary["failed_stage"] == "train"
    assert json.loads((tmp_path / "summary.json").read_text())["failed_stage"] == "train"
    assert "the train stage: the student does not fit in memory" in summary_text(summary)


def test_the_teacher_on_a_port_already_taken_is_one_line(tmp_path):
    """llama.cpp's server waits forever on a port it cannot bind: `p2m teacher` checks it first."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = p2m("teacher", "--port", str(port), cwd=REPO, env={"P2M_HOME": str(tmp_path)}, timeout=60)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"p2m: error: cannot serve on 127.0.0.1:{port} (Address already in use); pass another --port"
    ], result.stderr
