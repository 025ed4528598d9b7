"""Reading JSON out of LLM replies, which wrap it in prose or code fences, or break it."""

from __future__ import annotations

import json


def extract_json_object(text: str) -> dict | None:
    """The first JSON object in `text` that parses, or None.

    Lenient where LLMs commonly slip: code fences, prose around the object, raw newlines inside
    strings (`strict=False`). Anything that still does not parse is rejected, never repaired by guess.
    """
    if not text:
        return None
    decoder = json.JSONDecoder(strict=False)
    start = text.find("{")
    while start != -1:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        if isinstance(obj, dict):
            return obj
        start = text.find("{", start + 1)
    return None
