import random

import numpy as np
from p2m.tasks.retrieval.bm25 import SparseBM25
from rank_bm25 import BM25Okapi


def test_scores_equal_rank_bm25():
    rng = random.Random(1)
    vocab = [f"w{i}" for i in range(60)] + ["the"] * 30  # "the" is in most documents: negative idf floor
    corpus = [[rng.choice(vocab) for _ in range(rng.randrange(3, 30))] for _ in range(200)]
    ours, reference = SparseBM25(corpus), BM25Okapi(corpus)
    for _ in range(20):
        query = [rng.choice(vocab) for _ in range(rng.randrange(1, 8))] + ["unknown-term"]
        np.testing.assert_allclose(ours.get_scores(query), reference.get_scores(query), rtol=1e-9, atol=1e-12)


def test_empty_query_and_top_n():
    bm = SparseBM25([["numbers", "digits"], ["movie", "review"], ["weather", "report"]])
    assert bm.get_scores(["nothing"]).tolist() == [0.0, 0.0, 0.0]
    assert bm.get_top_n(["movie"], ["a", "b", "c"], n=1) == ["b"]
