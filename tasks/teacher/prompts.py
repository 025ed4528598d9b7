"""The teacher's prompts: chat messages built from template files, and what comes back from them.

Every prompt is a chat: a system message from `templates/<name>.system.txt`, then, where a task's
demonstrations belong, one user/assistant turn per demonstration, then a user message from
`templates/<name>.user.txt` (string.Template, `$name` placeholders). The instruction goes in the
system message and the demonstrations are real turns because small instruction models (the
Qwen2.5-Coder teachers) answer an instruction sent alone as a user message with Python code.

Replies that must be structured are asked for with a JSON schema (`response_format`, which
OpenAI, vLLM, Ollama and llama.cpp's server honour) and, in the text, in words, for servers that
ignore it. The text of every template is part of the cache keys of the stages that talk to the
teacher (`templates_hash`), so editing one re-runs them.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import cache
from pathlib import Path
from string import Template

from p2m.tasks.core.kinds import fold

TEMPLATE_DIR = Path(__file__).parent / "templates"


@cache
def _template(name: str) -> Template:
    return Template((TEMPLATE_DIR / f"{name}.txt").read_text(encoding="utf-8").rstrip("\n"))


def render(name: str, **values: object) -> str:
    """The template `name` with every `$placeholder` filled; a missing value is a KeyError."""
    return _template(name).substitute({k: str(v) for k, v in values.items()})


def chat(name: str, turns: list[tuple[str, str]] = (), **values: object) -> list[dict]:
    """Messages: `name`.system, a user/assistant pair per turn, then `name`.user, filled with `values`."""
    messages = [{"role": "system", "content": render(f"{name}.system", **values)}]
    for user, assistant in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    messages.append({"role": "user", "content": render(f"{name}.user", **values)})
    return messages


def templates_hash() -> str:
    """Short content hash of every template, for the cache keys of the stages that use the teacher."""
    h = hashlib.sha256()
    for path in sorted(TEMPLATE_DIR.glob("*.txt")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def json_lines(examples: list[dict]) -> str:
    """Examples as one JSON object per line: unambiguous for outputs of several lines, and the
    form the teacher answers in."""
    return (
        "\n".join(json.dumps({"input": e["input"], "output": e["output"]}, ensure_ascii=False) for e in examples)
        or "(none yet)"
    )


def json_schema(name: str, properties: dict, required: list[str] | None = None) -> dict:
    """A `response_format` asking for a JSON object with `properties` (all required by default)."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": name,
            "schema": {
                "type": "object",
                "properties": properties,
                "required": required or list(properties),
                "additionalProperties": False,
            },
        },
    }


PAIR = {
    "type": "object",
    "properties": {"input": {"type": "string"}, "output": {"type": "string"}},
    "required": ["input", "output"],
    "additionalProperties": False,
}


def examples_schema(count: int) -> dict:
    return json_schema("examples", {"examples": {"type": "array", "items": PAIR, "minItems": count, "maxItems": count}})


def answer_messages(instruction: str, demonstrations: list[dict], text: str) -> list[dict]:
    """The task itself, few-shot: the instruction as the system message, each demonstration a turn."""
    return chat("answer", [(d["input"], d["output"]) for d in demonstrations], instruction=instruction, input=text)


_FENCE = re.compile(r"^```[\w-]*\n?(.*?)\n?```$", re.DOTALL)


def clean_answer(reply: str) -> str:
    """The answer in a free-text reply: its first line, without an echoed `Output:` label or the
    code fence or backticks a chat model may wrap it in.

    The teacher's counterpart of `p2m.tasks.student.format.clean_output` (stripped, first line),
    which cleans a student's answers: a chat model wraps its answer in ways a student trained on
    `Output: ANSWER` prompts does not, so this one also unwraps fences, labels and backticks. Kept
    apart on purpose (the teacher layer may not import the student's); a plain first-line answer
    (no fence, label or backticks) comes out the same from both."""
    text = reply.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    text = re.sub(r"^\s*output\s*[:：]\s*", "", text, flags=re.IGNORECASE)
    text = text.split("\n", 1)[0].strip()
    if len(text) > 1 and text[0] == text[-1] == "`":
        text = text[1:-1].strip()
    return text


def label_schema(labels: list[str]) -> dict:
    """A bare enum over the labels: the reply is one JSON string, a label (cheaper and easier to
    read than an object, measured on the local teacher: 4 completion tokens instead of 16)."""
    return {"type": "json_schema", "json_schema": {"name": "label", "schema": {"enum": labels}}}


def parse_label(reply: str, labels: list[str]) -> str | None:
    """The label in a reply: a JSON string (the enum schema's answer) or plain text, matched to the
    label set with case and spacing folded; None when it names no label."""
    by_fold = {fold(label): label for label in labels}
    text = reply.strip()
    try:
        value = json.loads(text)
        if isinstance(value, str):
            text = value
        elif isinstance(value, dict) and isinstance(value.get("label"), str):
            text = value["label"]
    except json.JSONDecodeError:
        text = clean_answer(text)
    return by_fold.get(fold(text.strip().strip("\"'`.")))


def label_probabilities(logprobs: list[dict] | None, labels: list[str]) -> dict[str, float] | None:
    """Each label's probability from an answer's token log-probabilities (OpenAI's
    `logprobs.content`), or None when the endpoint gave none or the answer's first token begins
    several labels ("offer" and "offer_intent"): then only votes can tell.

    At the first token past the enum's opening quote, the likeliest alternatives are matched to
    the labels they begin and their probabilities renormalised over those labels (llama.cpp
    reports the model's own distribution there, before the grammar narrows it to the labels).
    """
    import math

    entry = next((e for e in logprobs or [] if e.get("token", "").strip(' "')), None)
    if entry is None:
        return None

    def labels_begun_by(token: str) -> list[str]:
        start = fold(token.lstrip(' "'))
        return [label for label in labels if start and fold(label).startswith(start)]

    if len(labels_begun_by(entry["token"])) != 1:
        return None
    probabilities: dict[str, float] = {}
    for alternative in entry.get("top_logprobs") or [entry]:
        begun = labels_begun_by(alternative.get("token", ""))
        if len(begun) == 1:
            probabilities[begun[0]] = probabilities.get(begun[0], 0.0) + math.exp(alternative["logprob"])
    total = sum(probabilities.values())
    return {label: p / total for label, p in probabilities.items()} if total else None
