"""Rebuild the retrieval indexes (the flow a nightly deployment runs).

Writes `datasets.jsonl` and `models.jsonl` under `out_dir` from local folders and, with
`hub_limit > 0`, from the Hugging Face Hub API. Unchanged dataset descriptions keep their
embeddings, so a nightly refresh embeds only what is new.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from tasks.index import refresh_indexes


@task(retries=2, retry_delay_seconds=30)
def refresh_indexes_task(out_dir: str, datasets_dir: str | None, models_dir: str | None, hub_limit: int) -> dict:
    return refresh_indexes(Path(out_dir), Path(datasets_dir) if datasets_dir else None, Path(models_dir) if models_dir else None, hub_limit)


@flow(name="p2m-index-refresh")
def index_refresh_flow(out_dir: str, datasets_dir: str | None = None, models_dir: str | None = None, hub_limit: int = 0) -> dict:
    """Rebuild the indexes; returns counts (entries, newly embedded, reused)."""
    return refresh_indexes_task(out_dir, datasets_dir, models_dir, hub_limit)
