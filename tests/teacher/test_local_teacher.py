"""The local teacher: llama.cpp's server (xllamacpp) over an embedded GGUF model, spoken to with `openai`.

The default tests use the smallest embedded model (SmolLM2-135M, 98 MB) through the same server
as the Qwen teachers; the Qwen models are exercised by -m slow.
"""

import json

import openai
import pytest
from p2m.tasks.teacher.local import running_local_teacher


def test_the_server_speaks_the_openai_protocol_behind_its_key(tmp_path):
    with running_local_teacher(tmp_path, "smollm2-135m-instruct", slots=2, threads=1) as teacher:
        assert teacher.base_url.startswith("http://127.0.0.1:")
        client = openai.OpenAI(base_url=teacher.base_url, api_key=teacher.api_key, max_retries=0)
        assert [m.id for m in client.models.list().data] == ["smollm2-135m-instruct"]
        reply = client.chat.completions.create(
            model=teacher.model,
            messages=[{"role": "user", "content": "Name a colour."}],
            max_tokens=64,
            temperature=0.8,
            n=2,
            response_format={
                "type": "json_schema",
                "json_schema": {
                    "name": "c",
                    "schema": {
                        "type": "object",
                        "properties": {"colour": {"type": "string", "maxLength": 12}},
                        "required": ["colour"],
                    },
                },
            },
        )
        assert len(reply.choices) == 2 and reply.usage.completion_tokens > 0
        assert all(isinstance(json.loads(c.message.content)["colour"], str) for c in reply.choices)  # the schema holds
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=teacher.base_url, api_key="guess", max_retries=0).models.list()


def test_embedded_smollm2_converts_with_a_tokenizer_that_round_trips(tmp_path):
    """The GGUF -> safetensors conversion of the embedded student (about 30 s): a transformers
    release that breaks its tokenizer (5.3 maps spaces to <|endoftext|>) fails here, not in a run."""
    from p2m.tasks.storage.embedded import check_round_trip, smollm2_path
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path(tmp_path))
    check_round_trip(tokenizer)
    assert tokenizer("Hello world", add_special_tokens=False)["input_ids"] == [19556, 905]


def test_the_teacher_command_keeps_llama_cpp_off_the_terminal_and_stops_on_sigterm(tmp_path):
    """`p2m teacher` serves from a child whose output goes to the log file: the terminal shows p2m's
    one line (it showed llama.cpp's log), and SIGTERM stops both processes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from p2m.tasks.core.processes import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2m.flows.cli", "teacher", "--model", "smollm2-135m-instruct", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "P2M_HOME": str(tmp_path), "P2M_LOCAL_TEACHER_THREADS": "1"},
    )
    try:
        line = proc.stdout.readline()  # printed once the teacher answers
        assert f"on http://127.0.0.1:{port}/v1" in line and "local-teacher.log" in line, line
        models = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none").models.list()
        assert [m.id for m in models.data] == ["smollm2-135m-instruct"]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0 and out == "" and err == "", err[:2000]
    assert (tmp_path / "local-teacher.log").stat().st_size > 0  # llama.cpp wrote there instead
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            openai.OpenAI(
                base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=1
            ).models.list()
        except openai.APIConnectionError:
            return
        time.sleep(0.5)
    raise AssertionError("the teacher still answers after SIGTERM")
