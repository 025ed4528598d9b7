"""Sentence encoders for dense dataset retrieval, by name.

- `minilm`: all-MiniLM-L6-v2 through sentence-transformers (384 dimensions). The better of the two
  (recall@1 1.0 vs 0.97 on bench/retrieval_fixture.py, fused with BM25) but about 10-35 ms per
  description on 2 cores: an hour for a first build of 100k Hub descriptions.
- `minilm-static`: the same MiniLM distilled into static token embeddings by model2vec (a token's
  vector is looked up, not computed; 256 dimensions): 100k descriptions in about 20 s. The default
  for index files (`p2m index`), where the count can be Hub-sized.

Both return unit-length float32 rows, so a dot product is the cosine similarity. An index file
records which encoder embedded it; queries against it use the same one.
"""

from __future__ import annotations

from functools import cache
from typing import Literal

import numpy as np
from p2m.tasks.core.config import Settings
from p2m.tasks.storage.embedded import minilm_path, static_minilm_path

EncoderName = Literal["minilm", "minilm-static"]
MAX_CHARS = 2000  # descriptions are cut here: the start says what a dataset is


class MiniLMEncoder:
    def __init__(self):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(minilm_path()), device="cpu")

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit rows (n, 384), float32."""
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return self.model.encode([t[:MAX_CHARS] for t in texts], batch_size=128, normalize_embeddings=True).astype(
            np.float32
        )


class StaticMiniLMEncoder:
    def __init__(self):
        from model2vec import StaticModel

        self.model = StaticModel.from_pretrained(str(static_minilm_path(Settings().home)))

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit rows (n, 256), float32 (texts without a known token give zero rows)."""
        if not texts:
            return np.zeros((0, 256), dtype=np.float32)
        vectors = (
            self.model.encode([t[:MAX_CHARS] for t in texts], batch_size=1024)
            .astype(np.float32)
            .reshape(len(texts), -1)
        )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)


@cache
def get_encoder(name: EncoderName = "minilm") -> MiniLMEncoder | StaticMiniLMEncoder:
    """The encoder called `name`, loaded once per process."""
    encoders = {"minilm": MiniLMEncoder, "minilm-static": StaticMiniLMEncoder}
    if name not in encoders:
        raise ValueError(f"unknown encoder {name!r}; choose one of {sorted(encoders)}")
    return encoders[name]()
