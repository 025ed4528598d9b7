"""Benchmark: dataset retrieval quality, and speed at index scale.

Quality: recall@1 and recall@5 of the labelled prompts in bench/retrieval_fixture.py (200+
descriptions), for the fused retriever p2m uses with each encoder (MiniLM, static MiniLM), and
for BM25 and each dense encoder alone.
Speed at 10k and 100k synthetic descriptions: query latency (p50, p95 over 50 queries) of
rank_bm25, p2m's sparse BM25 and the full fused query (query embedding, BM25, dense dot product
over stored embeddings, rank fusion) per encoder; and the whole index build (`p2m index`:
embedding every description, writing the JSONL and the embeddings file) with the static encoder.
Full MiniLM embedding is measured on 1,000 descriptions and reported per 100k.

    python bench/retrieval.py            # about 5 minutes
"""

from __future__ import annotations

import random
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2m.tasks.core.spec import PromptSpec  # noqa: E402
from p2m.tasks.retrieval.bm25 import (
    SparseBM25,  # noqa: E402
    tokenize,  # noqa: E402
)
from p2m.tasks.retrieval.encoders import get_encoder  # noqa: E402
from p2m.tasks.retrieval.index import build_dataset_index, load_dataset_index  # noqa: E402
from p2m.tasks.retrieval.registry import DatasetRecord  # noqa: E402
from p2m.tasks.stages.retrieve_datasets import DatasetSearcher, rank_datasets  # noqa: E402

from bench.retrieval_fixture import PROMPTS, fixture_records  # noqa: E402

ENCODERS = ("minilm", "minilm-static")


def peak_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def recall_table() -> list[dict]:
    records = fixture_records()
    names = [r.name for r in records]
    bm25 = SparseBM25([tokenize(f"{r.name} {r.description}") for r in records])
    hits: dict[str, list] = {}
    for name in ENCODERS:
        encoder = get_encoder(name)
        embeddings = encoder.encode([r.description for r in records])
        for prompt, answer in PROMPTS:
            fused = [c["name"] for c in rank_datasets(PromptSpec(instruction=prompt), records, 5, embeddings, name)]
            dense = [names[i] for i in np.argsort(-(embeddings @ encoder.encode([prompt])[0]))[:5]]
            hits.setdefault(f"fused BM25 + {name}", []).append((fused[0] == answer, answer in fused))
            hits.setdefault(f"{name} alone", []).append((dense[0] == answer, answer in dense))
    for prompt, answer in PROMPTS:
        lexical = [names[i] for i in np.argsort(-bm25.get_scores(tokenize(prompt)))[:5]]
        hits.setdefault("BM25 alone", []).append((lexical[0] == answer, answer in lexical))
    return [
        {
            "retriever": k,
            "prompts": len(v),
            "descriptions": len(records),
            "recall@1": round(np.mean([a for a, _ in v]), 3),
            "recall@5": round(np.mean([b for _, b in v]), 3),
        }
        for k, v in hits.items()
    ]


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


def speed_rows(n: int, rng: random.Random, workdir: Path) -> list[dict]:
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
    records = [DatasetRecord(name=f"d{i}", path="", description=d) for i, d in enumerate(docs)]
    rows = [
        {
            "entries": n,
            "method": "rank_bm25 BM25Okapi",
            "build_s": round(reference_build, 2),
            **latency(lambda q: reference.get_scores(tokenize(q)), queries[:10]),
        },
        {
            "entries": n,
            "method": "p2m SparseBM25",
            "build_s": round(sparse_build, 2),
            **latency(lambda q: sparse_bm25.get_scores(tokenize(q)), queries),
        },
    ]
    # The whole first build of an index file with the static encoder, then a search over what it wrote.
    index = workdir / f"index-{n}" / "datasets.jsonl"
    started = time.perf_counter()
    build_dataset_index(records, index, ["synthetic"], encoder="minilm-static")
    index_build = time.perf_counter() - started
    loaded, static_embeddings, _ = load_dataset_index(index)
    started = time.perf_counter()
    searcher = DatasetSearcher(loaded, static_embeddings, "minilm-static")
    searcher_build = time.perf_counter() - started
    searcher.search("warm up", 25)
    rows.append(
        {
            "entries": n,
            "method": "p2m index build, static MiniLM (embed all + write JSONL + embeddings file)",
            "build_s": round(index_build, 1),
            "p50_ms": "-",
            "p95_ms": "-",
        }
    )
    rows.append(
        {
            "entries": n,
            "method": "p2m DatasetSearcher, static MiniLM (query embedding + BM25 + dense + fusion)",
            "build_s": round(searcher_build, 2),
            **latency(lambda q: searcher.search(q, 25), queries),
        }
    )
    # Full MiniLM: stored embeddings are random unit vectors here (latency does not depend on their values).
    embeddings = np.random.default_rng(0).standard_normal((n, 384)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    started = time.perf_counter()
    searcher = DatasetSearcher(records, embeddings, "minilm")
    searcher_build = time.perf_counter() - started
    searcher.search("warm up", 25)
    rows.append(
        {
            "entries": n,
            "method": "p2m DatasetSearcher, MiniLM (query embedding + BM25 + dense + fusion)",
            "build_s": round(searcher_build, 2),
            **latency(lambda q: searcher.search(q, 25), queries),
        }
    )
    for r in rows:
        r["peak_rss_mb"] = peak_mb()
    return rows


def latency(fn, queries) -> dict:
    p50, p95 = percentiles(fn, queries)
    return {"p50_ms": p50, "p95_ms": p95}


def embedding_row(rng: random.Random) -> dict:
    docs = synthetic_corpus(1000, rng)
    encoder = get_encoder("minilm")
    encoder.encode(docs[:32])  # warm-up
    started = time.perf_counter()
    encoder.encode(docs)
    per_doc = (time.perf_counter() - started) / len(docs)
    return {
        "entries": 100_000,
        "method": "MiniLM embeddings of every description (extrapolated from 1,000)",
        "build_s": round(per_doc * 100_000, 1),
        "p50_ms": "-",
        "p95_ms": "-",
        "peak_rss_mb": peak_mb(),
    }


def print_table(rows: list[dict]) -> None:
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    print()


def main() -> None:
    import tempfile

    rng = random.Random(0)
    started = time.perf_counter()
    get_encoder("minilm-static")  # distilled once per P2M home: reported, not counted in the builds
    print(f"static MiniLM ready in {time.perf_counter() - started:.1f} s (distilled on first use, then loaded)\n")
    print_table(recall_table())
    with tempfile.TemporaryDirectory() as workdir:
        print_table(
            speed_rows(10_000, rng, Path(workdir)) + speed_rows(100_000, rng, Path(workdir)) + [embedding_row(rng)]
        )


if __name__ == "__main__":
    main()
