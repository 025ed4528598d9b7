"""Stage 1, parse: a prompt file -> `spec.json` (instruction, demonstrations, language).

A prompt file is either YAML with explicit `instruction:` and `demonstrations:` (no LLM call), or
free text, which the teacher LLM splits into instruction and demonstrations. When the LLM's reply
is unusable (a weak local teacher often writes nonsense), labelled blocks such as
`Input: ... Output: ...` are parsed by rule; the spec records which method was used.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, ValidationError

from tasks.errors import BadInputError
from tasks.jsonreply import extract_json_object
from tasks.prompts import render


class Example(BaseModel):
    input: str
    output: str


class PromptSpec(BaseModel):
    """What p2m understood from the prompt; every later stage reads this."""

    instruction: str = Field(min_length=1)
    demonstrations: list[Example] = []
    language: str = "en"
    parsed_by: Literal["yaml", "llm", "rules"] = "yaml"

    def content_hash(self) -> str:
        """Hash of what defines the task (not of how it was parsed): the run folder's identity."""
        payload = json.dumps(
            {"instruction": self.instruction, "demos": [d.model_dump() for d in self.demonstrations]},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


class PromptFile(BaseModel):
    """A prompt file as read from disk: either a ready spec (YAML) or text to parse."""

    text: str
    spec: PromptSpec | None = None


def prompt_identity(prompt: PromptFile) -> str:
    """What makes two prompt files the same task: the spec for YAML, the text (whitespace
    collapsed) for free text. Known before any LLM call, so the run folder is claimed first."""
    if prompt.spec is not None:
        return prompt.spec.content_hash()
    return hashlib.sha256(" ".join(prompt.text.split()).encode()).hexdigest()[:16]


def read_prompt_file(path: Path) -> PromptFile:
    """Read a prompt file; YAML with `instruction:` becomes a spec, anything else stays text.

    Raises BadInputError for a missing or empty file and for YAML without an instruction.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"prompt file {path} does not exist; pass the path of a text or YAML prompt file")
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        raise BadInputError(f"prompt file {path} is empty; write an instruction and a few examples in it")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    looks_like_spec = isinstance(data, dict) and ({"instruction", "demonstrations"} & set(data))
    if not looks_like_spec:
        if path.suffix in {".yaml", ".yml"}:
            raise BadInputError(f"{path} has no `instruction:` key; add one (and `demonstrations:`)")
        return PromptFile(text=text)
    if not str(data.get("instruction") or "").strip():
        raise BadInputError(f"{path} has no `instruction:`; add one line saying what the model should do")
    demos = data.get("demonstrations") or []
    try:
        spec = PromptSpec(
            instruction=str(data["instruction"]).strip(),
            demonstrations=[Example(input=str(d["input"]), output=str(d["output"])) for d in demos],
            language=str(data.get("language", "en")),
            parsed_by="yaml",
        )
    except (KeyError, TypeError, ValidationError) as e:
        raise BadInputError(
            f"{path}: every item of `demonstrations:` needs `input:` and `output:` ({e.__class__.__name__}: {e})"
        ) from None
    return PromptFile(text=text, spec=spec)


_LABELS = r"(?:input|question|q|text|source|x)"
_OUT_LABELS = r"(?:output|answer|a|label|target|y)"
_PAIR = re.compile(
    rf"^\s*{_LABELS}\s*[:：]\s*(?P<input>.+?)\s*\n\s*{_OUT_LABELS}\s*[:：]\s*(?P<output>.+?)\s*(?=\n\s*{_LABELS}\s*[:：]|\n\s*\n|\Z)",
    re.IGNORECASE | re.MULTILINE | re.DOTALL,
)


def parse_by_rules(text: str) -> PromptSpec | None:
    """Parse `Input: ... / Output: ...` style blocks; the text before the first block is the instruction.

    Returns None when the text holds no such block or no instruction.
    """
    matches = list(_PAIR.finditer(text))
    if not matches:
        return None
    instruction = text[: matches[0].start()].strip()
    if not instruction:
        return None
    demos = [Example(input=m["input"].strip(), output=m["output"].strip()) for m in matches]
    return PromptSpec(instruction=instruction, demonstrations=demos, parsed_by="rules")


def spec_from_llm_reply(reply: str, prompt_text: str) -> PromptSpec | None:
    """A spec from the LLM's JSON reply, or None if the reply is unusable.

    Demonstrations the LLM invented (their input is not in the prompt) are dropped: the parse
    must only restructure the user's prompt, never add to it.
    """
    data = extract_json_object(reply)
    if not data or not isinstance(data.get("instruction"), str) or not data["instruction"].strip():
        return None
    squashed = " ".join(prompt_text.split())
    demos = []
    for d in data.get("demonstrations") or []:
        if isinstance(d, dict) and isinstance(d.get("input"), str) and isinstance(d.get("output"), str):
            if " ".join(d["input"].split()) in squashed:
                demos.append(Example(input=d["input"].strip(), output=d["output"].strip()))
    language = data.get("language") if isinstance(data.get("language"), str) else "en"
    return PromptSpec(instruction=data["instruction"].strip(), demonstrations=demos, language=language[:8], parsed_by="llm")


def parse_prompt(prompt: PromptFile, llm=None) -> PromptSpec:
    """The spec for a prompt file: as written (YAML), else by the LLM, else by rule.

    `llm` is a `tasks.llm.LLMClient`; it is only called for free-text prompts.
    Raises BadInputError when nothing usable can be read from the prompt.
    """
    if prompt.spec is not None:
        return prompt.spec
    by_rules = parse_by_rules(prompt.text)
    by_llm = None
    if llm is not None:
        reply = llm.complete([{"role": "user", "content": render("parse_prompt", prompt=prompt.text)}], temperature=0, max_tokens=1024, purpose="parse")
        by_llm = spec_from_llm_reply(reply[0] if reply else "", prompt.text)
    # Prefer the LLM (it handles any format and language) unless it found fewer demonstrations
    # than the labelled blocks plainly show.
    if by_llm and (not by_rules or len(by_llm.demonstrations) >= len(by_rules.demonstrations)):
        return by_llm
    if by_rules:
        return by_rules
    if by_llm:
        return by_llm
    raise BadInputError(
        "could not read an instruction and examples from the prompt; write it as YAML with "
        "`instruction:` and `demonstrations:` (see examples/), or label examples `Input:` / `Output:`"
    )
