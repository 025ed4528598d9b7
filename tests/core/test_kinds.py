"""Task kinds read from a prompt: classification with its labels, extraction, generation."""

from __future__ import annotations

import pytest
from p2m.tasks.core.kinds import decide_kind


def demos(*pairs):
    return [{"input": i, "output": o} for i, o in pairs]


@pytest.mark.parametrize(
    "instruction, pairs, kind, labels",
    [
        (
            "Classify the support ticket as billing, bug, or feature request.",
            [("charged twice", "billing"), ("app crashes", "bug"), ("add dark mode", "feature request")],
            "classification",
            ["billing", "bug", "feature request"],
        ),
        (
            "Classify each e-mail as spam or ham.",  # "e-mail" is no label
            [("win money", "spam"), ("meeting at 3", "ham"), ("cheap pills", "spam")],
            "classification",
            ["spam", "ham"],
        ),
        (
            "Which intent is it? One of: play_music, get_weather, book_restaurant, rate_book",
            [("play jazz", "play_music"), ("rain?", "get_weather"), ("a table", "book_restaurant")],
            "classification",
            ["play_music", "get_weather", "book_restaurant", "rate_book"],  # rate_book: named, not demonstrated
        ),
        (
            'Label the review "positive" or "negative". Mind the word "great".',
            [("great!", "positive"), ("awful", "negative")],
            "classification",
            ["positive", "negative"],
        ),
        (
            "Say how the customer feels.",  # labels not named, but the outputs repeat
            [("great", "happy"), ("awful", "angry"), ("fine", "happy")],
            "classification",
            ["happy", "angry"],
        ),
        (
            "Answer with a span of the passage.",
            [("Paris is the capital of France. Capital?", "Paris"), ("Bob is 12. Age?", "12")],
            "extraction",
            [],
        ),
        ("Convert number words to digits.", [("seventeen", "17"), ("ninety-nine", "99")], "generation", []),
        (
            "Rewrite the date in ISO 8601.",
            [("July 5, 2049", "2049-07-05"), ("3/21/1980", "1980-03-21")],
            "generation",
            [],
        ),
    ],
)
def test_the_rules_read_the_kind_and_labels(instruction, pairs, kind, labels):
    reading = decide_kind(instruction, demos(*pairs), instruction)
    assert (reading.kind, reading.labels) == (kind, labels), reading.reason


def test_the_teacher_confirms_labels_written_in_the_prompt_and_invents_none():
    pairs = [("great!", "positive"), ("awful", "negative")]
    prompt = "Classify the sentiment of the review: positive, negative or neutral... great! positive awful negative"
    reading = decide_kind(
        "Classify the sentiment of the review.",
        demos(*pairs),
        prompt,
        teacher_reading={"kind": "classification", "labels": ["positive", "negative", "neutral", "mixed"]},
    )
    assert reading.kind == "classification" and reading.labels == ["positive", "negative", "neutral"]


def test_without_rules_or_teacher_a_short_answer_task_is_generation():
    reading = decide_kind("Translate to French.", demos(("cat", "chat"), ("dog", "chien")), "")
    assert reading.kind == "generation"


def test_given_labels_win_and_a_given_kind_is_kept():
    pairs = [("great", "happy"), ("awful", "angry"), ("fine", "happy")]
    given = decide_kind("Say how the customer feels.", demos(*pairs), "", given_labels=["happy", "angry", "calm"])
    assert given.kind == "classification" and given.labels == ["happy", "angry", "calm"]
    assert decide_kind("Say how the customer feels.", demos(*pairs), "", given_kind="generation").kind == "generation"
