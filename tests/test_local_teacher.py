"""The local teacher's OpenAI-compatible app, on a tiny model (the real one is exercised by -m slow)."""

import openai
from fastapi.testclient import TestClient

from p2m.tasks.embedded import build_tiny_model
from p2m.tasks.local_teacher import build_app


def test_chat_completions_protocol(tmp_path):
    from transformers import AutoTokenizer

    path = build_tiny_model("tiny-gpt2", tmp_path / "tiny")
    tok = AutoTokenizer.from_pretrained(path)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    tok.save_pretrained(path)
    client = TestClient(build_app(path, "tiny"))
    assert client.get("/v1/models").json()["data"][0]["id"] == "tiny"
    reply = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "temperature": 0.7,
                                                       "max_tokens": 5, "n": 3}).json()
    # The openai package parses it: the same client code path as against OpenAI, vLLM or Ollama.
    parsed = openai.types.chat.ChatCompletion.model_validate(reply)
    assert len(parsed.choices) == 3 and parsed.usage.completion_tokens > 0
    assert all(c.finish_reason in ("stop", "length") for c in parsed.choices)


def test_embedded_smollm2_converts_with_a_tokenizer_that_round_trips(tmp_path):
    """The GGUF -> safetensors conversion of the real embedded model (about 30 s): a transformers
    release that breaks its tokenizer (5.3 maps spaces to <|endoftext|>) fails here, not in a run."""
    from transformers import AutoTokenizer

    from p2m.tasks.embedded import check_round_trip, smollm2_path

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path(tmp_path))
    check_round_trip(tokenizer)
    assert tokenizer("Hello world", add_special_tokens=False)["input_ids"] == [19556, 905]
