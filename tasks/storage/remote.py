"""Run folders and Prefect results on S3 (or any S3-compatible store), when configured.

Stages work in a local run folder (datasets, transformers and Gradio all want local paths); with
P2M_STORAGE_URL=s3://bucket/prefix the folder is mirrored there after every stage and pulled back
when a run starts on a machine that lacks it, and Prefect's results (the cache records that let a
re-run skip finished stages) are written under the same prefix through a saved RemoteFileSystem
block. So a retry picked up by a worker on another machine finds both the artifacts and the
cache. Credentials and endpoint come from the usual AWS variables (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL for MinIO or another S3-compatible store). The folder
functions take any fsspec URL (`filesystem_for`): a run folder given as a URL is mirrored the
same way (`p2m.tasks.storage.locations`).
"""

from __future__ import annotations

import os
from pathlib import Path

from p2m.tasks.core.errors import P2MError

# Training checkpoints (model + optimizer state, GBs) stay local: the model itself is mirrored.
NOT_MIRRORED = ("checkpoints",)
RESULTS_BLOCK = "p2m-results"


def filesystem():
    """An s3fs filesystem configured from the environment."""
    import s3fs

    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    return s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint} if endpoint else {})


def filesystem_for(url: str):
    """(filesystem, path inside it) for any fsspec URL: s3:// as `filesystem` configures it, others as fsspec does.

    Raises P2MError for a scheme fsspec does not know or whose package is not installed.
    """
    import fsspec

    if url.startswith(("s3://", "s3a://")):
        fs = filesystem()
        return fs, fs._strip_protocol(url)
    try:
        return fsspec.core.url_to_fs(url)
    except (ValueError, ImportError) as e:
        raise P2MError(
            f"cannot open {url} ({e}); use an s3:// URL, a local path, or install the fsspec package for that scheme"
        ) from None


def run_url(storage_url: str, run_dir: Path) -> str:
    return f"{storage_url.rstrip('/')}/runs/{Path(run_dir).name}"


def push_folder(run_dir: Path, remote: str) -> int:
    """Upload the files of `run_dir` that are new or changed (by size) to the folder URL `remote`; returns how many."""
    from fsspec.implementations.local import LocalFileSystem

    fs, root = filesystem_for(remote)
    fs.invalidate_cache(root)  # a listing cached by an earlier call would hide what another machine wrote
    existing = {p: info["size"] for p, info in fs.find(root, detail=True).items()} if fs.exists(root) else {}
    sent = 0
    for path in sorted(Path(run_dir).rglob("*")):
        rel = path.relative_to(run_dir)
        if not path.is_file() or rel.parts[0] in NOT_MIRRORED:
            continue
        key = f"{root}/{rel.as_posix()}"
        if existing.get(key) != path.stat().st_size:
            if isinstance(
                fs, LocalFileSystem
            ):  # object stores have no folders (and s3fs would create a missing bucket)
                fs.makedirs(key.rsplit("/", 1)[0], exist_ok=True)
            fs.put_file(str(path), key)
            sent += 1
    return sent


def pull_folder(run_dir: Path, remote: str, changed: bool = False) -> bool:
    """Download the folder URL `remote` into `run_dir` when `run_dir` is missing or empty; returns whether it did.

    `changed=True`: also into a folder that exists, the files that are new or changed (by size),
    as after another machine worked on the run.
    """
    if not changed and Path(run_dir).exists() and any(Path(run_dir).iterdir()):
        return False
    fs, root = filesystem_for(remote)
    fs.invalidate_cache(root)
    if not fs.exists(root):
        return False
    got = False
    for key, info in fs.find(root, detail=True).items():
        local = Path(run_dir) / key[len(root) :].lstrip("/")
        if not local.exists() or local.stat().st_size != info["size"]:
            local.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(key, str(local))
            got = True
    return got
