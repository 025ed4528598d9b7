"""Stage, retrieve datasets: find an existing dataset that fits the task, map its columns, load it.

Ranking fuses BM25 (lexical; `p2m.tasks.retrieval.bm25`: rank_bm25's scores on a sparse matrix) and cosine
similarity of sentence embeddings (dense; `p2m.tasks.retrieval.encoders`: MiniLM, or its static distillation
for big index files) by reciprocal rank; whether a dataset fits at all is decided on the MiniLM
similarity, which is comparable across queries (BM25 scores are not). Gated datasets,
unreadable ones and ones whose columns cannot be mapped are passed over with the reason recorded;
"nothing fits" is a valid answer (the run then trains on generated data only). Output: `retrieved/`
(a datasets folder with `input`/`output`) and `retrieval.json` (candidates, scores, the choice and why).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
from p2m.tasks.core.config import RetrievalConfig
from p2m.tasks.core.errors import BadInputError
from p2m.tasks.core.jsonreply import extract_json_object
from p2m.tasks.core.run_store import rows_to_dataset, save_dataset, write_json
from p2m.tasks.core.spec import PromptSpec
from p2m.tasks.retrieval.bm25 import SparseBM25, tokenize
from p2m.tasks.retrieval.encoders import EncoderName, get_encoder
from p2m.tasks.retrieval.index import load_dataset_index
from p2m.tasks.retrieval.registry import DatasetRecord, scan_datasets
from p2m.tasks.storage.datafiles import read_rows, text_value
from p2m.tasks.teacher.prompts import chat, json_lines, json_schema
from rapidfuzz import fuzz
from threadpoolctl import threadpool_limits

INPUT_NAMES = ["input", "inputs", "question", "text", "source", "sentence", "prompt", "query", "words", "x", "src"]
OUTPUT_NAMES = ["output", "outputs", "answer", "label", "target", "digits", "response", "completion", "y", "tgt"]
RRF_K = 60
NEAR_DUPLICATE_SCORE = 95


def query_text(spec: PromptSpec) -> str:
    demos = " ".join(f"{d.input} {d.output}" for d in spec.demonstrations[:5])
    return f"{spec.instruction} {demos}"


def fuse_rankings(score_lists: list[np.ndarray], depth: int = 100) -> np.ndarray:
    """Reciprocal rank fusion over each list's top `depth` (ranks below that add nothing useful)."""
    fused = np.zeros(len(score_lists[0]))
    for scores in score_lists:
        k = min(depth, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        fused[top[np.argsort(-scores[top], kind="stable")]] += 1.0 / (RRF_K + np.arange(1, k + 1))
    return fused


class DatasetSearcher:
    """BM25 and dense search over dataset records, built once, queried many times."""

    def __init__(
        self, records: list[DatasetRecord], embeddings: np.ndarray | None = None, encoder: EncoderName = "minilm"
    ):
        """`embeddings`: one unit row per record by `encoder` (from an index file); computed here when absent."""
        self.records = records
        self.encoder = get_encoder(encoder)
        self.bm25 = SparseBM25([tokenize(f"{r.name} {r.description} {' '.join(r.columns)}") for r in records])
        if embeddings is None and records:
            embeddings = self.encoder.encode([r.description for r in records])
        self.embeddings = embeddings

    def search(self, query: str, top_k: int) -> list[dict]:
        """Candidates best first: name, fused score, dense similarity, BM25 score."""
        if not self.records:
            return []
        lexical = self.bm25.get_scores(tokenize(query))
        query_vector = self.encoder.encode([query])[0]
        # One BLAS thread: the product is memory-bound, and idle OpenBLAS threads spin for a while
        # after a call, starving the next query's embedding of the 2 cores (p95 129 -> 39 ms at 100k).
        with threadpool_limits(1, user_api="blas"):
            dense = self.embeddings @ query_vector
        fused = fuse_rankings([lexical, dense])
        k = min(top_k, len(self.records))
        top = np.argpartition(-fused, k - 1)[:k]
        order = top[np.argsort(-fused[top], kind="stable")]
        return [
            {
                "name": self.records[i].name,
                "score": round(float(fused[i]), 5),
                "similarity": round(float(dense[i]), 4),
                "bm25": round(float(lexical[i]), 3),
            }
            for i in order
        ]


def rank_datasets(
    spec: PromptSpec,
    records: list[DatasetRecord],
    top_k: int,
    embeddings: np.ndarray | None = None,
    encoder: EncoderName = "minilm",
) -> list[dict]:
    """Candidates for `spec` best first (see DatasetSearcher.search)."""
    return DatasetSearcher(records, embeddings, encoder).search(query_text(spec), top_k)


def fit_similarity(spec: PromptSpec, record: DatasetRecord) -> float:
    """MiniLM cosine between the task and a dataset's description: the fit threshold's measure
    (calibrated once, whichever encoder ranked the candidates)."""
    query, description = get_encoder("minilm").encode([query_text(spec), record.description])
    return round(float(query @ description), 4)


def collapse_near_duplicates(ranked: list[dict], by_name: dict[str, DatasetRecord]) -> tuple[list[dict], list[dict]]:
    """(kept, dropped): of datasets with the same columns and near-identical descriptions, the most
    downloaded stays (copies and mirrors of one dataset are the users' most common complaint)."""
    kept: list[dict] = []
    dropped: list[dict] = []
    for cand in ranked:
        r = by_name[cand["name"]]
        twin = next(
            (
                k
                for k in kept
                if set(by_name[k["name"]].columns) == set(r.columns)
                and fuzz.token_set_ratio(by_name[k["name"]].description, r.description) >= NEAR_DUPLICATE_SCORE
            ),
            None,
        )
        if twin is None:
            kept.append(cand)
            continue
        keep, drop = (twin, cand) if by_name[twin["name"]].downloads >= r.downloads else (cand, twin)
        if keep is cand:
            kept[kept.index(twin)] = cand
        dropped.append({"name": drop["name"], "reason": f"near-duplicate of {keep['name']} (fewer downloads)"})
    return kept, dropped


def top_candidates(
    spec: PromptSpec,
    records: list[DatasetRecord],
    top_k: int,
    embeddings: np.ndarray | None = None,
    encoder: EncoderName = "minilm",
) -> tuple[list[dict], list[dict]]:
    """(the best `top_k` candidates after copies are collapsed, the copies dropped with reasons)."""
    by_name = {r.name: r for r in records}
    kept, dropped = collapse_near_duplicates(rank_datasets(spec, records, top_k * 2, embeddings, encoder), by_name)
    return kept[:top_k], dropped


def map_columns(columns: list[str]) -> dict | None:
    """{"input": col, "output": col} by column name, or None when no pair is recognisable."""
    lower = {c.lower(): c for c in columns}
    inp = next((lower[n] for n in INPUT_NAMES if n in lower), None)
    out = next((lower[n] for n in OUTPUT_NAMES if n in lower and lower[n] != inp), None)
    if inp is None or out is None:
        return None
    return {"input": inp, "output": out}


def rerank_by_vote(
    spec: PromptSpec, ranked: list[dict], by_name: dict[str, DatasetRecord], cfg: RetrievalConfig, llm
) -> tuple[list[dict], dict]:
    """The teacher picks the best of the top candidates, `cfg.rerank_votes` times; the majority wins.

    Returns (candidates reordered with the winner first, or emptied when the majority says none
    fits; the vote record). Ties and unparseable replies leave the fused order unchanged.
    """
    top = ranked[: cfg.rerank_candidates]
    listing = "\n".join(
        f"- {c['name']}: {by_name[c['name']].description[:300]} (columns: {', '.join(by_name[c['name']].columns)})"
        for c in top
    )
    demo = spec.demonstrations[0] if spec.demonstrations else None
    messages = chat(
        "rerank",
        instruction=spec.instruction,
        candidates=listing,
        example=json_lines([demo.model_dump()]) if demo else "(none given)",
    )
    schema = json_schema("choice", {"dataset": {"type": "string", "enum": sorted(c["name"] for c in top) + ["none"]}})
    replies = llm.complete(
        messages, temperature=0.7, max_tokens=64, n=cfg.rerank_votes, purpose="rerank", response_format=schema
    )
    names = {c["name"] for c in top} | {"none"}
    votes = [v for v in ((extract_json_object(r) or {}).get("dataset") for r in replies) if v in names]
    counts = Counter(votes).most_common()
    vote = {"votes": votes, "replies": len(replies)}
    if not counts or (len(counts) > 1 and counts[0][1] == counts[1][1]):
        return ranked, vote | {"winner": None, "note": "no majority: fused order kept"}
    winner = counts[0][0]
    vote["winner"] = winner
    if winner == "none":
        return [], vote
    return [c for c in ranked if c["name"] == winner] + [c for c in ranked if c["name"] != winner], vote


def llm_map_columns(spec: PromptSpec, record: DatasetRecord, llm) -> dict | None:
    """The teacher's column mapping for a dataset whose column names say nothing, or None."""
    rows = "\n".join(json.dumps(r, ensure_ascii=False, default=str)[:400] for r in record.sample_rows[:3])
    messages = chat("map_columns", instruction=spec.instruction, columns=", ".join(record.columns), rows=rows)
    column = {"type": ["string", "null"], "enum": list(record.columns) + [None]}
    schema = json_schema("columns", {"input": column, "output": column})
    replies = llm.complete(messages, temperature=0, max_tokens=64, purpose="map_columns", response_format=schema)
    reply = extract_json_object(replies[0]) if replies else None
    if (
        not reply
        or reply.get("input") not in record.columns
        or reply.get("output") not in record.columns
        or reply["input"] == reply["output"]
    ):
        return None
    return {"input": reply["input"], "output": reply["output"]}


def column_mapping(spec: PromptSpec, record: DatasetRecord, cfg: RetrievalConfig, llm=None) -> tuple[dict | None, str]:
    """(mapping, how it was made): explicit settings, then column names, then the teacher."""
    if cfg.input_column and cfg.output_column:
        missing = {cfg.input_column, cfg.output_column} - set(record.columns)
        return (
            (None, f"columns {sorted(missing)} not in {record.columns}")
            if missing
            else ({"input": cfg.input_column, "output": cfg.output_column}, "given")
        )
    mapping = map_columns(record.columns)
    if mapping:
        return mapping, "by column names"
    if llm is not None:
        mapping = llm_map_columns(spec, record, llm)
        if mapping:
            return mapping, "by the teacher LLM"
    return None, f"no input/output columns recognised among {record.columns}"


def unusable_reason(record: DatasetRecord) -> str | None:
    """Why a dataset cannot be used whatever its columns, or None."""
    if record.gated:
        return "gated: needs the owner's approval"
    if not record.data_files and not record.path.startswith("hub:"):
        return "no data files"
    if record.problem:
        return record.problem
    if not record.columns:
        return "data files could not be read"
    return None


def load_rows(record: DatasetRecord, mapping: dict, max_rows: int, seed: int) -> list[dict]:
    """The dataset's rows as `input`/`output` text exactly as written, shuffled, at most `max_rows`.

    Rows without an input, or without an output value, are left out. Raises DataFileError for a
    data file that cannot be read completely.
    """
    if record.path.startswith("hub:"):  # needs the network (or a mirror); a failure skips the dataset
        import datasets

        rows = [{k: text_value(v) for k, v in r.items()} for r in datasets.load_dataset(record.path[4:], split="train")]
    else:
        rows = [r for f in record.data_files for r in read_rows(Path(f))]
    pairs = [{"input": r.get(mapping["input"]), "output": r.get(mapping["output"])} for r in rows]
    pairs = [p for p in pairs if p["input"] and p["input"].strip() and p["output"] is not None]
    random.Random(seed).shuffle(pairs)
    return pairs[:max_rows]


def dataset_candidates(
    datasets_dir: Path | None, index_path: Path | None
) -> tuple[list[DatasetRecord], np.ndarray | None, EncoderName]:
    """The records to search (an index file when given, else the folders), their embeddings if
    known, and the encoder that made them (queries must use the same)."""
    if index_path:
        records, embeddings, header = load_dataset_index(index_path)
        return records, embeddings, header.get("encoder", "minilm")
    if datasets_dir and Path(datasets_dir).is_dir():
        return scan_datasets(datasets_dir), None, "minilm"
    return [], None, "minilm"


def refuse_forced(forced: str | None, reason: str) -> None:
    """Raise BadInputError when the dataset the user forced (`--dataset NAME`) cannot be used.

    A candidate found by search is passed over with its reason; one the user named is not: passing
    it over quietly ended the run later in "too few usable examples", far from the real cause.
    """
    if forced:
        raise BadInputError(
            f"--dataset {forced} cannot be used: {reason}; fix it, choose another, or pass --dataset none"
        )


def retrieve_dataset(
    spec: PromptSpec,
    cfg: RetrievalConfig,
    datasets_dir: Path | None,
    out_dir: Path,
    llm=None,
    index_path: Path | None = None,
) -> dict:
    """Choose and load a dataset for `spec` into `out_dir/retrieved`; write `out_dir/retrieval.json`.

    Candidates that are gated, unreadable, unmappable or fail to load are passed over with the
    reason; `llm` (optional) maps columns whose names say nothing. Returns the retrieval record:
    {"chosen": name or None, "reason", "rows", "columns", "candidates", "skipped"}.
    """
    records, embeddings, encoder = dataset_candidates(datasets_dir, index_path)
    by_name = {r.name: r for r in records}
    record: dict = {
        "source": str(index_path or datasets_dir or ""),
        "candidates": [],
        "skipped": [],
        "chosen": None,
        "rows": 0,
    }
    forced = cfg.dataset
    if forced and forced.lower() == "none":
        record["reason"] = "--dataset none: generated data only"
        ranked = []
    elif forced:
        if forced not in by_name:
            raise BadInputError(
                f"--dataset {forced}: no such dataset in {record['source'] or 'any source'}; "
                f"choose one of {sorted(by_name)[:20] or 'none (set --datasets-dir)'}"
            )
        ranked = [{"name": forced, "score": None, "similarity": None, "bm25": None}]
    else:
        ranked, record["skipped"] = top_candidates(spec, records, cfg.top_k, embeddings, encoder)
        record["candidates"] = ranked
        if cfg.rerank == "llm" and llm is not None and ranked:
            ranked, record["rerank"] = rerank_by_vote(spec, ranked, by_name, cfg, llm)
            if not ranked:
                record["reason"] = "the teacher's majority vote: none of the candidates fits"
    rows = None
    for cand in ranked:
        r = by_name[cand["name"]]
        similarity = cand["similarity"] if forced or encoder == "minilm" else fit_similarity(spec, r)
        if not forced and similarity < cfg.min_dataset_score:
            record["reason"] = (
                "no remaining candidate reaches the fit threshold "
                f"(best left: {r.name}, {similarity} < {cfg.min_dataset_score})"
            )
            break
        why_not = unusable_reason(r)
        mapping, how = (None, "") if why_not else column_mapping(spec, r, cfg, llm)
        if why_not or mapping is None:
            refuse_forced(forced, why_not or how)
            record["skipped"].append({"name": r.name, "reason": why_not or how})
            continue
        try:
            rows = load_rows(r, mapping, cfg.max_rows, cfg.seed)
        except Exception as e:  # malformed or unreachable data: move on, say why
            refuse_forced(forced, str(e) if isinstance(e, BadInputError) else f"{e.__class__.__name__}: {e}"[:300])
            record["skipped"].append({"name": r.name, "reason": f"failed to load: {e.__class__.__name__}: {e}"[:300]})
            continue
        record.update(
            chosen=r.name,
            columns=mapping,
            columns_mapped=how,
            rows=len(rows),
            license=r.license,
            reason="forced with --dataset"
            if forced
            else f"best fused rank with similarity {similarity} >= {cfg.min_dataset_score}",
        )
        break
    else:
        record.setdefault("reason", "no candidate datasets" if not ranked else "every candidate was unusable")
    save_dataset(rows_to_dataset(rows or []), out_dir / "retrieved")
    write_json(out_dir / "retrieval.json", record)
    return record
