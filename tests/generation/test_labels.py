"""Classification data: labels defined, inputs written per label, kept only when the teacher labels
them back cold; the user's own inputs labelled the same way; quotas, rejects and votes reported."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter

import pytest
from p2m.tasks.core.config import GenerationConfig, LimitsConfig
from p2m.tasks.core.spec import Example, PromptSpec
from p2m.tasks.generation.labels import check_input, generate_labelled_examples, quotas
from p2m.tasks.generation.report import GenerationReport
from p2m.tasks.generation.votes import settled
from p2m.tasks.teacher.client import Endpoint, LLMClient
from p2m.tasks.teacher.prompts import parse_label

from tests.fake_llm_server import KEYWORDS, TICKET_LABELS, FakeLLMServer, ticket_teacher

LABELS = TICKET_LABELS
SPEC = PromptSpec(
    instruction="Classify the support ticket as billing, bug or feature request.",
    demonstrations=[
        Example(input="I was charged twice this month", output="billing"),
        Example(input="The app crashes when I open settings", output="bug"),
        Example(input="Please add a dark mode", output="feature request"),
    ],
    kind="classification",
    labels=LABELS,
)


@pytest.fixture
def llm(tmp_path):
    ticket_teacher.counter = itertools.count()
    with FakeLLMServer(ticket_teacher, model="ticket-teacher") as server:
        yield LLMClient(
            Endpoint(server.base_url, "k", server.model),
            LimitsConfig(requests_per_minute=60_000, tokens_per_minute=10_000_000, request_timeout=5),
            tmp_path / "cache.sqlite",
        )


def test_the_votes_settle_on_a_clear_majority():
    assert settled(["bug", "bug"], 5) == ("bug", True)
    assert settled(["bug", "billing"], 5) == (None, False)
    assert settled(["bug", "billing", "bug"], 5) == ("bug", True)  # two of three
    assert settled(["bug", "billing", "feature request", "bug"], 5) == (None, False)  # two of four: no majority
    assert settled(["bug", "billing", "feature request", "bug", "bug"], 5) == ("bug", True)
    assert settled(["bug", "billing", "bug", "billing", None], 5) == (None, True)
    assert settled(["Bug", "bug."], 5) == ("Bug", True)  # case and a full stop are not a different answer
    assert settled(["bug"], 5) == (None, False)


def test_labels_are_read_from_the_enum_answer_or_plain_text():
    assert parse_label('"feature request"', LABELS) == "feature request"
    assert parse_label("Feature  Request.", LABELS) == "feature request"
    assert parse_label('{"label": "bug"}', LABELS) == "bug"
    assert parse_label("schedule_event", LABELS) is None  # a label the task does not have


@pytest.mark.parametrize(
    "text, why",
    [
        ("", "empty_input"),
        ("   ", "empty_input"),
        ("Add me to the playlist of ", "cut_off_input"),
        ('He said "stop', "cut_off_input"),
        ("Charged twice, ", "cut_off_input"),
    ],
)
def test_empty_and_cut_off_inputs_are_rejected_with_the_reason(text, why):
    assert check_input(text) == (None, why)


def test_a_whole_input_is_kept():
    assert check_input("  Why was I charged twice?  ") == ("Why was I charged twice?", "")


def test_quotas_balance_the_labels_less_what_the_users_inputs_give():
    assert quotas(LABELS, 30, Counter()) == {"billing": 10, "bug": 10, "feature request": 10}
    assert quotas(LABELS, 30, Counter({"billing": 12, "bug": 3})) == {"billing": 3, "bug": 12, "feature request": 15}


def test_every_label_is_covered_and_inputs_labelled_otherwise_are_left_out(llm):
    cfg = GenerationConfig(num_examples=24, batch_size=3, examples_per_request=4)
    report = asyncio.run(generate_labelled_examples(llm, SPEC, cfg, GenerationReport()))
    counts = Counter(e["output"] for e in report.examples)
    assert counts == {"billing": 8, "bug": 8, "feature request": 8}, report.stop_reason
    assert all(KEYWORDS[e["output"]] in e["input"] for e in report.examples)  # every kept label was answered back
    assert report.rejected["cut_off_input"] > 0 and report.rejected["labelled_otherwise"] > 0
    assert report.label_definitions["bug"] == "tickets about crashs"
    per_label = report.as_dict()["per_label"]
    assert per_label["bug"]["answered_otherwise"] > 0 and 0 < per_label["bug"]["acceptance"] < 1
    assert report.as_dict()["votes_per_example"] >= 1 and report.as_dict()["sources"] == {"generated": 24}


def test_the_users_inputs_are_labelled_first_and_unsettled_ones_left_out(llm):
    inputs = ["my invoice doubled", "crash on login", "a wish: export to pdf", "maybe later", "crash on login"]
    cfg = GenerationConfig(num_examples=6, batch_size=3, examples_per_request=2)
    report = asyncio.run(generate_labelled_examples(llm, SPEC, cfg, GenerationReport(), inputs=inputs))
    mine = [e for e in report.examples if e["source"] == "your_inputs"]
    assert [(e["input"], e["output"]) for e in mine] == [
        ("my invoice doubled", "billing"),
        ("crash on login", "bug"),
        ("a wish: export to pdf", "feature request"),
    ]
    assert report.rejected["unsettled_input"] == 1 and report.duplicates_removed >= 1
    # The labels share 3 + 6 examples: each needs 3, and the user's inputs already give each one.
    assert Counter(e["output"] for e in report.examples if e["source"] == "generated") == Counter(
        {"billing": 2, "bug": 2, "feature request": 2}
    )


def scored(label: str, p: float, other: str) -> list[dict]:
    """Log-probabilities shaped as llama.cpp's server returns them for a bare-enum answer: the
    forced opening quote, then the label's first token with its alternatives (LABEL_TASKS.md)."""
    import math

    return [
        {"token": '"', "logprob": -12.7, "top_logprobs": []},
        {
            "token": label,
            "logprob": math.log(p),
            "top_logprobs": [
                {"token": label, "logprob": math.log(p)},
                {"token": other, "logprob": math.log(1 - p)},
                {"token": " the", "logprob": -9.0},  # begins no label: left out
            ],
        },
        {"token": '"', "logprob": -0.01, "top_logprobs": []},
    ]


def test_label_probabilities_are_read_at_the_labels_first_token():
    from p2m.tasks.teacher.prompts import label_probabilities

    probs = label_probabilities(scored("bug", 0.77, "billing"), LABELS)
    assert set(probs) == {"bug", "billing"} and abs(probs["bug"] - 0.77) < 0.01
    assert label_probabilities(None, LABELS) is None  # an endpoint without log-probabilities
    # "offer" begins two labels: its probability cannot be read from one token
    assert label_probabilities(scored("offer", 0.9, "inform"), ["offer", "offer_intent", "inform"]) is None


class ScoredLLM:
    """A teacher that answers each labelling request from a script: (label, probability or None)."""

    def __init__(self, *answers):
        self.answers, self.requests = list(answers), 0

    async def acomplete_scored(self, messages, **kwargs):
        self.requests += 1
        label, p = self.answers.pop(0)
        return [json.dumps(label)], (
            scored(label, p, "feature request" if label != "feature request" else "bug") if p else None
        )

    async def acomplete(self, messages, **kwargs):
        self.requests += 1
        return [json.dumps(self.answers.pop(0)[0])]


@pytest.mark.parametrize(
    "written, answers, label, requests",
    [
        (None, [("bug", 0.97)], "bug", 1),  # a confident answer settles the user's input alone
        ("billing", [("bug", 0.95)], None, 1),  # confidently another label: rejected at once
        ("bug", [("bug", 0.55)], "bug", 1),  # agreement with the written label needs no confidence
        (None, [("bug", 0.6), ("bug", None)], "bug", 2),  # unsure: a second vote
        (None, [("bug", None), ("billing", None), ("bug", None)], "bug", 3),  # no log-probabilities: votes
    ],
)
def test_a_labels_probability_decides_how_many_votes_it_takes(written, answers, label, requests):
    import asyncio

    from p2m.tasks.generation.labels import settle_label

    llm = ScoredLLM(*answers)
    got, _ = asyncio.run(settle_label(llm, SPEC, {x: x for x in LABELS}, "some ticket", GenerationConfig(), written))
    assert (got, llm.requests) == (label, requests)


def test_requests_for_inputs_show_what_real_inputs_look_like():
    from p2m.tasks.generation.labels import input_messages

    definitions = {label: label for label in LABELS}
    # Without the user's inputs: every demonstration's input, whatever its label.
    ask = input_messages(SPEC, definitions, "bug", [], [], 3, None)[-1]["content"]
    assert "example inputs, of every label" in ask
    assert all(json.dumps(d.input) in ask for d in SPEC.demonstrations)
    # With them: the user's inputs instead.
    ask = input_messages(SPEC, definitions, "bug", [], ["crash on save"], 3, None)[-1]["content"]
    assert "Inputs real users sent" in ask and '"crash on save"' in ask and "of every label" not in ask
