"""The house's rules, read from the code's imports and strings (issue 41): no import circle between
the project's modules (imports inside functions included), no import of another package's private
name, and only the run-record module names a record's files."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CODE = ["projunn", "training", "tasks", "scripts", "hydra_plugins", "train.py"]


def module_files() -> dict[str, Path]:
    """``{dotted name: path}`` of every module of the project (a package as its ``__init__``)."""
    found = {}
    for top in CODE:
        paths = [ROOT / top] if top.endswith(".py") else sorted((ROOT / top).rglob("*.py"))
        for path in paths:
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = module_files()


def imports(name: str) -> list[tuple[str, str, int]]:
    """``(module, imported name or "", line)`` of every import in module ``name``, relative ones
    resolved, at any depth of the code."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, "", node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found += [(module, alias.name, node.lineno) for alias in node.names]
    return found


def project_edges(name: str) -> set[str]:
    """The project's modules that module ``name`` imports (``from a import b``: ``a.b`` when it is a
    module, else ``a``)."""
    edges = set()
    for module, imported, _ in imports(name):
        target = f"{module}.{imported}" if f"{module}.{imported}" in MODULES else module
        if target in MODULES and target != name:
            edges.add(target)
    return edges


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one node of ``graph`` (Tarjan's algorithm)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                groups.append(sorted(group))

    for name in graph:
        if name not in index:
            visit(name)
    return groups


def test_no_import_circle():
    assert circles({name: project_edges(name) for name in MODULES}) == []


def test_the_circle_check_finds_circles_and_reads_relative_imports():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": set()}
    assert sorted(circles(graph)) == [["a", "b", "c"], ["d", "e"]]
    assert "training.record" in project_edges("training.summary")  # from .record import ...
    assert "scripts.tables" in project_edges("scripts.results.report")  # from .. import tables, or scripts.tables


def test_no_private_name_of_another_package_is_imported():
    private = []
    for name in MODULES:
        top = name.split(".")[0]
        for module, imported, line in imports(name):
            if module.split(".")[0] in (top, "__future__"):
                continue
            parts = [*module.split("."), *([imported] if imported else [])]
            if any(p.startswith("_") and not p.startswith("__") for p in parts):
                private.append(f"{MODULES[name].relative_to(ROOT)}:{line}: {module} {imported}".rstrip())
    assert private == []


@pytest.mark.parametrize("file", ["metrics.csv", "summary.json", "diagnostics.jsonl"])
def test_only_the_run_record_module_names_the_record_files(file):
    naming = [
        str(path.relative_to(ROOT))
        for path in MODULES.values()
        if f'"{file}"' in path.read_text() or f"'{file}'" in path.read_text()
    ]
    assert naming == ["training/record.py"]
