"""Generation in rounds: each round after the first aimed at the labels a quick student gets
wrong, shown the inputs it finds hardest; rounds stop when its validation score stops rising."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest
from p2m.tasks.core.config import GenerationConfig, LimitsConfig
from p2m.tasks.generation.report import GenerationReport
from p2m.tasks.generation.rounds import (
    aim_at_errors,
    generate_label_rounds,
    hardest_inputs,
    hopeless,
    rising,
    round_targets,
    validation_indices,
)
from p2m.tasks.teacher.client import Endpoint, LLMClient

from tests.fake_llm_server import FakeLLMServer, ticket_teacher
from tests.generation.test_labels import LABELS, SPEC


def test_the_first_round_takes_half_and_the_rest_share_the_remainder():
    assert round_targets(100, 1) == [100]
    assert round_targets(100, 3) == [50, 75, 100]
    assert round_targets(101, 2) == [51, 101]


def test_the_next_round_goes_to_the_labels_the_student_gets_wrong():
    truth = ["bug", "bug", "bug", "billing", "feature request"]
    answers = [("billing", {}), ("billing", {}), ("bug", {}), ("billing", {}), ("feature request", {})]
    share, mistaken_for = aim_at_errors(LABELS, truth, answers, 10)
    assert share == {"bug": 6, "billing": 2, "feature request": 2} and sum(share.values()) == 10
    assert mistaken_for == {"bug": "billing"}
    # A label the teacher cannot write gets nothing, however often the student misses it.
    share, _ = aim_at_errors(LABELS, truth, answers, 10, skip={"bug"})
    assert share["bug"] == 0 and sum(share.values()) == 10
    assert hopeless({"bug": {"written": 12, "acceptance": 0.05}, "billing": {"written": 4, "acceptance": 0.0}}) == {
        "bug"
    }


def test_the_hardest_inputs_are_those_the_student_doubts_most():
    train = [{"input": f"t{i}", "output": "bug"} for i in range(4)]
    answers = [("bug", {"bug": p}) for p in (0.9, 0.2, 0.6, 0.4)]
    assert hardest_inputs(train, answers, LABELS, 2) == {"billing": [], "bug": ["t1", "t3"], "feature request": []}


def test_the_validation_set_comes_from_the_users_inputs_when_they_give_enough():
    generated = [{"input": f"g{i}", "output": LABELS[i % 3], "source": "generated"} for i in range(30)]
    real = [{"input": f"r{i}", "output": LABELS[i % 3], "source": "your_inputs"} for i in range(24)]
    held = validation_indices(real + generated, LABELS, seed=0)
    assert held and all(i < 24 for i in held) and len(held) == 6  # a quarter of each label's 8
    held = validation_indices(real[:3] + generated, LABELS, seed=0)
    assert len(held) == 9 and validation_indices(real[:3] + generated, LABELS, seed=0) == held  # seeded


def test_rising_breaks_ties_by_the_right_labels_probability():
    before = {"validation_accuracy": 0.8, "validation_true_probability": 0.6}
    assert rising({"validation_accuracy": 0.85, "validation_true_probability": 0.5}, before)
    assert rising({"validation_accuracy": 0.8, "validation_true_probability": 0.7}, before)
    assert not rising({"validation_accuracy": 0.8, "validation_true_probability": 0.6}, before)


class ScriptedStudent:
    """A quick student that mistakes every bug for billing until it has trained on `learns_at` bugs,
    and records what it was trained on."""

    def __init__(self, learns_at: int):
        self.learns_at, self.trained_on = learns_at, []

    def __call__(self, train, texts):
        self.trained_on.append(list(train))
        bugs = sum(r["output"] == "bug" for r in train)
        answers = []
        for text in texts:
            label = next((lab for lab, word in {"billing": "invoice", "bug": "crash"}.items() if word in text), None)
            label = label or "feature request"
            if label == "bug" and bugs < self.learns_at:
                answers.append(("billing", {"billing": 0.7, "bug": 0.2, "feature request": 0.1}))
            else:
                answers.append((label, {lab: (0.8 if lab == label else 0.1) for lab in LABELS}))
        return answers


@pytest.fixture
def recorded_llm(tmp_path):
    """The scripted ticket teacher, with every request it is sent kept in `.requests`."""
    requests = []

    def teacher(messages, request):
        requests.append(messages)
        return ticket_teacher(messages, request)

    ticket_teacher.counter = itertools.count()
    with FakeLLMServer(teacher, model="ticket-teacher-rounds") as server:
        client = LLMClient(
            Endpoint(server.base_url, "k", server.model),
            LimitsConfig(requests_per_minute=60_000, tokens_per_minute=10_000_000, request_timeout=5),
            tmp_path / "cache.sqlite",
        )
        client.requests = requests
        yield client


def input_requests(requests: list[list[dict]], label: str) -> list[str]:
    return [
        m[-1]["content"]
        for m in requests
        if m[0]["content"].startswith("You write inputs") and f"correct label is {label}:" in m[-1]["content"]
    ]


def test_rounds_aim_at_the_students_errors_and_stop_when_it_stops_improving(recorded_llm):
    student = ScriptedStudent(learns_at=15)
    cfg = GenerationConfig(num_examples=30, batch_size=3, examples_per_request=3, rounds=4)
    report = asyncio.run(generate_label_rounds(recorded_llm, SPEC, cfg, GenerationReport(), student))
    rounds = report.rounds
    # Round 1: 15 examples, 5 per label; the student mistakes every bug for billing.
    assert rounds[0]["examples"] == 15 and rounds[0]["validation_examples"] == 6
    assert rounds[0]["validation_accuracy"] < 0.7
    # Round 2's five examples go mostly to bug, and its bug requests show the hardest bug inputs
    # and ask for hard cases near billing.
    assert rounds[0]["next_round"]["bug"] >= 3
    bug_asks = input_requests(recorded_llm.requests, "bug")
    focused = [a for a in bug_asks if "finds these bug inputs hardest" in a]
    assert focused and any("could be mistaken for billing" in a for a in focused)
    # Validation inputs are never shown to the teacher, nor trained on.
    held = {json.dumps(e["input"]) for e in report.examples[:15]} - {
        json.dumps(r["input"]) for r in student.trained_on[0]
    }
    assert len(held) == 6 and not any(h in a for a in focused for h in held)
    assert all(not ({json.dumps(r["input"]) for r in t} & held) for t in student.trained_on)
    # It stops when the score stops rising, and says so (or runs its four rounds out).
    assert rounds[-1]["validation_accuracy"] >= rounds[0]["validation_accuracy"]
    assert "stopped rising" in report.stop_reason or report.stop_reason.startswith("4 rounds")
    assert [r["round"] for r in rounds] == list(range(1, len(rounds) + 1))
    assert all(rounds[i]["teacher_tokens"] < rounds[i + 1]["teacher_tokens"] for i in range(len(rounds) - 1))
    assert report.as_dict()["rounds"] == rounds


def test_a_student_that_stops_improving_ends_the_rounds_early(recorded_llm):
    student = ScriptedStudent(learns_at=10_000)  # never learns bugs: round 2 is no better than round 1
    cfg = GenerationConfig(num_examples=30, batch_size=3, examples_per_request=3, rounds=4)
    report = asyncio.run(generate_label_rounds(recorded_llm, SPEC, cfg, GenerationReport(), student))
    assert len(report.rounds) == 2 and "stopped rising" in report.stop_reason, report.stop_reason
    assert len(report.examples) < 30  # the budget left unspent


def test_one_round_is_the_uniform_pass(recorded_llm):
    from p2m.tasks.generation.labels import generate_labelled_examples

    cfg = GenerationConfig(num_examples=12, batch_size=3, examples_per_request=3)
    report = asyncio.run(generate_labelled_examples(recorded_llm, SPEC, cfg, GenerationReport()))
    assert report.rounds == [] and len(report.examples) == 12
    assert not any("hardest" in m[-1]["content"] for m in recorded_llm.requests)
