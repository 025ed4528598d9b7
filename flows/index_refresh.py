"""Rebuild the retrieval indexes (the flow a nightly deployment runs).

Writes `datasets.jsonl` and `models.jsonl` under `out_dir` from local folders and, with
`hub_limit > 0`, from the Hugging Face Hub API. Unchanged dataset descriptions keep their
embeddings, so a nightly refresh embeds only what is new.
"""

from __future__ import annotations

from pathlib import Path

from p2m.tasks.retrieval.encoders import EncoderName
from p2m.tasks.retrieval.index import refresh_indexes
from prefect import flow, task


@task(retries=2, retry_delay_seconds=30)
def refresh_indexes_task(
    out_dir: str, datasets_dir: str | None, models_dir: str | None, hub_limit: int, encoder: EncoderName
) -> dict:
    return refresh_indexes(
        Path(out_dir),
        Path(datasets_dir) if datasets_dir else None,
        Path(models_dir) if models_dir else None,
        hub_limit,
        encoder=encoder,
    )


@flow(name="p2m-index-refresh")
def index_refresh_flow(
    out_dir: str,
    datasets_dir: str | None = None,
    models_dir: str | None = None,
    hub_limit: int = 0,
    encoder: EncoderName = "minilm-static",
) -> dict:
    """Rebuild the indexes; returns counts (entries, newly embedded, reused).

    Args:
        out_dir: Folder for datasets.jsonl, models.jsonl and the embeddings file.
        datasets_dir: Local dataset folders to index.
        models_dir: Local model folders to index.
        hub_limit: Also index the N most downloaded Hub datasets and models (needs a network).
        encoder: 'minilm-static' (fast: 100k descriptions in about 20 s) or 'minilm' (best recall, about an hour per 100k).
    """  # noqa: E501 - Prefect shows each Args line as one parameter description; wrapping would add newlines
    return refresh_indexes_task(out_dir, datasets_dir, models_dir, hub_limit, encoder)
