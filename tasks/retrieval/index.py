"""Retrieval indexes as files: one JSONL line per dataset or model, headed by a build record.

An index is built from local folders (`p2m.tasks.retrieval.registry`, offline) or from the Hugging Face Hub API
(`huggingface_hub`, needs a network or a mirror at HF_ENDPOINT). Dataset entries are embedded
(`p2m.tasks.retrieval.encoders`; static MiniLM by default: 100k descriptions in about 20 s, full MiniLM about
10-35 ms each); a refresh embeds only entries whose text changed (their `text_hash`).

File layout: `datasets.jsonl`/`models.jsonl`, first line `{"index": "datasets"|"models", "built":
ISO date, "count": N, "sources": [...]}` (dataset indexes add `"encoder"` and `"embeddings"`),
then one record per line. Embeddings live beside the JSONL in a float16 `.npy` file, row i for
record i, named by its content hash (as JSON numbers, 100k of them were 242 MB and 9 s to parse;
as float16, 51 MB and 0.2 s).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
from p2m.tasks.core.errors import BadInputError
from p2m.tasks.core.run_store import check_writable_folder, read_jsonl
from p2m.tasks.retrieval.encoders import EncoderName, get_encoder
from p2m.tasks.retrieval.registry import DatasetRecord, ModelRecord, architecture_of, scan_datasets, scan_models


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_index(path: Path, kind: str, records: list[dict], sources: list[str], **header_extra) -> Path:
    """Write the index file atomically (a reader never sees half an index)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    header = {
        "index": kind,
        "built": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "count": len(records),
        "sources": sources,
        **header_extra,
    }
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in [header] + records:
            f.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
    tmp.replace(path)
    return path


def read_index(path: Path) -> tuple[dict, list[dict]]:
    """(header, records) of an index file."""
    lines = read_jsonl(path)
    if not lines or "index" not in lines[0]:
        raise ValueError(f"{path} is not a p2m index file")
    return lines[0], lines[1:]


def write_embeddings(folder: Path, matrix: np.ndarray) -> str:
    """Save `matrix` as float16 under a name made of its content hash; returns the file name."""
    data = np.ascontiguousarray(matrix, dtype=np.float16)
    name = f"datasets.{hashlib.sha256(data.tobytes()).hexdigest()[:12]}.npy"
    tmp = folder / f".{name}.tmp"
    with open(tmp, "wb") as f:
        np.save(f, data)
    tmp.replace(folder / name)
    return name


def previous_embeddings(path: Path, encoder: str) -> dict[str, np.ndarray]:
    """text_hash -> embedding from the index at `path`, when it exists and used the same encoder."""
    if not path.exists():
        return {}
    header, rows = read_index(path)
    vectors = stored_embeddings(path, header)
    if vectors is None or header.get("encoder") != encoder:
        return {}
    return {r["text_hash"]: v for r, v in zip(rows, vectors, strict=False)}


def build_dataset_index(
    records: list[DatasetRecord],
    path: Path,
    sources: list[str],
    embed: bool = True,
    encoder: EncoderName = "minilm-static",
) -> dict:
    """Write a dataset index for `records`, reusing embeddings of unchanged entries from `path`."""
    previous = previous_embeddings(path, encoder) if embed else {}
    rows = [r.model_dump() | {"text_hash": text_hash(r.description)} for r in records]
    todo = [i for i, row in enumerate(rows) if row["text_hash"] not in previous]
    header: dict = {}
    if embed:
        fresh = dict(zip(todo, get_encoder(encoder).encode([rows[i]["description"] for i in todo]), strict=True))
        matrix = (
            np.stack([fresh[i] if i in fresh else previous[row["text_hash"]] for i, row in enumerate(rows)])
            if rows
            else np.zeros((0, 0))
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"encoder": encoder, "embeddings": write_embeddings(path.parent, matrix)}
    write_index(path, "datasets", rows, sources, **header)
    remove_unused_embeddings(path.parent, keep=header.get("embeddings"))
    return {
        "path": str(path),
        "count": len(rows),
        "embedded": len(todo) if embed else 0,
        "reused": len(rows) - len(todo) if embed else 0,
        "encoder": encoder if embed else None,
    }


def remove_unused_embeddings(folder: Path, keep: str | None) -> None:
    for old in folder.glob("datasets.*.npy"):
        if old.name != keep:
            old.unlink(missing_ok=True)


def stored_embeddings(path: Path, header: dict) -> np.ndarray | None:
    """The index's embedding matrix (float32), or None when it has none or it does not match."""
    name = header.get("embeddings")
    if not name or not (path.parent / name).exists():
        return None
    matrix = np.load(path.parent / name).astype(np.float32)
    return matrix if len(matrix) == header.get("count") else None


def load_dataset_index(path: Path) -> tuple[list[DatasetRecord], np.ndarray | None, dict]:
    """(records, embeddings matrix or None when the index has none, header)."""
    header, rows = read_index(path)
    for r in rows:
        r.pop("text_hash", None)
    return [DatasetRecord(**r) for r in rows], stored_embeddings(path, header), header


def build_model_index(records: list[ModelRecord], path: Path, sources: list[str]) -> dict:
    write_index(path, "models", [r.model_dump() for r in records], sources)
    return {"path": str(path), "count": len(records)}


def load_model_index(path: Path) -> tuple[list[ModelRecord], dict]:
    header, rows = read_index(path)
    return [ModelRecord(**r) for r in rows], header


def hub_dataset_records(
    limit: int = 1000, search: str | None = None, endpoint: str | None = None
) -> list[DatasetRecord]:
    """Dataset records from the Hub API (most downloaded first). Needs the network, or a mirror at `endpoint`."""
    from huggingface_hub import HfApi

    records = []
    for info in HfApi(endpoint=endpoint).list_datasets(search=search, sort="downloads", limit=limit, full=True):
        card = info.card_data.to_dict() if getattr(info, "card_data", None) else {}
        tags = [t for t in (info.tags or []) if not t.startswith(("region:", "size_categories:"))]
        features = (
            (card.get("dataset_info") or {}).get("features") if isinstance(card.get("dataset_info"), dict) else None
        )
        columns = [f["name"] for f in features or [] if isinstance(f, dict) and "name" in f]
        description = (
            f"{card.get('pretty_name') or info.id}. {' '.join(tags)}. {getattr(info, 'description', '') or ''}".strip()
        )
        records.append(
            DatasetRecord(
                name=info.id,
                path=f"hub:{info.id}",
                description=description,
                columns=columns,
                license=card.get("license") if isinstance(card.get("license"), str) else None,
                gated=bool(info.gated),
                downloads=int(info.downloads or 0),
            )
        )
    return records


def hub_model_records(limit: int = 1000, search: str | None = None, endpoint: str | None = None) -> list[ModelRecord]:
    """Model records from the Hub API: text-generation and text2text models the trainer supports."""
    from huggingface_hub import HfApi

    records = []
    for info in HfApi(endpoint=endpoint).list_models(
        search=search, sort="downloads", limit=limit, full=True, cardData=True
    ):
        model_type = ((getattr(info, "config", None) or {}).get("model_type")) or ""
        arch = architecture_of(model_type)
        if arch is None:
            continue
        size = sum((s.size or 0) for s in (info.siblings or []) if s.rfilename.endswith((".safetensors", ".bin")))
        tags = " ".join(info.tags or [])
        records.append(
            ModelRecord(
                name=info.id,
                path=f"hub:{info.id}",
                description=f"{info.id}. {tags}",
                architecture=arch,
                model_type=model_type,
                size_bytes=size,
                num_parameters=size // 4,
                downloads=int(info.downloads or 0),
            )
        )
    return records


def check_index_inputs(out_dir: Path, datasets_dir: Path | None, models_dir: Path | None) -> None:
    """Raise BadInputError when `out_dir` cannot be written or a source folder is not a folder."""
    check_writable_folder(out_dir, "the index files")
    for flag, folder in (("--datasets-dir", datasets_dir), ("--models-dir", models_dir)):
        if folder and not Path(folder).is_dir():
            raise BadInputError(f"{flag} {folder} is not a folder; pass a folder of Hugging Face style repos")


def check_hub_reachable(endpoint: str | None = None, timeout_s: float = 5.0) -> None:
    """Raise BadInputError, at once, when the Hugging Face Hub cannot be asked for `--hub-limit`.

    Offline mode (HF_HUB_OFFLINE, which p2m sets to 1 unless told otherwise) or a Hub that does
    not answer within `timeout_s` (no network, a proxy) would otherwise fail after the minute
    spent on the local folders, with the library's traceback.
    """
    import os

    # lazy: the Hub's client and settings, only when --hub-limit asks for the Hub
    import httpx

    # lazy: see above
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise BadInputError(
            "--hub-limit needs the Hugging Face Hub, and offline mode is on (HF_HUB_OFFLINE=1, p2m's default): "
            "run with HF_HUB_OFFLINE=0 to allow it, or drop --hub-limit"
        )
    url = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    try:
        httpx.get(f"{url}/api/models", params={"limit": 1}, timeout=timeout_s)
    except httpx.HTTPError as e:
        raise BadInputError(
            f"--hub-limit needs the Hugging Face Hub, and {url} is unreachable ({type(e).__name__}): "
            "check the network (or HF_ENDPOINT for a mirror), or drop --hub-limit"
        ) from None


def refresh_indexes(
    out_dir: Path,
    datasets_dir: Path | None = None,
    models_dir: Path | None = None,
    hub_limit: int = 0,
    embed: bool = True,
    encoder: EncoderName = "minilm-static",
) -> dict:
    """Rebuild `datasets.jsonl` and `models.jsonl` under `out_dir` from local folders (and the Hub).

    Raises BadInputError, before any work, when `out_dir` cannot be written or a source is no folder.
    """
    check_index_inputs(out_dir, datasets_dir, models_dir)
    datasets = scan_datasets(datasets_dir) if datasets_dir else []
    models = scan_models(models_dir)
    sources = [str(d) for d in (datasets_dir, models_dir) if d]
    if hub_limit:
        datasets += hub_dataset_records(hub_limit)
        models += hub_model_records(hub_limit)
        sources.append("hub")
    return {
        "datasets": build_dataset_index(
            datasets, Path(out_dir) / "datasets.jsonl", sources, embed=embed, encoder=encoder
        ),
        "models": build_model_index(models, Path(out_dir) / "models.jsonl", sources),
    }
