"""Local registries of datasets and models, laid out like Hugging Face repos.

A dataset folder: `README.md` (a card: YAML front matter between `---` lines, then prose) and data
files (`.jsonl`, `.json`, `.csv`, `.parquet`, at the top or under `data/`). A model folder:
`config.json`, weights, tokenizer files and a `README.md` card. Front-matter keys read here, all
optional: `pretty_name`, `license`, `tags`, `task_categories`, `gated`, `downloads`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import yaml
from p2m.tasks.core.errors import BadInputError
from p2m.tasks.core.yamltext import load_yaml_text
from p2m.tasks.storage.datafiles import SUFFIXES, read_rows, text_value
from p2m.tasks.storage.embedded import MINILM_NAME, SMOLLM2_NAME, TINY_MODELS
from pydantic import BaseModel

logger = logging.getLogger(__name__)

DECODER_ONLY = {
    "llama",
    "gpt2",
    "qwen2",
    "qwen3",
    "mistral",
    "gemma",
    "gemma2",
    "gemma3_text",
    "phi",
    "phi3",
    "smollm3",
    "olmo",
    "gpt_neox",
    "opt",
    "bloom",
}
ENCODER_DECODER = {"t5", "mt5", "bart", "mbart", "umt5", "pegasus", "marian", "longt5"}
# Encoders: students for label tasks only (a classification head answers one label of a closed set).
ENCODERS = {
    "bert",
    "roberta",
    "distilbert",
    "deberta",
    "deberta-v2",
    "electra",
    "xlm-roberta",
    "mpnet",
    "albert",
    "camembert",
    "modernbert",
}
CLASSIFIER = "encoder-classifier"
TINY_MODEL_TYPES = {"tiny-t5": "t5", "tiny-gpt2": "gpt2", "tiny-bert": "bert"}


class DatasetRecord(BaseModel):
    name: str
    path: str
    description: str
    columns: list[str] = []
    sample_rows: list[dict] = []
    num_rows: int = 0
    license: str | None = None
    gated: bool = False
    downloads: int = 0
    data_files: list[str] = []
    problem: str | None = None  # why its data cannot be read, if it cannot


class ModelRecord(BaseModel):
    name: str
    path: str  # a folder, or "embedded:NAME" resolved when the model is loaded
    description: str
    architecture: str  # "decoder-only" | "encoder-decoder" | "encoder-classifier"
    model_type: str = ""
    num_parameters: int = 0
    size_bytes: int = 0
    downloads: int = 0
    license: str | None = None
    test_only: bool = False


def read_card(readme: Path) -> tuple[dict, str]:
    """(front matter, prose) of a model or dataset card; ({}, "") when there is none."""
    if not readme.exists():
        return {}, ""
    text = readme.read_text(encoding="utf-8", errors="replace")
    if text.startswith("---"):
        parts = text.split("---", 2)
        if len(parts) == 3:
            try:
                meta = load_yaml_text(parts[1]) or {}
            except yaml.YAMLError:  # a broken card is read as prose only
                meta = {}
            return (meta if isinstance(meta, dict) else {}), parts[2].strip()
    return {}, text.strip()


def card_list(meta: dict, key: str) -> list[str]:
    """A card field meant as a list (`tags: [a, b]`), also when written as one word (`tags: numbers`)."""
    value = meta.get(key)
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def card_int(meta: dict, key: str) -> int:
    """A card's count (`downloads: 1200`); 0 for a missing or unreadable one (`downloads: lots`)."""
    try:
        return max(0, int(meta.get(key) or 0))
    except (TypeError, ValueError):
        return 0


def card_flag(meta: dict, key: str) -> bool:
    """A card's yes/no field; `gated: auto` or `manual` (the Hub's values) count as yes."""
    value = meta.get(key, False)
    return value.strip().lower() not in ("", "false", "no", "0", "off") if isinstance(value, str) else bool(value)


def data_files(folder: Path) -> list[Path]:
    """The data files of a dataset folder, top level and under data/, sorted."""
    found = [p for p in folder.glob("*") if p.suffix in SUFFIXES] + [
        p for p in folder.glob("data/**/*") if p.suffix in SUFFIXES
    ]
    return sorted(found)


def _peek_rows(path: Path, limit: int = 3) -> tuple[list[str], list[dict], int]:
    """(columns, first rows, row count) of a data file, values as written."""
    rows = read_rows(path)
    columns = list(dict.fromkeys(c for r in rows[:100] for c in r))
    return columns, rows[:limit], len(rows)


def scan_datasets(root: Path) -> list[DatasetRecord]:
    """A record for every dataset folder under `root` (sorted by name)."""
    records = []
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith(".")):
        meta, body = read_card(folder / "README.md")
        files = data_files(folder)
        columns, rows, n, problem = [], [], 0, None
        if files:
            try:
                columns, rows, n = _peek_rows(files[0])
            except BadInputError as e:  # a malformed file: retrieval passes the dataset over with this reason
                problem = str(e)
        tags = " ".join(card_list(meta, "tags") + card_list(meta, "task_categories"))
        records.append(
            DatasetRecord(
                name=folder.name,
                path=str(folder),
                description=f"{meta.get('pretty_name', folder.name)}. {tags}. {body}".strip(),
                columns=columns,
                sample_rows=rows,
                num_rows=n,
                license=text_value(meta.get("license")),
                gated=card_flag(meta, "gated"),
                downloads=card_int(meta, "downloads"),
                data_files=[str(f) for f in files],
                problem=problem,
            )
        )
    return records


def architecture_of(model_type: str) -> str | None:
    if model_type in ENCODER_DECODER:
        return "encoder-decoder"
    if model_type in DECODER_ONLY:
        return "decoder-only"
    if model_type in ENCODERS:
        return CLASSIFIER
    return None


def read_model_config(folder: Path) -> tuple[dict | None, str | None]:
    """(config.json of a model folder, None), or (None, why the folder cannot be a student).

    Why: its config.json cannot be read, or its model type is not one the trainer supports: one
    that needs custom code (`auto_map`, or a type transformers does not know), which p2m never runs.
    """
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        return None, f"its config.json cannot be read ({e})"
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or architecture_of(model_type) is None:
        custom = "auto_map" in config or not isinstance(model_type, str) or not known_to_transformers(model_type)
        why = "it needs custom code, which p2m never runs" if custom else "p2m trains decoder-only and encoder-decoder"
        return None, f"model type {model_type or '(none)'} is not supported ({why})"
    return config, None


def known_to_transformers(model_type: str) -> bool:
    """Whether transformers has the code for `model_type` built in (no remote code needed)."""
    # lazy: transformers' config table, only for a folder p2m cannot use anyway
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return model_type in CONFIG_MAPPING_NAMES


def model_folder_problem(models_dir: Path | None, name: str) -> str | None:
    """Why the folder `name` under `models_dir` is not offered as a model (None: no such folder, or it is)."""
    folder = Path(models_dir) / name if models_dir else None
    if folder is None or not (folder / "config.json").is_file():
        return None
    return read_model_config(folder)[1]


def unknown_model_error(name: str, names: list[str], models_dir: Path | None) -> BadInputError:
    """The error for `--model NAME` that is not among `names`: why its folder was left out, if it is there."""
    problem = model_folder_problem(models_dir, name)
    if problem:
        return BadInputError(f"--model {name}: {problem}; choose another model")
    return BadInputError(
        f"--model {name}: unknown; choose one of {sorted(names)[:20]} or add its folder to --models-dir"
    )


def model_record_from_folder(folder: Path, name: str) -> ModelRecord | None:
    """A record for a transformers model folder, or None when the trainer does not support it
    or its config.json cannot be read (`read_model_config` says why; a warning for an unreadable one)."""
    config, problem = read_model_config(folder)
    if config is None:
        if problem.startswith("its config.json"):
            logger.warning("p2m: model folder %s left out: %s", folder, problem)
        return None
    arch = architecture_of(config["model_type"])
    meta, body = read_card(folder / "README.md")
    weights = list(folder.glob("*.safetensors")) or list(folder.glob("*.bin"))
    size = sum(p.stat().st_size for p in weights)  # stat follows the HF cache's symlinks to blobs
    tags = " ".join(card_list(meta, "tags"))
    return ModelRecord(
        name=name,
        path=str(folder),
        architecture=arch,
        model_type=config["model_type"],
        description=f"{name}. {tags}. {body}",
        size_bytes=size,
        num_parameters=size // 4,
        downloads=card_int(meta, "downloads"),
        license=text_value(meta.get("license")),
        test_only="test-only" in tags,
    )


def scan_hf_cache(cache_dir: Path | None = None) -> list[ModelRecord]:
    """Models already downloaded to the local Hugging Face cache (their snapshot on `main`)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache_dir)
    except CacheNotFound:
        return []
    records = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        revision = next((r for r in repo.revisions if "main" in r.refs), None) or max(
            repo.revisions, key=lambda r: r.last_modified, default=None
        )
        if revision is not None and (revision.snapshot_path / "config.json").exists():
            record = model_record_from_folder(revision.snapshot_path, repo.repo_id)
            if record:
                records.append(record)
    return records


def hf_cache_models_fingerprint(cache_dir: Path | None = None) -> str:
    """The models in the local Hugging Face cache and the commit each ref points to, as one string.

    Cheap (reads only `models--*/refs/*`), for cache keys: a model downloaded since the last run
    changes it, so the model choice is made again.
    """
    from huggingface_hub import constants

    root = Path(cache_dir or constants.HF_HUB_CACHE)
    if not root.is_dir():
        return ""
    refs = sorted(
        f"{ref.parent.parent.name}@{ref.name}={ref.read_text().strip()}"
        for ref in root.glob("models--*/refs/*")
        if ref.is_file()
    )
    return hashlib.sha256("\n".join(refs).encode()).hexdigest()[:16]


def scan_models(root: Path | None, hf_cache: Path | None = None) -> list[ModelRecord]:
    """Records for the embedded models, the local Hugging Face cache and every model folder under `root`."""
    records = [
        ModelRecord(
            name=SMOLLM2_NAME,
            path=f"embedded:{SMOLLM2_NAME}",
            architecture="decoder-only",
            model_type="llama",
            description="SmolLM2-135M-Instruct: small decoder-only instruction-tuned language model for short English "
            "text tasks: classification, extraction, rewriting, conversion, question answering, generation.",
            num_parameters=134_515_008,
            size_bytes=538_000_000,
            downloads=1_000_000,
            license="apache-2.0",
        ),
        ModelRecord(
            name=MINILM_NAME,
            path=f"embedded:{MINILM_NAME}",
            architecture=CLASSIFIER,
            model_type="bert",
            description="all-MiniLM-L6-v2: small English sentence encoder (6 layers, 384 dimensions); with a "
            "classification head, a fast student for label tasks: intent, topic, sentiment, spam, routing.",
            num_parameters=22_713_216,
            size_bytes=90_900_000,
            downloads=1_000_000,
            license="apache-2.0",
        ),
    ] + [
        ModelRecord(
            name=n,
            path=f"embedded:{n}",
            architecture=architecture_of(TINY_MODEL_TYPES[n]),
            model_type=TINY_MODEL_TYPES[n],
            description=f"{n}: random tiny model for tests",
            num_parameters=200_000,
            size_bytes=1_000_000,
            test_only=True,
        )
        for n in TINY_MODELS
    ]
    records += scan_hf_cache(hf_cache)
    if root is not None:
        folders = sorted(p for p in Path(root).iterdir() if (p / "config.json").exists())
        records += [r for r in (model_record_from_folder(f, f.name) for f in folders) if r]
    return records
