"""The teacher's prompts, rendered exactly: the instruction in the system message, the
demonstrations as turns, the structured replies asked for in words and by schema."""

import random

from p2m.tasks.core.config import GenerationConfig
from p2m.tasks.core.spec import Example, PromptSpec
from p2m.tasks.stages.generate import example_prompt
from p2m.tasks.stages.parse import SPEC_SCHEMA
from p2m.tasks.teacher.prompts import answer_messages, chat, clean_answer, examples_schema

SPEC = PromptSpec(
    instruction="Rewrite the date as ISO 8601.",
    demonstrations=[
        Example(input="July 5, 2049", output="2049-07-05"),
        Example(input="3rd of March 1998", output="1998-03-03"),
    ],
)
DEMOS = [d.model_dump() for d in SPEC.demonstrations]


def test_answer_prompt_puts_the_instruction_in_the_system_message_and_the_demonstrations_in_turns():
    assert answer_messages(SPEC.instruction, DEMOS, "dec 31 1999") == [
        {
            "role": "system",
            "content": "Rewrite the date as ISO 8601.\n\n"
            "Reply with the output only: no explanation, no code, no label, nothing before or after it.",
        },
        {"role": "user", "content": "July 5, 2049"},
        {"role": "assistant", "content": "2049-07-05"},
        {"role": "user", "content": "3rd of March 1998"},
        {"role": "assistant", "content": "1998-03-03"},
        {"role": "user", "content": "dec 31 1999"},
    ]


def test_generation_prompt_shows_demos_then_what_was_written_then_asks_for_variety():
    written = [{"input": "1 May 1900", "output": "1900-05-01"}]
    messages = example_prompt(
        SPEC,
        GenerationConfig(examples_per_request=3, generated_per_prompt=1),
        written,
        ["year range (1712)", "written-out month (March)"],
        random.Random(0),
    )
    assert messages == [
        {
            "role": "system",
            "content": (
                "You write training data for a small model that will learn this task:\n\n"
                "Rewrite the date as ISO 8601.\n\n"
                "An example is an input and the output the task gives for it. "
                "Write examples that are unlike each other and unlike "
                "the ones shown: vary the wording, the format, the length and the values, "
                "and include unusual but valid cases. Each "
                "output must be exactly what the task asks for, written the way the task's own examples write it."
            ),
        },
        {
            "role": "user",
            "content": (
                'Examples of the task:\n{"input": "July 5, 2049", "output": "2049-07-05"}\n'
                '{"input": "3rd of March 1998", "output": "1998-03-03"}\n\n'
                'Examples already written (write different ones):\n{"input": "1 May 1900", "output": "1900-05-01"}\n\n'
                "Write 3 new examples. "
                "Let them differ from each other in: written-out month (March); year range (1712). "
                'Reply with JSON: {"examples": [{"input": "...", "output": "..."}]}'
            ),
        },
    ]
    # Every request starts the same way (the server's prompt cache holds the shared part).
    other = example_prompt(SPEC, GenerationConfig(examples_per_request=3), [], [], random.Random(1))
    assert (
        other[0] == messages[0]
        and other[1]["content"].split("Examples already written")[0]
        == messages[1]["content"].split("Examples already written")[0]
    )


def test_a_crowded_surface_form_is_named_in_the_next_requests():
    written = [{"input": f"May {d}, 19{d:02d}", "output": f"19{d:02d}-05-{d:02d}"} for d in range(1, 13)]
    messages = example_prompt(SPEC, GenerationConfig(generated_per_prompt=2), written, [], random.Random(0))
    assert 'Many inputs so far look like "May 1, 1901": write inputs of other forms.' in messages[-1]["content"]


def test_parse_prompt_and_schemas():
    messages = chat("parse", prompt="Rewrite dates.\nInput: a\nOutput: b")
    assert messages[0]["content"].startswith("You split a task prompt") and messages[-1]["content"].startswith(
        'Task prompt:\n"""\nRewrite dates.\nInput: a\nOutput: b\n"""'
    )
    schema = SPEC_SCHEMA["json_schema"]["schema"]
    assert schema["required"] == ["instruction", "demonstrations", "language", "kind", "labels"]
    assert schema["properties"]["kind"]["enum"] == ["classification", "extraction", "generation"]
    items = examples_schema(5)["json_schema"]["schema"]["properties"]["examples"]
    assert (items["minItems"], items["maxItems"], items["items"]["required"]) == (5, 5, ["input", "output"])


def test_answers_are_cleaned_of_labels_fences_and_backticks():
    assert clean_answer("Output: 2049-07-05\nBecause...") == "2049-07-05"
    assert clean_answer("```\n2049-07-05\n```") == "2049-07-05"
    assert clean_answer("`2049-07-05`") == "2049-07-05"
    assert clean_answer('"quoted" stays') == '"quoted" stays'


def test_label_requests_and_answers():
    """The labelling prompt keeps its instruction and definitions in the fixed system message
    (the server caches that prefix) and the input last; the answer is held to a bare enum."""
    from p2m.tasks.core.spec import Example, PromptSpec
    from p2m.tasks.generation.labels import labelling_messages
    from p2m.tasks.teacher.prompts import label_schema, parse_label

    spec = PromptSpec(
        instruction="Classify the ticket.",
        demonstrations=[Example(input="charged twice", output="billing")],
        kind="classification",
        labels=["billing", "bug"],
    )
    messages = labelling_messages(spec, {"billing": "money", "bug": "defects"}, "app crashes", max_demos=8)
    assert messages[0]["content"] == (
        "Classify the ticket.\n\nThe labels:\n- billing: money\n- bug: defects\n\nReply with the label only."
    )
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[-1]["content"] == "app crashes"
    assert label_schema(["billing", "bug"])["json_schema"]["schema"] == {"enum": ["billing", "bug"]}
    assert parse_label('"bug"', ["billing", "bug"]) == "bug" and parse_label("refund", ["billing", "bug"]) is None
