"""What p2m understood from a prompt: the task spec every stage reads, and the prompt file it came from."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, Field


class Example(BaseModel):
    input: str
    output: str


TaskKind = Literal["classification", "extraction", "generation"]
# Where a training example came from (the `source` column of generated/ and splits/).
GENERATED, YOUR_INPUTS = "generated", "your_inputs"


class PromptSpec(BaseModel):
    """What p2m understood from the prompt; every later stage reads this.

    `kind` decides how data is made and which student fits: classification (a closed set of
    `labels`, every output one of them), extraction (the output is a span of the input) or
    generation (anything else); `kind_reason` says how it was decided (`p2m.tasks.core.kinds`).
    """

    instruction: str = Field(min_length=1)
    demonstrations: list[Example] = []
    language: str = "en"
    parsed_by: Literal["yaml", "llm", "rules"] = "yaml"
    kind: TaskKind = "generation"
    labels: list[str] = []
    kind_reason: str = ""

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
