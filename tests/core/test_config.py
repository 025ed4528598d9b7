from pathlib import Path

import pytest
from p2m.tasks.core.config import Settings
from pydantic import ValidationError

from tests.conftest import REPO


def test_env_example_lists_every_setting():
    from p2m.tasks.core.config import env_example

    assert (REPO / ".env.example").read_text() == env_example(), (
        "regenerate .env.example (see p2m.tasks.core.config.env_example)"
    )
    text = env_example()
    assert (
        "# OPENAI_API_KEY=" in text
        and "# P2M_GENERATION__NUM_EXAMPLES=200" in text
        and "# P2M_LIMITS__REQUESTS_PER_MINUTE=60" in text
    )


def test_flags_beat_environment_which_beats_defaults(monkeypatch):
    monkeypatch.setenv("P2M_GENERATION__VOTES", "5")
    monkeypatch.setenv("P2M_GENERATION__NUM_EXAMPLES", "7")
    monkeypatch.setenv("P2M_DATASETS_DIR", "~/data")
    s = Settings(generation={"num_examples": 3})
    assert (s.generation.num_examples, s.generation.votes, s.generation.batch_size) == (3, 5, 8)
    assert s.datasets_dir == Path.home() / "data"


def test_teacher_kind_follows_endpoint_and_key(monkeypatch):
    assert Settings().teacher_kind() == "local"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert Settings().teacher_kind() == "openai"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")
    assert Settings().teacher_kind() == "custom"


def test_bad_values_and_unknown_keys_are_rejected():
    with pytest.raises(ValidationError):
        Settings(generation={"num_examples": -1})
    with pytest.raises(ValidationError):
        Settings(generation={"num_exmaples": 5})
