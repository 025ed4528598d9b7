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


class ScriptedLLM:
    """An LLM that answers from a list and records what it was asked."""

    def __init__(self, *replies: str):
        self.replies, self.asked = list(replies), []

    def complete(self, messages, **kwargs):
        self.asked.append(kwargs.get("purpose"))
        return [self.replies.pop(0)]


def prompt_file(tmp_path, text: str, name: str = "prompt.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return read_prompt_file(path)


def test_spec_json_records_the_kind_its_labels_and_why(tmp_path):
    prompt = prompt_file(
        tmp_path,
        "Classify the support ticket as billing, bug, or feature request.\n\n"
        "Input: I was charged twice\nOutput: billing\n\nInput: The app crashes\nOutput: bug\n\n"
        "Input: Add a dark mode\nOutput: feature request\n",
        "ticket.txt",
    )
    spec = parse_prompt(prompt, llm=None)
    assert spec.kind == "classification" and spec.labels == ["billing", "bug", "feature request"]
    assert "named in the instruction" in spec.kind_reason


def test_yaml_may_give_the_kind_and_labels(tmp_path):
    prompt = prompt_file(
        tmp_path,
        "instruction: Say how the customer feels.\nkind: classification\nlabels: [happy, angry, calm]\n"
        "demonstrations:\n  - input: great\n    output: happy\n",
    )
    spec = parse_prompt(prompt, llm=None)
    assert (spec.kind, spec.labels) == ("classification", ["happy", "angry", "calm"])
    assert "the prompt file" in spec.kind_reason


def test_the_command_line_overrides_the_kind(tmp_path):
    prompt = read_prompt_file(EXAMPLE)
    spec = parse_prompt(prompt, llm=None, labels=["small", "large"])
    assert spec.kind == "classification" and spec.labels[:2] == ["small", "large"]
    assert parse_prompt(prompt, llm=None, kind="extraction").kind == "extraction"


def test_the_teacher_is_asked_the_kind_only_when_the_rules_cannot_tell(tmp_path):
    yaml_text = (
        'instruction: "{instruction}"\n'
        "demonstrations:\n  - input: great\n    output: {a}\n  - input: awful\n    output: {b}\n"
    )
    plain = prompt_file(tmp_path, yaml_text.format(instruction="Rate it: good or bad.", a="good", b="bad"))
    llm = ScriptedLLM()
    assert parse_prompt(plain, llm=llm).kind == "classification" and llm.asked == []
    unclear = prompt_file(tmp_path, yaml_text.format(instruction="Rate the review.", a="positive", b="negative"))
    llm = ScriptedLLM(json.dumps({"kind": "classification", "labels": ["positive", "negative"]}))
    spec = parse_prompt(unclear, llm=llm)
    assert llm.asked == ["kind"] and spec.labels == ["positive", "negative"] and "teacher" in spec.kind_reason


def test_the_language_is_the_instructions_not_a_demonstrations(tmp_path):
    english = prompt_file(
        tmp_path,
        "Classify the support ticket as billing, bug, or feature request.\n\n"
        "Input: Me cobraron dos veces este mes y nadie responde\nOutput: billing\n\n"
        "Input: The app crashes\nOutput: bug\n",
        "mixed.txt",
    )
    assert parse_prompt(english, llm=None).language == "en"
    japanese = prompt_file(
        tmp_path,
        "問い合わせを請求、不具合、要望のいずれかに分類してください。\n\nInput: 二重に請求されました\nOutput: 請求\n",
        "ja.txt",
    )
    assert parse_prompt(japanese, llm=None).language == "ja"


def test_a_line_announcing_the_examples_is_not_part_of_the_instruction():
    spec = parse_by_rules(
        "Classify the ticket as billing or bug.\n\nHere are some examples:\n\nInput: x\nOutput: bug\n"
    )
    assert spec.instruction == "Classify the ticket as billing or bug."
