"""Run folders and Prefect results on S3 (or any S3-compatible store), when configured.

Stages work in a local run folder (datasets, transformers and Gradio all want local paths); with
P2M_STORAGE_URL=s3://bucket/prefix the folder is mirrored there after every stage and pulled back
when a run starts on a machine that lacks it, and Prefect's results (the cache records that let a
re-run skip finished stages) are written under the same prefix through a saved RemoteFileSystem
block. So a retry picked up by a worker on another machine finds both the artifacts and the
cache. Credentials and endpoint come from the usual AWS variables (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL for MinIO or another S3-compatible store).
"""

from __future__ import annotations

import os
from pathlib import Path

# Training checkpoints (model + optimizer state, GBs) stay local: the model itself is mirrored.
NOT_MIRRORED = ("checkpoints",)
RESULTS_BLOCK = "p2m-results"


def filesystem():
    """An s3fs filesystem configured from the environment."""
    import s3fs

    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    return s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint} if endpoint else {})


def run_url(storage_url: str, run_dir: Path) -> str:
    return f"{storage_url.rstrip('/')}/runs/{Path(run_dir).name}"


def push(run_dir: Path, storage_url: str) -> int:
    """Upload the files of `run_dir` that are new or changed (by size); returns how many."""
    fs = filesystem()
    remote = run_url(storage_url, run_dir)
    existing = {p: info["size"] for p, info in fs.find(remote, detail=True).items()} if fs.exists(remote) else {}
    sent = 0
    for path in sorted(Path(run_dir).rglob("*")):
        rel = path.relative_to(run_dir)
        if not path.is_file() or rel.parts[0] in NOT_MIRRORED:
            continue
        key = f"{remote}/{rel.as_posix()}"
        if existing.get(key.removeprefix("s3://")) != path.stat().st_size:
            fs.put_file(str(path), key)
            sent += 1
    return sent


def pull(run_dir: Path, storage_url: str) -> bool:
    """Download the run folder from storage when it is not here; returns whether it did."""
    if Path(run_dir).exists() and any(Path(run_dir).iterdir()):
        return False
    fs = filesystem()
    remote = run_url(storage_url, run_dir)
    if not fs.exists(remote):
        return False
    fs.get(remote + "/", str(run_dir) + "/", recursive=True)
    return True


def results_storage(storage_url: str):
    """A saved RemoteFileSystem block for Prefect results under STORAGE_URL/prefect-results."""
    from prefect.filesystems import RemoteFileSystem

    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    block = RemoteFileSystem(basepath=f"{storage_url.rstrip('/')}/prefect-results",
                             settings={"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {})
    block.save(RESULTS_BLOCK, overwrite=True)
    return block
