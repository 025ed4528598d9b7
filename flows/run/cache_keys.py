"""Cache keys for the stage tasks: what a stage's result depends on, so a re-run skips exactly
the stages whose inputs did not change.

A key hashes the task's name (two tasks with equal inputs never share a record), CACHE_VERSION,
the code that does the stage's work, and the task's parameters. The code is found, not listed:
the source of the stage's module and of every p2m.tasks module it imports, directly or through
others, at the top of a file or inside a function, in absolute or relative form (read from the
files' syntax trees, so a lazy import counts too), plus the source of the task's own wrapper
function; and, when any of those modules renders prompts (p2m.tasks.teacher.prompts), every
prompt template. Editing a helper re-runs the stages that use it and no other. Settings
(p2m.tasks.core.config) are left out: their values enter the keys as parameters. Upstream
results are passed as small dicts carrying a content hash of their artifact, so a changed
artifact changes every key downstream. The teacher enters as its identity (kind and model), not
its URL, whose port changes from run to run.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import json
from functools import cache
from pathlib import Path

from p2m.tasks.core.run_store import content_hash
from p2m.tasks.teacher.prompts import templates_hash
from pydantic import BaseModel

CACHE_VERSION = "3"  # bump to invalidate every cached stage at once (3: the modules moved into layers)
PACKAGE = "p2m.tasks"
NOT_CODE = {f"{PACKAGE}.core.config"}


def module_source(name: str) -> str:
    """The source text of module `name`, read from its file (the module is not imported)."""
    spec = importlib.util.find_spec(name)
    return Path(spec.origin).read_text(encoding="utf-8")


def is_module(name: str) -> bool:
    """Whether `name` is an importable module or package (found, not imported)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent that is not a package: `name` is an attribute
        return False


def imported_modules(source: str, name: str | None = None) -> set[str]:
    """The p2m.tasks modules a source text imports anywhere (top level or inside functions).

    Absolute and relative forms both count (relative ones when `name`, the importing module, is
    given); `from p2m.tasks.stages import train` counts the module `p2m.tasks.stages.train`.
    """
    found = set()
    package = name.rpartition(".")[0] if name else ""
    if name and module_is_package(name):
        package = name
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                if not package:
                    continue
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([module] if module else []))
            if module != PACKAGE and not module.startswith(PACKAGE + "."):
                continue
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names if is_module(f"{module}.{a.name}"))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith(PACKAGE + "."))
    return found


def module_is_package(name: str) -> bool:
    spec = importlib.util.find_spec(name)
    return spec is not None and spec.submodule_search_locations is not None


@cache
def module_closure(name: str) -> frozenset[str]:
    """`name` and every p2m.tasks module it depends on through imports, settings left out."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen or current in NOT_CODE:
            continue
        seen.add(current)
        todo.extend(imported_modules(module_source(current), current))
    return frozenset(seen)


def code_hash(work_module: str, wrapper=None) -> str:
    """Hash of the code a stage runs: its module's closure, the wrapper's source, and the prompt
    templates when the closure renders prompts."""
    closure = module_closure(work_module)
    h = hashlib.sha256()
    for name in sorted(closure):
        h.update(name.encode() + b"\0" + module_source(name).encode())
    if wrapper is not None:
        h.update(inspect.getsource(wrapper).encode())
    if f"{PACKAGE}.teacher.prompts" in closure:
        h.update(templates_hash().encode())
    return h.hexdigest()[:16]


def _jsonable(value):
    """How a task parameter enters a cache key."""
    if hasattr(value, "identity") and isinstance(value.identity, str):  # the teacher
        return value.identity
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set):
        return sorted(value)
    if hasattr(value, "__dict__"):  # a live handle (the LLM client): what it answers is keyed elsewhere
        return type(value).__name__
    return str(value)


def stage_cache_key(work_module: str, wrapper):
    """A Prefect cache_key_fn for the task `wrapper` whose work lives in module `work_module`."""
    code = code_hash(work_module, wrapper)

    def key(context, parameters: dict) -> str:
        payload = json.dumps(
            [context.task.name, CACHE_VERSION, code, parameters], sort_keys=True, default=_jsonable, ensure_ascii=False
        )
        return f"{context.task.name}-{hashlib.sha256(payload.encode()).hexdigest()[:32]}"

    return key


def file_hash(path: Path | None) -> str:
    """The content hash of a file a stage reads by path (a test set, the user's inputs), for its
    cache key: the same path with new content is new input. "" for no file."""
    return content_hash(path) if path else ""


def sources_fingerprint(*roots: Path | None) -> str:
    """Cheap fingerprint of folders or index files (names, sizes, mtimes) for cache keys."""
    h = hashlib.sha256()
    for root in roots:
        if root is None or not Path(root).exists():
            continue
        files = [Path(root)] if Path(root).is_file() else sorted(p for p in Path(root).rglob("*") if p.is_file())
        for p in files:
            st = p.stat()
            h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]
