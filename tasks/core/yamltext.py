"""YAML as people write it in prompt files and dataset cards: every value is the text written.

PyYAML's safe loader turns `007` into 7, `2049-07-05` into a date and `NULL` into None, and
expands aliases, so a few lines (`a: &a [x, x]`, `b: [*a, *a]`, ...) can grow to gigabytes.
`load_yaml_text` reads scalars as text (BaseLoader builds only str, list and dict) and refuses
aliases before anything is built.
"""

from __future__ import annotations

import yaml


class YAMLAliasError(yaml.YAMLError):
    """The document uses aliases (`*name`), which are not expanded."""


def load_yaml_text(text: str):
    """The YAML document in `text`, every scalar a str. Raises yaml.YAMLError (YAMLAliasError for aliases)."""
    if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.BaseLoader)):
        raise YAMLAliasError("uses YAML aliases (*name); write the values out in full")
    return yaml.load(text, Loader=yaml.BaseLoader)  # noqa: S506 (BaseLoader builds only str, list and dict)
