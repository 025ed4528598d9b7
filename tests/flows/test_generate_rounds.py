"""The generate stage in rounds: the quick student (a real tiny encoder) scores each round,
generation.json keeps the rounds, and the run folder gets their chart."""

from __future__ import annotations

import itertools

from p2m.tasks.core.config import GenerationConfig, Settings
from p2m.tasks.core.run_store import read_json
from p2m.tasks.teacher.handle import Teacher

from tests.fake_llm_server import FakeLLMServer, ticket_teacher
from tests.generation.test_labels import SPEC


def test_the_stage_generates_in_rounds_and_charts_them(tmp_path, monkeypatch, prefect_harness):
    from p2m.flows.run.stage_tasks import generate_task

    ticket_teacher.counter = itertools.count()
    cfg = GenerationConfig(
        num_examples=24, batch_size=3, examples_per_request=3, rounds=3, round_student="embedded:tiny-bert"
    )
    with FakeLLMServer(ticket_teacher, model="ticket-teacher-stage-rounds") as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("P2M_TEACHER_MODEL", server.model)
        monkeypatch.setenv("P2M_LIMITS__REQUESTS_PER_MINUTE", "60000")
        result = generate_task.fn(SPEC, cfg, tmp_path, Teacher(Settings()))
    generation = read_json(tmp_path / "generation.json")
    assert result["accepted"] == generation["accepted"] > 0
    rounds = generation["rounds"]
    assert 2 <= len(rounds) <= 3 and rounds[0]["examples"] == 12
    assert all(0 <= r["validation_accuracy"] <= 1 and r["validation_examples"] > 0 for r in rounds)
    assert generation["stop_reason"].startswith(("3 rounds", "round 2: the student's validation score"))
    assert (tmp_path / "generation_rounds.png").stat().st_size > 1000


def test_rounds_are_a_flag_of_run():
    from p2m.flows.cli.common import flag_overrides
    from p2m.flows.cli.main import build_parser

    args = build_parser().parse_args(["run", "prompt.txt", "--rounds", "3"])
    assert flag_overrides(args)["generation"]["rounds"] == 3
    assert Settings(**flag_overrides(args)).generation.rounds == 3
