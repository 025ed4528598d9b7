"""The layout's import rules, read from every module's syntax tree (imports inside functions too).

tasks/ is layered: core < storage < teacher, retrieval, student (side by side) < generation (on the
teacher) and report < ship < nightly; stages sit on top and never import each other. Prefect stays
in flows/ and deployments/ (one tasks module excepted, below). No import cycles. A p2m import
inside a function says why (`# lazy: ...` on its line or the line above, or once for a whole
module: a top-level line `# lazy imports: ...`, as the CLI's command modules have).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"tasks": "p2m.tasks", "flows": "p2m.flows", "deployments": "p2m.deployments"}

# The rooms of tasks/ and the rooms each may import (itself included).
ALLOWED = {
    "core": {"core"},
    "storage": {"core", "storage"},
    "teacher": {"core", "storage", "teacher"},
    "retrieval": {"core", "storage", "retrieval"},
    "student": {"core", "storage", "student"},
    "generation": {"core", "storage", "teacher", "generation"},
    "report": {"core", "storage", "student", "report"},
    "ship": {"core", "storage", "student", "report", "ship"},
    "nightly": {"core", "storage", "student", "report", "ship", "nightly"},
    "stages": {"core", "storage", "teacher", "retrieval", "student", "generation", "report", "ship", "stages"},
}
# Prefect's global concurrency limits are where a teacher's shared rate limit lives, and the teacher
# client takes its slot there on every request, in whatever process runs it: that one module talks
# to Prefect's client (imported inside its functions, only when limits are shared).
PREFECT_IN_TASKS = {"p2m.tasks.teacher.shared_limits"}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    parts = [FOLDERS[rel.parts[0]], *rel.parts[1:]]
    parts[-1] = parts[-1].removesuffix(".py")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[str, int, bool, str]]:
    """(imported module, line, inside a function, the line and the one above) for every import."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                context = "\n".join(lines[max(0, child.lineno - 2) : child.lineno])
                if isinstance(child, ast.Import):
                    targets = [a.name for a in child.names]
                else:
                    module = child.module or ""
                    if child.level:
                        base = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                        module = ".".join(base + ([module] if module else []))
                    targets = [module] + [f"{module}.{a.name}" for a in child.names if is_module(f"{module}.{a.name}")]
                found.extend((t, child.lineno, inside, context) for t in targets)
            visit(child, inside)

    visit(ast.parse(source), False)
    return found


def lazy_module(path: Path) -> bool:
    """Whether the module declares once why its functions import p2m's modules (a top-level
    comment line starting `# lazy imports:`)."""
    return any(line.startswith("# lazy imports:") for line in path.read_text(encoding="utf-8").splitlines())


def is_module(name: str) -> bool:
    return name in MODULES


def all_files() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py"))


MODULES = {module_name(p) for p in all_files()}


def room(module: str) -> str | None:
    """The room of a p2m.tasks module (`core`, `stages`, ...), or None for a module loose in tasks/."""
    parts = module.split(".")
    return parts[2] if len(parts) > 3 and parts[:2] == ["p2m", "tasks"] else None


def violations(files: list[Path]) -> list[str]:
    """Every broken rule, one line each."""
    out = []
    graph: dict[str, set[str]] = {}
    for path in files:
        name = module_name(path)
        here = room(name)
        for target, line, inside, context in imports(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            if target == "prefect" or target.startswith("prefect."):
                if name.startswith("p2m.tasks") and name not in PREFECT_IN_TASKS:
                    out.append(f"{where}: Prefect imported in tasks/ ({target})")
                continue
            if not target.startswith("p2m."):
                continue
            target = target if target in MODULES else target.rpartition(".")[0]
            graph.setdefault(name, set()).add(target)
            if inside and "lazy:" not in context and not lazy_module(path):
                out.append(f"{where}: {target} imported inside a function without a `# lazy:` reason")
            if name.startswith("p2m.tasks"):
                if target.startswith(("p2m.flows", "p2m.deployments")):
                    out.append(f"{where}: tasks/ imports {target}")
                theirs = room(target)
                if here and theirs and theirs not in ALLOWED[here]:
                    out.append(f"{where}: {here} may not import {theirs} ({target})")
                if here == "stages" and theirs == "stages" and target != name and target != "p2m.tasks.stages":
                    out.append(f"{where}: a stage imports another stage ({target})")
    out.extend(f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph))
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules that import each other (package
    __init__ files that re-export their own modules are not edges back)."""
    found, state = [], {}

    def walk(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if node.startswith(nxt + "."):  # a module importing its own package's __init__
                continue
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                walk(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node, [])
    return found


def test_the_layout_keeps_its_import_rules():
    assert violations(all_files()) == []


def test_tasks_is_folders_of_rooms():
    rooms = [p for p in (ROOT / "tasks").iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    loose = [p for p in (ROOT / "tasks").glob("*.py") if p.name != "__init__.py"]
    assert {p.name for p in rooms} == set(ALLOWED)
    assert len(loose) <= 4, loose


def test_stages_holds_the_eight_stages_and_nothing_else():
    stages = {p.stem for p in (ROOT / "tasks" / "stages").glob("*.py")} - {"__init__"}
    assert stages == {
        "parse",
        "retrieve_datasets",
        "generate",
        "retrieve_model",
        "process",
        "train",
        "evaluate",
        "demo",
    }


def test_no_cli_module_is_over_300_lines():
    for path in (ROOT / "flows" / "cli").glob("*.py"):
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 300, path


@pytest.mark.parametrize(
    "text, broken",
    [
        ("from p2m.tasks.stages.parse import parse_prompt\n", "may not import stages"),
        ("import prefect\n", "Prefect imported in tasks/"),
        ("def f():\n    from p2m.tasks.core import errors\n", "without a `# lazy:` reason"),
        ("from p2m.tasks.ship import demo\n", "import cycle"),
    ],
)
def test_a_broken_rule_is_caught(tmp_path, monkeypatch, text, broken):
    """Each rule fails on a violation: a module of the core given one bad import."""
    core = ROOT / "tasks" / "core" / "errors.py"
    fake = tmp_path / "errors.py"
    fake.write_text(core.read_text(encoding="utf-8") + "\n" + text, encoding="utf-8")
    real_read = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: real_read(fake if self == core else self, *a, **k))
    assert any(broken in v for v in violations(all_files()))
