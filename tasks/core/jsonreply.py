"""Reading JSON out of LLM replies, which wrap it in prose or code fences, or break it."""

from __future__ import annotations

import json


def iter_json_objects(text: str):
    """Every JSON object in `text` that parses, outermost first, then the ones inside objects
    that did not parse (so the complete items of a reply cut off mid-array are still found)."""
    if not text:
        return
    decoder = json.JSONDecoder(strict=False)
    start = text.find("{")
    while start != -1:
        try:
            obj, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        if isinstance(obj, dict):
            yield obj
        start = text.find("{", end)


def extract_json_object(text: str) -> dict | None:
    """The first JSON object in `text` that parses, or None.

    Lenient where LLMs commonly slip: code fences, prose around the object, raw newlines inside
    strings (`strict=False`). Anything that still does not parse is rejected, never repaired by guess.
    """
    return next(iter_json_objects(text), None)
