"""Stage, retrieve model: pick the pretrained student to fine-tune.

The paper's method: HyDE (the teacher writes a hypothetical model card for the task; that card is
the query), BM25 over model descriptions, score times log(downloads), models over the size cap
left out. Only architectures the trainer supports are candidates; test-only models (random tiny
ones) only when forced with `--model`. Output: `model_choice.json` saying why the winner won.
"""

from __future__ import annotations

import math
from pathlib import Path

from p2m.tasks.core.config import StudentConfig
from p2m.tasks.core.errors import BadInputError
from p2m.tasks.core.run_store import write_json
from p2m.tasks.core.spec import PromptSpec
from p2m.tasks.retrieval.bm25 import SparseBM25, tokenize
from p2m.tasks.retrieval.index import load_model_index
from p2m.tasks.retrieval.registry import ModelRecord, scan_models, unknown_model_error
from p2m.tasks.teacher.prompts import chat


def hypothetical_card(spec: PromptSpec, llm) -> str:
    """The teacher's hypothetical model card for the task ("" without a teacher)."""
    if llm is None:
        return ""
    replies = llm.complete(chat("hyde", instruction=spec.instruction), temperature=0, max_tokens=160, purpose="hyde")
    return replies[0] if replies else ""


def rank_models(query: str, records: list[ModelRecord]) -> list[dict]:
    """Candidates best first, scored BM25 x log(downloads + e) (ties broken by smaller size)."""
    if not records:
        return []
    bm25 = SparseBM25([tokenize(f"{r.name} {r.description}") for r in records])
    # A floor of 1 keeps a model with no word overlap rankable by popularity alone.
    lexical = bm25.get_scores(tokenize(query))
    scored = [
        {
            "name": r.name,
            "score": round((1.0 + float(s)) * math.log(r.downloads + math.e), 4),
            "bm25": round(float(s), 4),
            "downloads": r.downloads,
            "size_mb": round(r.size_bytes / 1e6, 1),
            "architecture": r.architecture,
        }
        for r, s in zip(records, lexical, strict=True)
    ]
    return sorted(scored, key=lambda c: (-c["score"], c["size_mb"]))


def model_candidates(models_dir: Path | None, index_path: Path | None = None) -> list[ModelRecord]:
    """The embedded models, the folders under `models_dir`, and the models of an index file."""
    records = scan_models(models_dir)
    if index_path:
        known = {r.name for r in records}
        records += [r for r in load_model_index(index_path)[0] if r.name not in known]
    return records


def model_pool(records: list, cfg: StudentConfig, kind: str = "generation") -> list:
    """The models a student may be chosen from: not test-only, under the size cap, and fit for the
    task's `kind`: for classification only encoder classifiers (a closed label set: they answer
    nothing but a label; a decoder answered labels outside the set on a real intent task), for
    the other kinds only generative models."""
    return [
        r
        for r in records
        if not r.test_only
        and r.size_bytes <= cfg.model_size_cap_gb * 1e9
        and (r.architecture == "encoder-classifier") == (kind == "classification")
    ]


def choose_model(
    spec: PromptSpec,
    cfg: StudentConfig,
    models_dir: Path | None,
    out_dir: Path,
    llm=None,
    index_path: Path | None = None,
) -> dict:
    """Choose the student; write `out_dir/model_choice.json`; return that record."""
    records = model_candidates(models_dir, index_path)
    by_name = {r.name: r for r in records}
    if cfg.model:
        if cfg.model not in by_name:
            raise unknown_model_error(cfg.model, list(by_name), models_dir)
        chosen, reason, ranked, card = by_name[cfg.model], "forced with --model", [], ""
        if chosen.architecture == "encoder-classifier" and spec.kind != "classification":
            raise BadInputError(
                f"--model {cfg.model} is a classifier: it can only answer with a label, and this task is "
                f"{spec.kind} ({spec.kind_reason}); choose a generative model, or pass --labels if it is a label task"
            )
    else:
        classification = spec.kind == "classification"
        pool = model_pool(records, cfg, spec.kind)
        if not pool:
            raise BadInputError(
                f"no model under {cfg.model_size_cap_gb} GB is available; "
                "raise P2M_STUDENT__MODEL_SIZE_CAP_GB or add models"
            )
        card = hypothetical_card(spec, llm)
        ranked = rank_models(f"{spec.instruction} {card}", pool)
        chosen = by_name[ranked[0]["name"]]
        reason = (
            f"highest BM25 x log(downloads) score ({ranked[0]['score']}) of {len(pool)} "
            f"{'classifier ' if classification else ''}models under {cfg.model_size_cap_gb} GB"
        )
        if classification:
            reason = (
                f"a {spec.kind} task ({len(spec.labels)} labels): an encoder with a classification head answers "
                f"only with a label, in milliseconds; {reason}"
            )
    record = {
        "name": chosen.name,
        "path": chosen.path,
        "architecture": chosen.architecture,
        "model_type": chosen.model_type,
        "num_parameters": chosen.num_parameters,
        "size_mb": round(chosen.size_bytes / 1e6, 1),
        "license": chosen.license,
        "reason": reason,
        "hypothetical_card": card,
        "candidates": ranked,
    }
    if spec.kind == "classification":
        record["labels"] = spec.labels
    write_json(out_dir / "model_choice.json", record)
    return record
