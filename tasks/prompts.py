"""Prompt templates live in `tasks/templates/*.txt` (string.Template, `$name` placeholders).

Their text is part of every cache key that depends on them (`templates_hash`), so editing a
template re-runs exactly the stages that use it.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from string import Template

TEMPLATE_DIR = Path(__file__).parent / "templates"


@cache
def _template(name: str) -> Template:
    return Template((TEMPLATE_DIR / f"{name}.txt").read_text(encoding="utf-8"))


def render(name: str, **values: object) -> str:
    """The template `name` with every `$placeholder` filled; a missing value is a KeyError."""
    return _template(name).substitute({k: str(v) for k, v in values.items()})


def templates_hash(*names: str) -> str:
    """Short content hash of the named templates, for cache keys."""
    h = hashlib.sha256()
    for name in names:
        h.update(_template(name).template.encode())
    return h.hexdigest()[:12]


def format_examples(examples: list[dict]) -> str:
    """Demonstrations as the `Input:` / `Output:` blocks every template uses."""
    return "\n\n".join(f"Input: {e['input']}\nOutput: {e['output']}" for e in examples)
