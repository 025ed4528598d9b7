"""The Prefect UI's Run form for p2m's flows: fields that set a setting show the setting's value.

A flow parameter that sets one setting (the pipeline's `num_examples` sets
generation.num_examples) is typed `setting_parameter("generation.num_examples")`: the setting's
own type and bounds, taken from `p2m.tasks.core.config`, or None. In a Python call None means "as the
settings say" (P2M_* variables, .env), so the command line keeps working as before. In the form
an optional number would be an "int | None" toggle set to None, so `p2m deploy` rewrites each such
field of the deployment's parameter schema (`show_settings`): a plain number field with the
setting's bounds and, as its default, the value the settings give where `p2m deploy` runs. The
form then shows 100 examples where 100 would be used, and the server refuses -1 before a run
starts (it checks parameters against the schema).
"""

from __future__ import annotations

import functools
import typing
from dataclasses import dataclass
from typing import Annotated

from p2m.tasks.core.config import Settings


@dataclass(frozen=True)
class SettingRef:
    """Marks a flow parameter as setting the setting at `path` ("generation.num_examples")."""

    path: str


def _setting_field(path: str):

    model, field = Settings, None
    for name in path.split("."):
        field = model.model_fields[name]
        model = field.annotation
    return field


def setting_parameter(path: str):
    """The type of a flow parameter that sets the setting at `path`: the setting's type with its
    bounds, or None (the settings decide)."""
    field = _setting_field(path)
    return Annotated[(field.annotation, *field.metadata, SettingRef(path))] | None


def _setting_ref(hint) -> SettingRef | None:
    """The SettingRef inside a parameter's type hint (`Optional[Annotated[..., SettingRef]]`), if any."""
    for arg in typing.get_args(hint):
        if typing.get_origin(arg) is Annotated:
            return next((m for m in arg.__metadata__ if isinstance(m, SettingRef)), None)
    return None


def setting_parameters(fn) -> dict[str, str]:
    """{parameter name: setting path} for the parameters of `fn` typed with `setting_parameter`."""
    hints = typing.get_type_hints(fn, include_extras=True)
    return {name: ref.path for name, hint in hints.items() if (ref := _setting_ref(hint)) is not None}


def show_settings(properties: dict, fn, settings) -> dict[str, object]:
    """Rewrite the parameter schema `properties` of flow function `fn` so that each parameter that
    sets a setting is its setting's type (bounds included, no None branch) with the value
    `settings` give as default, and an optional `overrides` object is a plain object defaulting
    to {}. Changes `properties` in place; returns {parameter: default shown}.
    """
    shown: dict[str, object] = {}
    for name, path in setting_parameters(fn).items():
        prop = properties[name]
        typed = [branch for branch in prop.pop("anyOf", [prop]) if branch.get("type") != "null"]
        prop.update(typed[0])
        prop["default"] = shown[name] = functools.reduce(getattr, path.split("."), settings)
    overrides = properties.get("overrides")
    if overrides is not None and "anyOf" in overrides:
        overrides.pop("anyOf")
        overrides.update({"type": "object", "additionalProperties": True, "default": {}})
        shown["overrides"] = {}
    return shown
