"""The run folder: every stage's artifact, written atomically, plus content hashes for cache keys."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from p2m.tasks.core.errors import BadInputError

RUN_MARKER = "run.json"


def write_json(path: Path, data: Any) -> Path:
    """Write `data` as pretty JSON to `path` atomically (a crash never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False, default=str)
        f.write("\n")
    os.replace(tmp, path)
    return path


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON line and flush it to disk, so a kill -9 loses at most the line being written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict]:
    """Every complete JSON line of `path`; a torn last line (from a crash) is skipped."""
    records = []
    if not Path(path).exists():
        return records
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def content_hash(path: Path, exclude: tuple[str, ...] = ()) -> str:
    """sha256 over a file, or over every file in a folder (names and bytes), for cache keys.

    `exclude` names files left out (a model's README.md card, which evaluation rewrites). The
    `cache-*.arrow` files that `datasets` writes beside a saved dataset when it is mapped are
    always left out: they are derived, not content.
    """
    path = Path(path)
    h = hashlib.sha256()
    files = (
        [path]
        if path.is_file()
        else sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and p.name not in exclude and not fnmatch.fnmatch(p.name, "cache-*.arrow")
        )
    )
    for p in files:
        h.update(str(p.relative_to(path) if p != path else p.name).encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def check_run_dir(run_dir: Path, prompt_hash: str) -> bool:
    """Whether `run_dir` is already this prompt's run folder (False: it is free to claim).

    `prompt_hash` is the prompt's identity (`p2m.tasks.stages.parse.prompt_identity`). Raises BadInputError
    when the folder holds another prompt's run or other files, is a file, or cannot be written.
    Writes nothing.
    """
    run_dir = Path(run_dir)
    marker = run_dir / RUN_MARKER
    if run_dir.exists() and not run_dir.is_dir():
        raise BadInputError(f"--out {run_dir} is a file, not a folder; pass a folder for the run")
    if marker.exists():
        owner = read_json(marker)
        # Run folders made before prompt hashes were recorded carry the spec's hash (equal for YAML prompts).
        if owner.get("prompt_hash", owner.get("spec_hash")) != prompt_hash:
            raise BadInputError(
                f"{run_dir} holds the run of another prompt ({owner.get('prompt_file')}); "
                "pass another --out, or delete that folder to start over"
            )
        return True
    if run_dir.exists() and any(run_dir.iterdir()):
        raise BadInputError(f"{run_dir} is not empty and is not a p2m run folder; pass another --out")
    check_writable_folder(run_dir, "the run folder")
    return False


def check_writable_folder(folder: Path, what: str) -> None:
    """Raise BadInputError unless `folder` is (or can be created as) a folder this user can write to."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise BadInputError(f"--out {folder} is a file, not a folder; pass a folder for {what}")
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise BadInputError(
            f"cannot create {what} {folder}: {existing} is not a folder you can write to; pass another --out"
        )


def claim_run_dir(run_dir: Path, prompt_hash: str, prompt_file: str) -> None:
    """Make `run_dir` this prompt's run folder, before anything is written into it.

    Raises BadInputError, having written nothing, where `check_run_dir` does.
    """
    if check_run_dir(run_dir, prompt_hash):
        return
    try:
        write_json(Path(run_dir) / RUN_MARKER, {"prompt_hash": prompt_hash, "prompt_file": prompt_file})
    except OSError as e:
        raise BadInputError(
            f"cannot write the run folder {run_dir} ({e.strerror or e}); pass an --out you can write to"
        ) from None


def rows_to_dataset(rows: list[dict], columns: tuple[str, ...] = ("input", "output")):
    """A `datasets.Dataset` of string columns from rows (works for zero rows, unlike from_list)."""
    import datasets

    features = datasets.Features({c: datasets.Value("string") for c in columns})
    return datasets.Dataset.from_dict({c: [str(r[c]) for r in rows] for c in columns}, features=features)


def dataset_rows(folder: Path) -> list[dict]:
    """Rows of a folder written by `save_to_disk` (datasets 5 cannot load back a zero-row one: [])."""
    import datasets

    try:
        return [dict(r) for r in datasets.load_from_disk(str(folder))]
    except IndexError:  # no arrow shards were written for zero rows
        return []


def artifact_ref(path: Path, exclude: tuple[str, ...] = ()) -> dict:
    """What a stage hands the next one: where an artifact is and a hash of what it holds."""
    return {"path": str(path), "hash": content_hash(path, exclude)}
