"""Where a run reads its inputs and keeps its folder: local paths, or URLs fsspec opens (s3://...).

Stages read local files (datasets, transformers and Gradio want paths), so:
- an input given as a URL (a prompt file, a test set, a folder of datasets or models) is read
  from the store; files and folders are fetched into P2M_HOME/fetched/, one folder per URL. A
  later fetch downloads only what changed (by ETag or modification time), so an unchanged input
  keeps its files, fingerprints and content hashes, and the stages that read it stay cached;
- a run folder given as a URL is worked on in P2M_HOME/remote-runs/ and mirrored to the URL
  after every stage (`p2m.tasks.storage.remote`); a machine that lacks it pulls it first;
- with no run folder given, the folder is named from the prompt (its first words and its
  identity) under P2M_RUNS_ROOT: the same prompt pasted again continues its own run.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from p2m.tasks.core.errors import BadInputError, P2MError
from p2m.tasks.core.run_store import RUN_MARKER, read_json, write_json
from p2m.tasks.core.spec import PromptFile, prompt_identity
from p2m.tasks.storage.remote import filesystem_for, pull_folder, run_url

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Settings that name a file or folder p2m reads, as (section, field) paths into the overrides.
INPUT_SETTINGS = (
    ("datasets_dir",),
    ("models_dir",),
    ("datasets_index",),
    ("models_index",),
    ("evaluation", "eval_data"),
    ("generation", "inputs"),
)


def is_url(text) -> bool:
    """Whether `text` is a URL for fsspec (s3://..., gs://..., memory://...); file:// counts as a local path."""
    return isinstance(text, str) and bool(_SCHEME.match(text)) and not text.startswith("file://")


def local_path(text: str) -> Path:
    """A local path from a path or a file:// URL."""
    return Path(text.removeprefix("file://")).expanduser()


def _store_error(what: str, url: str, error: Exception) -> P2MError:
    if isinstance(error, FileNotFoundError):
        return BadInputError(f"{what} {url} does not exist; check the URL")
    return P2MError(
        f"cannot read {what} {url} ({error.__class__.__name__}: {str(error)[:200]}); check the URL and the "
        "worker's credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL for S3)"
    )


def _folder_for(home: Path, kind: str, url: str) -> Path:
    """P2M_HOME/KIND/HASH-NAME: one local folder per URL, named so a person can tell which."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", url.rstrip("/").rsplit("/", 1)[-1])[:60] or "root"
    return Path(home) / kind / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{name}"


def _stamp(info: dict) -> str:
    """What tells a changed remote file from an unchanged one: size and ETag (or modification time)."""
    version = info.get("ETag") or info.get("LastModified") or info.get("mtime") or info.get("created") or ""
    return f"{info.get('size')}:{version}"


def read_url_bytes(url: str, what: str, check_size=None) -> bytes:
    """The bytes of the file at `url`; `what` names it in errors ("prompt file").

    `check_size(size)` is called before reading (it raises for a file too large to load).
    Raises BadInputError when nothing (or a folder) is there, P2MError when the store cannot be read.
    """
    fs, path = filesystem_for(url)
    try:
        fs.invalidate_cache(path)
        info = fs.info(path)
        if info["type"] != "file":
            raise BadInputError(f"{what} {url} is a folder; give the URL of a file")
        if check_size is not None:
            check_size(info["size"])
        return fs.cat_file(path)
    except P2MError:
        raise
    except Exception as e:  # s3fs and botocore raise many types for one cause
        raise _store_error(what, url, e) from None


def fetch(url: str, home: Path, what: str) -> Path:
    """The local copy of the file or folder at `url`, brought up to date; returns its path.

    Only files that are new or changed since the last fetch are downloaded (each atomically);
    files gone from the store are removed. `what` names the input in errors. Raises
    BadInputError when nothing is at the URL, P2MError when the store cannot be read.
    """
    fs, root = filesystem_for(url)
    root = root.rstrip("/")
    try:
        fs.invalidate_cache(root)
        info = fs.info(root)
        remote = {root: info} if info["type"] == "file" else fs.find(root, detail=True)
    except Exception as e:
        raise _store_error(what, url, e) from None
    folder = _folder_for(home, "fetched", url)
    name = root.rsplit("/", 1)[-1] or "root"
    manifest_path = folder / ".p2m-fetched.json"  # what each local file was fetched as
    before = read_json(manifest_path) if manifest_path.exists() else {}
    after = {}
    for key, file_info in remote.items():
        if file_info.get("type") == "directory":
            continue
        rel = name if info["type"] == "file" else f"{name}/{key[len(root) :].lstrip('/')}"
        local = folder / rel
        stamp = _stamp(file_info)
        if before.get(rel) != stamp or not local.exists():
            local.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=local.parent, prefix=f".{local.name}.")
            os.close(fd)
            try:
                fs.get_file(key, tmp)
            except Exception as e:
                Path(tmp).unlink(missing_ok=True)
                raise _store_error(what, url, e) from None
            os.replace(tmp, local)
        after[rel] = stamp
    for gone in set(before) - set(after):
        (folder / gone).unlink(missing_ok=True)
    if info["type"] != "file":
        (folder / name).mkdir(parents=True, exist_ok=True)  # an empty folder is still a folder
    write_json(manifest_path, after)
    return folder / name


def fetch_inputs(overrides: dict, home: Path) -> tuple[dict, dict[str, str]]:
    """`overrides` with every input given as a URL replaced by its local copy.

    Returns (the new overrides, {local path: URL}) — the second turns messages about the local
    copies back into the URLs the person gave (`in_user_terms`).
    """
    fetched: dict[str, str] = {}
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in (overrides or {}).items()}
    for keys in INPUT_SETTINGS:
        holder = merged
        for key in keys[:-1]:
            holder = holder.get(key) if isinstance(holder.get(key), dict) else {}
        value = holder.get(keys[-1])
        if is_url(value):
            local = fetch(value, home, keys[-1])
            holder[keys[-1]] = str(local)
            fetched[str(local)] = value
    return merged, fetched


def in_user_terms(message: str, local_to_url: dict[str, str]) -> str:
    """`message` with local copies named by the URLs they came from."""
    for local, url in sorted(local_to_url.items(), key=lambda item: -len(item[0])):
        message = message.replace(local, url)
    return message


def run_name(prompt: PromptFile) -> str:
    """A folder name for a prompt: its first words (ASCII, lowercase, hyphens) and its identity.

    e.g. `convert-the-number-written-in-english-3f2a9c1d`. The identity part makes the name the
    same for the same task and different for different ones.
    """
    words = prompt.spec.instruction if prompt.spec is not None else prompt.text
    plain = unicodedata.normalize("NFKD", words).encode("ascii", "ignore").decode().lower()
    slug = "-".join(re.findall(r"[a-z0-9]+", plain)[:6])[:48].strip("-") or "prompt"
    return f"{slug}-{prompt_identity(prompt)[:8]}"


@dataclass
class RunLocation:
    """Where a run's folder is.

    run_dir: the folder the stages work in, on this machine.
    url: the URL the run folder was given as (None for a local folder).
    remote: where the folder is mirrored after every stage: `url`, else STORAGE_URL/runs/NAME
        when P2M_STORAGE_URL is set, else None.
    """

    run_dir: Path
    url: str | None = None
    remote: str | None = None

    @property
    def shown(self) -> str:
        """Where the run is, as the summary tells a person: the URL when there is one."""
        return self.remote or str(self.run_dir)


def run_location(
    out_dir: str | None,
    prompt: PromptFile | None,
    home: Path,
    runs_root: str | None = None,
    storage_url: str | None = None,
) -> RunLocation:
    """Where the run goes: `out_dir` (a path or URL), else RUNS_ROOT/NAME from the prompt.

    `runs_root` defaults to HOME/runs (mirrored to STORAGE_URL/runs when `storage_url` is set).
    Raises BadInputError when no folder is given and there is no prompt to name one from.
    """
    if not out_dir:
        if prompt is None:
            raise BadInputError("no run folder given; pass the folder (or URL) of a run made by the pipeline")
        root = runs_root or str(Path(home) / "runs")
        out_dir = f"{root.rstrip('/')}/{run_name(prompt)}" if is_url(root) else str(local_path(root) / run_name(prompt))
    if is_url(out_dir):
        url = out_dir.rstrip("/")
        return RunLocation(_folder_for(home, "remote-runs", url), url, url)
    run_dir = local_path(out_dir).resolve()
    return RunLocation(run_dir, None, run_url(storage_url, run_dir) if storage_url else None)


def pull_run(location: RunLocation) -> bool:
    """Bring the run folder from its remote copy when this machine lacks it; returns whether it did.

    Raises BadInputError, having downloaded nothing, when a run folder URL holds files that are
    not a p2m run.
    """
    if location.remote is None:
        return False
    if location.url is not None and not (location.run_dir / RUN_MARKER).exists():
        fs, root = filesystem_for(location.url)
        try:
            fs.invalidate_cache(root)
            foreign = fs.exists(root) and bool(fs.ls(root, detail=False)) and not fs.exists(f"{root}/{RUN_MARKER}")
        except Exception as e:
            raise _store_error("run folder", location.url, e) from None
        if foreign:
            raise BadInputError(f"{location.url} holds files that are not a p2m run; pass another out_dir")
    try:
        return pull_folder(location.run_dir, location.remote)
    except P2MError:
        raise
    except Exception as e:
        raise _store_error("run folder", location.remote, e) from None
