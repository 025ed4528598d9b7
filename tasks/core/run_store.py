"""The run folder: every stage's artifact, written atomically, plus content hashes for cache keys.

Every artifact is written under a temporary name beside its final one and renamed into place
when it is whole (`atomic_path`, `atomic_folder`): a full disk or a kill mid-write leaves the
previous artifact (or none), never half of one that a later run would trust.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from p2m.tasks.core.errors import BadInputError, P2MError

RUN_MARKER = "run.json"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary file path beside `path` (same suffix, so writers that go by it still
    work); when the block ends without error it is renamed to `path`, otherwise removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; artifacts are as readable as any file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(folder: Path) -> Iterator[Path]:
    """Yield a new empty folder beside `folder`; when the block ends without error it replaces
    `folder` (the old one is removed), otherwise it is removed and `folder` is left as it was."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        old = None
        if folder.exists():  # a folder cannot be renamed over a non-empty one: move it aside first
            old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old-"))
            os.replace(folder, old / folder.name)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text(path: Path, text: str) -> Path:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: Path, data: Any) -> Path:
    """Write `data` as pretty JSON to `path` atomically (a crash never leaves half a file)."""
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: Path, records: list[dict]) -> Path:
    """Write `records` as JSON Lines to `path` atomically."""
    return write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records))


# What a full disk looks like once libraries have wrapped the OS error: torch's writer says "file
# write failed", safetensors "StorageFull", pyarrow and others the OS's own words without an errno.
_DISK_FULL_WORDS = ("No space left on device", "Disk quota exceeded", "StorageFull", "file write failed")


def disk_full_error(error: BaseException, folder: Path) -> P2MError | None:
    """A P2MError saying the disk holding `folder` is full, when `error` (or an error it was raised
    from) is one; None otherwise. Torch's vague "file write failed" counts only when the disk
    really is nearly full (under 100 MB free)."""
    seen: set[int] = set()
    full = False
    while error is not None and id(error) not in seen and not full:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            full = True
        elif any(words in str(error) for words in _DISK_FULL_WORDS):
            full = "file write failed" not in str(error) or _free_bytes(folder) < 100e6
        error = error.__cause__ or error.__context__
    if not full:
        return None
    return P2MError(
        f"the disk holding {folder} is full ({_free_bytes(folder) / 1e6:.1f} MB free); free some space and run "
        "the same command again: finished stages are kept, and training resumes from its last complete checkpoint"
    )


@contextmanager
def full_disk_explained(folder: Path) -> Iterator[None]:
    """Inside the block, an error that means the disk holding `folder` is full becomes a P2MError
    that says so (the CLI prints it as one line); other errors pass through unchanged."""
    try:
        yield
    except Exception as e:
        full = disk_full_error(e, folder)
        if full is None:
            raise
        raise full from e


def _free_bytes(folder: Path) -> float:
    existing = next((p for p in (Path(folder), *Path(folder).parents) if p.exists()), Path("/"))
    return shutil.disk_usage(existing).free


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


def save_dataset(dataset, folder: Path) -> Path:
    """`dataset.save_to_disk(folder)`, atomically (the whole folder appears, or the old one stays)."""
    with atomic_folder(folder) as tmp:
        dataset.save_to_disk(str(tmp))
    return Path(folder)


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


def split_rows(folder: Path, name: str) -> list[dict]:
    """Rows of split `name` ("train", "validation", "test") of the splits the process stage wrote.

    `folder` is that `splits/` folder or the run folder holding it. Only the one split is loaded
    (each is a `save_to_disk` folder of its own), so a zero-row split reads as [], as in `dataset_rows`.
    """
    folder = Path(folder)
    if not (folder / "dataset_dict.json").exists() and (folder / "splits").is_dir():
        folder = folder / "splits"
    return dataset_rows(folder / name)


def save_splits(splits: dict[str, list[dict]], folder: Path) -> dict[str, int]:
    """Save {split name: rows} as a `datasets.DatasetDict` of string columns input, output, source
    to `folder`, atomically (`save_dataset`); returns each split's size. Choosing the rows is the
    caller's (`p2m.tasks.stages.process.make_splits`, the nightly loop's `write_round_splits`)."""
    import datasets

    columns = ("input", "output", "source")
    dataset = datasets.DatasetDict({name: rows_to_dataset(rows, columns) for name, rows in splits.items()})
    save_dataset(dataset, folder)
    return {name: len(ds) for name, ds in dataset.items()}


def artifact_ref(path: Path, exclude: tuple[str, ...] = ()) -> dict:
    """What a stage hands the next one: where an artifact is and a hash of what it holds."""
    return {"path": str(path), "hash": content_hash(path, exclude)}
