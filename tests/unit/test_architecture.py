"""The package's shape stays as docs/architecture.md draws it.

* Floors: the import-linter contracts in pyproject.toml hold (every import goes down;
  the engine imports no Faust, Kafka, HTTP, RocksDB or config loading).
* No import cycle anywhere in `nudgeflow`, TYPE_CHECKING imports included.
* Every module is named in docs/architecture.md, so the map cannot drift.
* Modules and functions stay small, or say here why not.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "nudgeflow"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

MAX_MODULE_LINES = 420
MAX_FUNCTION_LINES = 60
# Larger on purpose; each entry says why.
LONG_FUNCTIONS = {
    "web/openapi.py:_paths": "one declarative table of every route, read top to bottom",
    "pipeline/consumer.py:_drain_messages": "Faust's fetch loop, overridden whole (docstring)",
}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_floors_hold() -> None:
    """`lint-imports` with the contracts of pyproject.toml: what `make lint` runs.

    In its own process: import-linter's `lint_imports()` calls `logging.config.dictConfig`
    without `disable_existing_loggers=False`, which disables every logger already created
    (`nudgeflow.decisions`, `nudgeflow.deliveries`, ...) for the rest of a pytest process,
    so later `caplog` tests saw nothing. It also puts the cwd on `sys.path`.
    """
    command = "from importlinter.cli import lint_imports_command as c; c()"
    run = subprocess.run(
        [sys.executable, "-c", command, "--no-cache", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (child, iter(sorted(graph.find_modules_directly_imported_by(child))))
                    )
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles() -> None:
    graph = grimp.build_graph("nudgeflow", cache_dir=None)
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: a two-module cycle in a scratch package is found."""
    pkg = tmp_path / "cyclic_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyclic_pkg import b\n")
    (pkg / "b.py").write_text("from cyclic_pkg import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        graph = grimp.build_graph("cyclic_pkg", cache_dir=None)
    finally:
        for name in [m for m in sys.modules if m.startswith("cyclic_pkg")]:
            del sys.modules[name]
    assert _cycles(graph) == [["cyclic_pkg.a", "cyclic_pkg.b"]]


def _map_sections(text: str) -> dict[str, set[str]]:
    """The module tree of docs/architecture.md: top-level name -> file names under it."""
    block = text[text.index("```\nnudgeflow/\n") :]
    block = block[: block.index("\n```", 4)]
    sections: dict[str, set[str]] = {}
    current = ""
    for line in block.splitlines()[1:]:
        head = re.match(r"  ([a-z_]+(?:/|\.py))", line)
        if head:
            current = head.group(1).rstrip("/").removesuffix(".py")
            sections.setdefault(current, set())
        sections.setdefault(current, set()).update(re.findall(r"[a-z_]+\.py|[a-z_]+/", line))
    return sections


def test_every_module_is_on_the_map() -> None:
    sections = _map_sections(ARCHITECTURE.read_text())
    missing = []
    for path in _modules():
        rel = path.relative_to(PACKAGE)
        top = rel.parts[0].removesuffix(".py")
        if rel.parts == ("__init__.py",):
            continue
        if len(rel.parts) == 1:
            found = top in sections
        elif rel.name == "__init__.py":
            found = top in sections and (
                len(rel.parts) == 2 or f"{rel.parts[-2]}/" in sections[top]
            )
        else:
            found = rel.name in sections.get(top, set())
        if not found:
            missing.append(rel.as_posix())
    assert missing == [], f"docs/architecture.md does not name: {missing}"


def test_modules_and_functions_stay_small() -> None:
    too_long: list[str] = []
    for path in _modules():
        rel = path.relative_to(PACKAGE).as_posix()
        source = path.read_text()
        if len(source.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{rel}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES and f"{rel}:{node.name}" not in LONG_FUNCTIONS:
                    too_long.append(f"{rel}:{node.name}: {lines} lines")
    assert too_long == []
