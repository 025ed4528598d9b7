"""Retrieval indexes as files: one JSONL line per dataset or model, headed by a build record.

An index is built from local folders (`tasks.registry`, offline) or from the Hugging Face Hub API
(`huggingface_hub`, needs a network or a mirror at HF_ENDPOINT). Dataset entries carry a MiniLM
embedding of their description; a refresh re-embeds only entries whose text changed (their
`text_hash`), since embedding is the slow part (about 10 ms per description on 2 cores).

File layout (`*.jsonl`): first line `{"index": "datasets"|"models", "built": ISO date, "count": N,
"sources": [...]}`, then one record per line.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np

from tasks.registry import DatasetRecord, ModelRecord, architecture_of, scan_datasets, scan_models
from tasks.run_store import read_jsonl

EMBED_BATCH = 128


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def embed_descriptions(texts: list[str]) -> np.ndarray:
    """Unit-length MiniLM embeddings (float32), one row per text."""
    from tasks.retrieve_datasets import sentence_encoder

    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    return sentence_encoder().encode([t[:2000] for t in texts], batch_size=EMBED_BATCH, normalize_embeddings=True).astype(np.float32)


def write_index(path: Path, kind: str, records: list[dict], sources: list[str]) -> Path:
    """Write the index file atomically (a reader never sees half an index)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    header = {"index": kind, "built": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "count": len(records), "sources": sources}
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


def build_dataset_index(records: list[DatasetRecord], path: Path, sources: list[str], embed: bool = True) -> dict:
    """Write a dataset index for `records`, reusing embeddings of unchanged entries from `path`."""
    previous: dict[str, list[float]] = {}
    if path.exists():
        _, old = read_index(path)
        previous = {r["text_hash"]: r["embedding"] for r in old if r.get("embedding")}
    rows = []
    for r in records:
        row = r.model_dump()
        row["text_hash"] = text_hash(r.description)
        row["embedding"] = previous.get(row["text_hash"])
        rows.append(row)
    todo = [i for i, row in enumerate(rows) if embed and row["embedding"] is None]
    if todo:
        vectors = embed_descriptions([rows[i]["description"] for i in todo])
        for i, v in zip(todo, vectors):
            rows[i]["embedding"] = [round(float(x), 5) for x in v]
    write_index(path, "datasets", rows, sources)
    return {"path": str(path), "count": len(rows), "embedded": len(todo), "reused": len(rows) - len(todo) if embed else 0}


def load_dataset_index(path: Path) -> tuple[list[DatasetRecord], np.ndarray | None, dict]:
    """(records, embeddings matrix or None when any entry lacks one, header)."""
    header, rows = read_index(path)
    vectors = [r.pop("embedding", None) for r in rows]
    for r in rows:
        r.pop("text_hash", None)
    records = [DatasetRecord(**r) for r in rows]
    matrix = np.asarray(vectors, dtype=np.float32) if rows and all(v is not None for v in vectors) else None
    return records, matrix, header


def build_model_index(records: list[ModelRecord], path: Path, sources: list[str]) -> dict:
    write_index(path, "models", [r.model_dump() for r in records], sources)
    return {"path": str(path), "count": len(records)}


def load_model_index(path: Path) -> tuple[list[ModelRecord], dict]:
    header, rows = read_index(path)
    return [ModelRecord(**r) for r in rows], header


def hub_dataset_records(limit: int = 1000, search: str | None = None, endpoint: str | None = None) -> list[DatasetRecord]:
    """Dataset records from the Hub API (most downloaded first). Needs the network, or a mirror at `endpoint`."""
    from huggingface_hub import HfApi

    records = []
    for info in HfApi(endpoint=endpoint).list_datasets(search=search, sort="downloads", limit=limit, full=True):
        card = info.card_data.to_dict() if getattr(info, "card_data", None) else {}
        tags = [t for t in (info.tags or []) if not t.startswith(("region:", "size_categories:"))]
        features = (card.get("dataset_info") or {}).get("features") if isinstance(card.get("dataset_info"), dict) else None
        columns = [f["name"] for f in features or [] if isinstance(f, dict) and "name" in f]
        description = f"{card.get('pretty_name') or info.id}. {' '.join(tags)}. {getattr(info, 'description', '') or ''}".strip()
        records.append(DatasetRecord(
            name=info.id, path=f"hub:{info.id}", description=description, columns=columns,
            license=card.get("license") if isinstance(card.get("license"), str) else None,
            gated=bool(info.gated), downloads=int(info.downloads or 0),
        ))
    return records


def hub_model_records(limit: int = 1000, search: str | None = None, endpoint: str | None = None) -> list[ModelRecord]:
    """Model records from the Hub API: text-generation and text2text models the trainer supports."""
    from huggingface_hub import HfApi

    records = []
    for info in HfApi(endpoint=endpoint).list_models(search=search, sort="downloads", limit=limit, full=True, cardData=True):
        model_type = ((getattr(info, "config", None) or {}).get("model_type")) or ""
        arch = architecture_of(model_type)
        if arch is None:
            continue
        size = sum((s.size or 0) for s in (info.siblings or []) if s.rfilename.endswith((".safetensors", ".bin")))
        tags = " ".join(info.tags or [])
        records.append(ModelRecord(
            name=info.id, path=f"hub:{info.id}", description=f"{info.id}. {tags}", architecture=arch, model_type=model_type,
            size_bytes=size, num_parameters=size // 4, downloads=int(info.downloads or 0),
        ))
    return records


def refresh_indexes(out_dir: Path, datasets_dir: Path | None = None, models_dir: Path | None = None, hub_limit: int = 0,
                    embed: bool = True) -> dict:
    """Rebuild `datasets.jsonl` and `models.jsonl` under `out_dir` from local folders (and the Hub)."""
    datasets = scan_datasets(datasets_dir) if datasets_dir else []
    models = scan_models(models_dir)
    sources = [str(d) for d in (datasets_dir, models_dir) if d]
    if hub_limit:
        datasets += hub_dataset_records(hub_limit)
        models += hub_model_records(hub_limit)
        sources.append("hub")
    return {
        "datasets": build_dataset_index(datasets, Path(out_dir) / "datasets.jsonl", sources, embed=embed),
        "models": build_model_index(models, Path(out_dir) / "models.jsonl", sources),
    }
