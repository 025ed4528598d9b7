import json

import pytest
from p2m.tasks.core.errors import BadInputError
from p2m.tasks.stages.parse import parse_by_rules, parse_prompt, read_prompt_file, spec_from_llm_reply

from tests.conftest import EXAMPLE


def test_yaml_prompt_becomes_spec_without_llm():
    prompt = read_prompt_file(EXAMPLE)
    spec = parse_prompt(prompt, llm=None)
    assert spec.parsed_by == "yaml"
    assert spec.instruction.startswith("Convert the number")
    assert spec.demonstrations[0].input == "three hundred forty-two" and spec.demonstrations[0].output == "342"


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        ("   \n", "is empty"),
        ("demonstrations:\n  - input: a\n    output: b\n", "no `instruction:`"),
    ],
)
def test_bad_prompt_files_say_what_to_do(tmp_path, content, message):
    path = tmp_path / "prompt.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(BadInputError, match=message):
        read_prompt_file(path)


def test_rules_parse_labelled_blocks():
    text = "Classify the ticket.\n\nInput: charged twice\nOutput: billing\n\nInput: app crashes\nOutput: bug\n"
    spec = parse_by_rules(text)
    assert spec.instruction == "Classify the ticket."
    assert [(d.input, d.output) for d in spec.demonstrations] == [("charged twice", "billing"), ("app crashes", "bug")]


def test_llm_reply_keeps_only_demonstrations_from_the_prompt():
    prompt = "Traduis en anglais.\nEntrée: bonjour\nSortie: hello"
    reply = "Sure! " + json.dumps(
        {
            "instruction": "Translate to English.",
            "language": "fr",
            "demonstrations": [{"input": "bonjour", "output": "hello"}, {"input": "merci", "output": "thanks"}],
        }
    )
    spec = spec_from_llm_reply(reply, prompt)
    assert spec.instruction == "Translate to English." and spec.language == "fr"
    assert [d.input for d in spec.demonstrations] == ["bonjour"]  # "merci" was invented


def test_free_text_falls_back_to_rules_when_llm_writes_nonsense():
    class NonsenseLLM:
        def complete(self, messages, **kw):
            return ["I am a helpful assistant {not json"]

    prompt = read_prompt_file(EXAMPLE.parent / "ticket_classification.txt")
    spec = parse_prompt(prompt, NonsenseLLM())
    assert spec.parsed_by == "rules" and len(spec.demonstrations) == 5


def test_unparseable_free_text_is_a_clear_error(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("just some words")
    with pytest.raises(BadInputError, match="could not read an instruction"):
        parse_prompt(read_prompt_file(path), llm=None)
