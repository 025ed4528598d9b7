"""BM25 (Okapi) with rank_bm25's interface and scores, on a sparse matrix.

`rank_bm25.BM25Okapi.get_scores` walks every document in Python for every query term: about
550 ms per 12-term query at 100k documents on 2 cores (bench/README.md), too slow for retrieval
over a Hub-sized index. This class precomputes each (document, term) weight once into a CSR
matrix, so a query is one sparse column slice and a dot product (milliseconds), and returns the
same scores as `BM25Okapi` (same k1, b, epsilon and idf floor; tested against it).
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
from scipy import sparse


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens: what BM25 counts, for documents and queries alike."""
    return re.findall(r"\w+", text.lower())


class SparseBM25:
    def __init__(self, corpus: list[list[str]], k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25):
        """`corpus`: tokenised documents, as BM25Okapi takes them."""
        self.vocab: dict[str, int] = {}
        rows, cols, tfs = [], [], []
        lengths = np.zeros(len(corpus), dtype=np.float64)
        for d, doc in enumerate(corpus):
            lengths[d] = len(doc)
            for term, tf in Counter(doc).items():
                rows.append(d)
                cols.append(self.vocab.setdefault(term, len(self.vocab)))
                tfs.append(tf)
        n_docs = len(corpus)
        avgdl = lengths.mean() if n_docs else 0.0
        rows_a, tf_a = np.asarray(rows), np.asarray(tfs, dtype=np.float64)
        norm = k1 * (1 - b + b * lengths[rows_a] / avgdl) if n_docs else tf_a
        weights = tf_a * (k1 + 1) / (tf_a + norm)
        self.matrix = sparse.csc_matrix((weights, (rows_a, np.asarray(cols))), shape=(n_docs, len(self.vocab)))
        doc_freq = np.bincount(np.asarray(cols, dtype=np.int64), minlength=len(self.vocab)).astype(np.float64)
        idf = np.log(n_docs - doc_freq + 0.5) - np.log(doc_freq + 0.5)
        # rank_bm25's floor: negative idfs (terms in over half the documents) become eps x mean idf.
        average_idf = idf.mean() if len(idf) else 0.0
        self.idf = np.where(idf < 0, epsilon * average_idf, idf)
        self.corpus_size = n_docs

    def get_scores(self, query: list[str]) -> np.ndarray:
        """BM25 score of every document for the tokenised `query` (repeated terms count again)."""
        counts = Counter(t for t in query if t in self.vocab)
        if not counts:
            return np.zeros(self.corpus_size)
        ids = np.fromiter((self.vocab[t] for t in counts), dtype=np.int64)
        weights = self.idf[ids] * np.fromiter(counts.values(), dtype=np.float64)
        return np.asarray(self.matrix[:, ids] @ weights).ravel()

    def get_top_n(self, query: list[str], documents: list, n: int = 5) -> list:
        scores = self.get_scores(query)
        return [documents[i] for i in np.argsort(-scores)[:n]]
