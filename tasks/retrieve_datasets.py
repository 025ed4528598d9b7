"""Stage, retrieve datasets: find an existing dataset that fits the task, map its columns, load it.

Ranking fuses BM25 (lexical; `tasks.bm25`: rank_bm25's scores on a sparse matrix) and MiniLM
cosine similarity (dense) by reciprocal rank; whether a dataset fits at all is decided on the
dense similarity, which is comparable across queries (BM25 scores are not). Gated datasets,
unreadable ones and ones whose columns cannot be mapped are passed over with the reason recorded; "nothing fits" is a valid answer (the run then
trains on generated data only). Output: `retrieved/` (a datasets folder with `input`/`output`)
and `retrieval.json` (candidates, scores, the choice and why).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import numpy as np

from tasks.bm25 import SparseBM25
from tasks.config import RetrievalConfig
from tasks.parse import PromptSpec
from tasks.registry import DATA_SUFFIXES, DatasetRecord, scan_datasets
from tasks.run_store import rows_to_dataset, write_json

INPUT_NAMES = ["input", "inputs", "question", "text", "source", "sentence", "prompt", "query", "words", "x", "src"]
OUTPUT_NAMES = ["output", "outputs", "answer", "label", "target", "digits", "response", "completion", "y", "tgt"]
RRF_K = 60


def tokenize(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


@cache
def sentence_encoder():
    """MiniLM (shipped on PyPI) through sentence-transformers; loaded once per process."""
    from sentence_transformers import SentenceTransformer

    from tasks.embedded import minilm_path

    return SentenceTransformer(str(minilm_path()), device="cpu")


def query_text(spec: PromptSpec) -> str:
    demos = " ".join(f"{d.input} {d.output}" for d in spec.demonstrations[:5])
    return f"{spec.instruction} {demos}"


def rank_datasets(spec: PromptSpec, records: list[DatasetRecord], top_k: int) -> list[dict]:
    """Candidates best first: name, fused score, dense similarity, BM25 score."""
    if not records:
        return []
    query = query_text(spec)
    bm25 = SparseBM25([tokenize(f"{r.name} {r.description} {' '.join(r.columns)}") for r in records])
    lexical = bm25.get_scores(tokenize(query))
    encoder = sentence_encoder()
    vectors = encoder.encode([query] + [r.description[:2000] for r in records], normalize_embeddings=True)
    dense = vectors[1:] @ vectors[0]
    fused = np.zeros(len(records))
    for scores in (lexical, dense):
        for rank, i in enumerate(np.argsort(-scores)):
            fused[i] += 1.0 / (RRF_K + rank + 1)
    order = np.argsort(-fused)[:top_k]
    return [
        {"name": records[i].name, "score": round(float(fused[i]), 5), "similarity": round(float(dense[i]), 4), "bm25": round(float(lexical[i]), 3)}
        for i in order
    ]


def map_columns(columns: list[str]) -> dict | None:
    """{"input": col, "output": col} by column name, or None when no pair is recognisable."""
    lower = {c.lower(): c for c in columns}
    inp = next((lower[n] for n in INPUT_NAMES if n in lower), None)
    out = next((lower[n] for n in OUTPUT_NAMES if n in lower and lower[n] != inp), None)
    if inp is None or out is None:
        return None
    return {"input": inp, "output": out}


def unusable_reason(record: DatasetRecord) -> str | None:
    """Why a dataset cannot be used as it is, or None."""
    if record.gated:
        return "gated: needs the owner's approval"
    if not record.data_files:
        return "no data files"
    if not record.columns:
        return "data files could not be read"
    if map_columns(record.columns) is None:
        return f"no input/output columns recognised among {record.columns}"
    return None


def load_rows(record: DatasetRecord, mapping: dict, max_rows: int, seed: int):
    """The dataset's rows as a `datasets.Dataset` with string `input`/`output`, at most `max_rows`."""
    import datasets

    parts = []
    for f in record.data_files:
        ds = datasets.load_dataset(DATA_SUFFIXES[Path(f).suffix], data_files=f, split="train")
        parts.append(ds.select_columns([mapping["input"], mapping["output"]]))
    ds = datasets.concatenate_datasets(parts).shuffle(seed=seed)
    ds = ds.select(range(min(max_rows, len(ds))))
    ds = ds.map(lambda r: {"input": str(r[mapping["input"]]).strip(), "output": str(r[mapping["output"]]).strip()},
                remove_columns=ds.column_names)
    return ds.filter(lambda r: bool(r["input"]) and bool(r["output"]))


def retrieve_dataset(spec: PromptSpec, cfg: RetrievalConfig, datasets_dir: Path | None, out_dir: Path, seed: int = 0) -> dict:
    """Choose and load a dataset for `spec` into `out_dir/retrieved`; write `out_dir/retrieval.json`.

    Returns the retrieval record: {"chosen": name or None, "reason", "rows", "candidates", "skipped"}.
    """
    records = scan_datasets(datasets_dir) if datasets_dir and Path(datasets_dir).is_dir() else []
    by_name = {r.name: r for r in records}
    record: dict = {"datasets_dir": str(datasets_dir) if datasets_dir else None, "candidates": [], "skipped": [], "chosen": None, "rows": 0}
    forced = cfg.dataset
    if forced and forced.lower() == "none":
        record["reason"] = "--dataset none: generated data only"
        ranked = []
    elif forced:
        if forced not in by_name:
            from tasks.errors import BadInputError

            raise BadInputError(f"--dataset {forced}: no such folder in {datasets_dir}; choose one of {sorted(by_name) or 'none (set --datasets-dir)'}")
        ranked = [{"name": forced, "score": None, "similarity": None, "bm25": None}]
    else:
        ranked = rank_datasets(spec, records, cfg.top_k)
        record["candidates"] = ranked
    for cand in ranked:
        r = by_name[cand["name"]]
        if not forced and cand["similarity"] < cfg.min_dataset_score:
            record["reason"] = f"best usable candidate {r.name} is below the fit threshold ({cand['similarity']} < {cfg.min_dataset_score})"
            break
        why_not = unusable_reason(r)
        if why_not:
            record["skipped"].append({"name": r.name, "reason": why_not})
            continue
        mapping = map_columns(r.columns)
        try:
            ds = load_rows(r, mapping, cfg.max_rows, seed)
        except Exception as e:  # malformed data: move on, say why
            record["skipped"].append({"name": r.name, "reason": f"failed to load: {e.__class__.__name__}: {e}"[:300]})
            continue
        record.update(chosen=r.name, columns=mapping, rows=len(ds), license=r.license,
                      reason="forced with --dataset" if forced else f"highest fused score with similarity {cand['similarity']} >= {cfg.min_dataset_score}")
        break
    else:
        record.setdefault("reason", "no candidate datasets" if not ranked else "every candidate was unusable")
    if record["chosen"] is None:
        ds = rows_to_dataset([])
    ds.save_to_disk(str(out_dir / "retrieved"))
    write_json(out_dir / "retrieval.json", record)
    return record
