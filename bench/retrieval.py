"""Benchmark: dataset retrieval quality, and speed at index scale.

Quality: recall@1 and recall@5 of the labelled prompts in bench/retrieval_fixture.py (200+
descriptions), for the fused retriever p2m uses and for each of its halves alone.
Speed: index build time and query latency (p50, p95 over 50 queries) at 10k and 100k synthetic
descriptions, rank_bm25 beside p2m's sparse BM25 and the full fused query (query embedding,
BM25, dense dot product over stored embeddings, rank fusion). Embedding descriptions is measured
on 1,000 and reported per 100k: a refresh embeds only new or changed entries (tasks/index.py).

    python bench/retrieval.py            # about 3 minutes
"""

from __future__ import annotations

import random
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.retrieval_fixture import PROMPTS, fixture_records  # noqa: E402
from tasks.bm25 import SparseBM25  # noqa: E402
from tasks.parse import PromptSpec  # noqa: E402
from tasks.registry import DatasetRecord  # noqa: E402
from tasks.retrieve_datasets import DatasetSearcher, rank_datasets, sentence_encoder, tokenize  # noqa: E402


def peak_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def recall_table() -> list[dict]:
    records = fixture_records()
    names = [r.name for r in records]
    encoder = sentence_encoder()
    embeddings = encoder.encode([r.description for r in records], normalize_embeddings=True)
    bm25 = SparseBM25([tokenize(f"{r.name} {r.description}") for r in records])
    hits = {"fused (p2m)": [], "BM25 alone": [], "dense alone": []}
    for prompt, answer in PROMPTS:
        fused = [c["name"] for c in rank_datasets(PromptSpec(instruction=prompt), records, 5, embeddings)]
        lexical = [names[i] for i in np.argsort(-bm25.get_scores(tokenize(prompt)))[:5]]
        dense = [names[i] for i in np.argsort(-(embeddings @ encoder.encode([prompt], normalize_embeddings=True)[0]))[:5]]
        for key, top in (("fused (p2m)", fused), ("BM25 alone", lexical), ("dense alone", dense)):
            hits[key].append((top[0] == answer, answer in top))
    return [{"retriever": k, "prompts": len(v), "descriptions": len(records), "recall@1": round(np.mean([a for a, _ in v]), 3),
             "recall@5": round(np.mean([b for _, b in v]), 3)} for k, v in hits.items()]


def synthetic_corpus(n: int, rng: random.Random) -> list[str]:
    words = [w for r in fixture_records() for w in tokenize(r.description)] + [f"term{i}" for i in range(20_000)]
    return [" ".join(rng.choice(words) for _ in range(rng.randrange(15, 60))) for _ in range(n)]


def percentiles(fn, queries) -> tuple[float, float]:
    times = []
    for q in queries:
        started = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - started) * 1000)
    return round(float(np.percentile(times, 50)), 1), round(float(np.percentile(times, 95)), 1)


def speed_rows(n: int, rng: random.Random) -> list[dict]:
    from rank_bm25 import BM25Okapi

    docs = synthetic_corpus(n, rng)
    queries = [" ".join(rng.choice(d.split()) for _ in range(12)) for d in rng.sample(docs, 50)]
    tokenized = [tokenize(d) for d in docs]
    started = time.perf_counter()
    sparse_bm25 = SparseBM25(tokenized)
    sparse_build = time.perf_counter() - started
    started = time.perf_counter()
    reference = BM25Okapi(tokenized)
    reference_build = time.perf_counter() - started
    # Stored embeddings (random unit vectors: latency does not depend on their values).
    embeddings = np.random.default_rng(0).standard_normal((n, 384)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    records = [DatasetRecord(name=f"d{i}", path="", description=d) for i, d in enumerate(docs)]
    started = time.perf_counter()
    searcher = DatasetSearcher(records, embeddings)
    searcher_build = time.perf_counter() - started
    searcher.search("warm up", 25)

    rows = [
        {"entries": n, "method": "rank_bm25 BM25Okapi", "build_s": round(reference_build, 2), **dict(zip(("p50_ms", "p95_ms"), percentiles(lambda q: reference.get_scores(tokenize(q)), queries[:10])))},
        {"entries": n, "method": "p2m SparseBM25", "build_s": round(sparse_build, 2), **dict(zip(("p50_ms", "p95_ms"), percentiles(lambda q: sparse_bm25.get_scores(tokenize(q)), queries)))},
        {"entries": n, "method": "p2m DatasetSearcher (query embedding + BM25 + dense + fusion)", "build_s": round(searcher_build, 2),
         **dict(zip(("p50_ms", "p95_ms"), percentiles(lambda q: searcher.search(q, 25), queries)))},
    ]
    for r in rows:
        r["peak_rss_mb"] = peak_mb()
    return rows


def embedding_row(rng: random.Random) -> dict:
    docs = synthetic_corpus(1000, rng)
    encoder = sentence_encoder()
    encoder.encode(docs[:32])  # warm-up
    started = time.perf_counter()
    encoder.encode(docs, batch_size=128, normalize_embeddings=True)
    per_doc = (time.perf_counter() - started) / len(docs)
    return {"entries": 100_000, "method": "MiniLM embeddings (extrapolated from 1,000)", "build_s": round(per_doc * 100_000, 1),
            "p50_ms": "-", "p95_ms": "-", "peak_rss_mb": peak_mb()}


def print_table(rows: list[dict]) -> None:
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    print()


def main() -> None:
    rng = random.Random(0)
    print_table(recall_table())
    print_table(speed_rows(10_000, rng) + speed_rows(100_000, rng) + [embedding_row(rng)])


if __name__ == "__main__":
    main()
