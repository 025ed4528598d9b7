"""Everything a run reads, checked before any work starts: one clear error instead of a failure
minutes later (or, worse, a file quietly ignored)."""

from __future__ import annotations

import json
from pathlib import Path

from p2m.tasks.core.config import Settings
from p2m.tasks.core.errors import BadInputError
from p2m.tasks.core.run_store import check_run_dir
from p2m.tasks.core.spec import PromptFile, prompt_identity
from p2m.tasks.retrieval.registry import unknown_model_error
from p2m.tasks.stages.parse import check_prompt_size, prompt_from_bytes, prompt_from_text, read_prompt_file
from p2m.tasks.stages.retrieve_model import model_candidates
from p2m.tasks.storage.datafiles import DataFileError, read_inputs, read_pairs
from p2m.tasks.storage.locations import is_url, local_path, read_url_bytes
from p2m.tasks.teacher.client import check_teacher_settings


def check_settings_paths(settings: Settings) -> None:
    """Raise P2MError for a folder, index, test set, price file, forced dataset or model, or
    teacher setting that cannot be used (nothing is contacted over the network)."""
    check_teacher_settings(settings)
    for name in ("datasets_dir", "models_dir"):
        folder = getattr(settings, name)
        if folder is not None and not folder.is_dir():
            raise BadInputError(
                f"--{name.replace('_', '-')} {folder} is not a folder; pass a folder of "
                f"{name.split('_')[0]} laid out like Hugging Face repos"
            )
    for name in ("datasets_index", "models_index"):
        path = getattr(settings, name)
        if path is not None and not _is_index(path):
            raise BadInputError(f"--{name.replace('_', '-')} {path} is not an index file made by `p2m index`")
    if settings.evaluation.eval_data is not None:
        try:
            read_pairs(settings.evaluation.eval_data)
        except DataFileError as e:
            raise BadInputError(f"--eval-data: {e}") from None
    if settings.generation.inputs is not None:
        try:
            read_inputs(settings.generation.inputs, settings.generation.max_inputs)
        except DataFileError as e:
            raise BadInputError(f"--inputs: {e}") from None
    _check_forced_choices(settings)
    if settings.prices_file is not None and not _is_price_table(settings.prices_file):
        raise BadInputError(
            f'P2M_PRICES_FILE {settings.prices_file} must be JSON like {{"model": [usd_per_M_input, usd_per_M_output]}}'
        )


def _is_price_table(path: Path) -> bool:
    try:
        prices = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(prices, dict) and all(
        isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v) for v in prices.values()
    )


def _check_forced_choices(settings: Settings) -> None:
    """A dataset or model forced by name must exist (a dataset in an index file is checked when searched)."""
    dataset = settings.retrieval.dataset
    if dataset and dataset.lower() != "none" and settings.datasets_index is None:
        folder = settings.datasets_dir
        if folder is None:
            raise BadInputError(f"--dataset {dataset}: pass --datasets-dir (the folder holding it), or --dataset none")
        if not (folder / dataset).is_dir():
            names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
            raise BadInputError(
                f"--dataset {dataset}: no such dataset in {folder}; choose one of {names[:20] or 'none there'}, or none"
            )
    if settings.student.model:
        names = sorted(r.name for r in model_candidates(settings.models_dir, settings.models_index))
        if settings.student.model not in names:
            raise unknown_model_error(settings.student.model, names, settings.models_dir)


def _is_index(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return "index" in json.loads(f.readline())
    except (OSError, ValueError, TypeError):
        return False


def read_run_prompt(prompt_file: str | Path | None, prompt_text: str | None, max_chars: int) -> PromptFile:
    """The run's prompt: text pasted into the form (`prompt_text`), or a prompt file given as a
    path or a URL (s3://...). Exactly one of the two; blank text counts as not given.

    Raises BadInputError when both or neither are given, and for a prompt `read_prompt_file` refuses.
    """
    pasted = bool(prompt_text and prompt_text.strip())
    if pasted and prompt_file:
        raise BadInputError(
            "the prompt is given twice: keep the pasted `prompt` or the `prompt_file`, and empty the other"
        )
    if pasted:
        return prompt_from_text(prompt_text, max_chars)
    if not prompt_file:
        raise BadInputError(
            "no prompt: paste the prompt (an instruction and a few examples, free text or YAML) into `prompt`, "
            "or give `prompt_file` (a path on the worker or an s3:// URL)"
        )
    if is_url(str(prompt_file)):
        source = f"prompt file {prompt_file}"
        raw = read_url_bytes(
            str(prompt_file), "prompt file", check_size=lambda size: check_prompt_size(size, source, max_chars)
        )
        return prompt_from_bytes(raw, source, max_chars, yaml_file=str(prompt_file).lower().endswith((".yaml", ".yml")))
    return read_prompt_file(local_path(str(prompt_file)), max_chars)


def check_run_inputs(
    settings: Settings, prompt_file: Path | str | None, out_dir: Path, prompt_text: str | None = None
) -> PromptFile:
    """The prompt read (pasted text or a file, see `read_run_prompt`), once the run folder and
    every path in the settings are known to be usable.

    Raises BadInputError (nothing is written) for the first problem found.
    """
    prompt = read_run_prompt(prompt_file, prompt_text, settings.parse.max_prompt_chars)
    check_run_dir(Path(out_dir).resolve(), prompt_identity(prompt))
    check_settings_paths(settings)
    return prompt
