"""What importing a module drags in: each check runs in a fresh interpreter, and the import graph of
src/tangshi (module- and function-level imports, read with `ast`) has no cycle."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import tangshi

PACKAGE = Path(tangshi.__file__).parent

# run before the code under test in the child: records which module imported each tangshi.* module
_RECORD_IMPORTERS = """
import sys
importers = {}
class _Importers:
    def find_spec(self, name, path=None, target=None):
        f = sys._getframe(1)
        while f and f.f_globals.get("__name__", "").startswith(("importlib", "_frozen_importlib")):
            f = f.f_back
        if name.startswith("tangshi."):
            importers.setdefault(name, f.f_globals.get("__name__") if f else None)
sys.meta_path.insert(0, _Importers())
"""


def loaded_after(code: str) -> tuple[set[str], dict[str, str]]:
    """(top modules and tangshi.* modules in sys.modules, tangshi module -> its importer) after `code`."""
    report = "import json; print(json.dumps([sorted(sys.modules), importers]))"
    out = subprocess.run(
        [sys.executable, "-c", f"{_RECORD_IMPORTERS}\n{code}\n{report}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    modules, importers = json.loads(out.stdout.splitlines()[-1])
    return set(modules), importers


def chain(module: str, importers: dict[str, str]) -> str:
    """e.g. tangshi.api -> tangshi.evaluation.losses -> tangshi.training.train."""
    path = [module]
    while (up := importers.get(path[-1])) and up not in path:
        path.append(up)
    return " -> ".join(reversed(path))


@pytest.mark.slow
def test_reading_characters_imports_neither_torch_nor_numpy():
    modules, importers = loaded_after(
        "import tangshi.prosody.regular\n"
        "tangshi.prosody.regular.readings('月')\n"
        "tangshi.prosody.regular.check('床前明月光，疑是地上霜。举头望明月，低头思故乡。')"
    )
    for heavy in ("torch", "numpy"):
        assert heavy not in modules, f"{heavy} imported; tangshi modules loaded: {sorted(importers)}"


@pytest.mark.slow
def test_poet_loads_no_training_module():
    modules, importers = loaded_after("from tangshi import Poet")
    training = [
        m
        for m in ("tangshi.training.train", "tangshi.training.distributed", "tangshi.evaluation.suite")
        if m in modules
    ]
    assert not training, "from tangshi import Poet loads " + "; ".join(chain(m, importers) for m in training)


# ---------------------------------------------------------------- the import graph


def imports_of(source: str, modules: set[str], reexports: dict[str, str] | None = None) -> dict[str, int]:
    """The tangshi modules (dotted names under the package, e.g. "generation.search") a source file
    imports anywhere in it -> the first line that does.

    `from tangshi.pkg import name` imports module `pkg.name` when there is one; otherwise `name` is an
    attribute of `pkg` (its `__init__`, "pkg"). `from tangshi import name` with no module `name` adds an
    edge only where the package itself imports it from a submodule (`reexports`, e.g. Poet -> api)."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(source)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name.removeprefix("tangshi.") for a in node.names if a.name.startswith("tangshi.")]
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("tangshi"):
            inside = node.module.removeprefix("tangshi").removeprefix(".")
            for a in node.names:
                name = f"{inside}.{a.name}" if inside else a.name
                if name in modules:
                    targets.append(name)
                elif inside:
                    targets.append(inside)
                else:
                    targets.append((reexports or {}).get(a.name, ""))
        for t in targets:
            if t in modules:
                found.setdefault(t, node.lineno)
    return found


def module_files() -> dict[str, Path]:
    """Dotted name under the package ("api", "generation.search"; a subpackage's __init__ by its own
    name, "generation") -> its file; the package's own __init__ is "__init__"."""
    files = {}
    for p in PACKAGE.rglob("*.py"):
        parts = p.relative_to(PACKAGE).with_suffix("").parts
        if parts == ("__init__",):
            files["__init__"] = p
        else:
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return files


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported module: line}, over every file of src/tangshi."""
    files = module_files()
    modules = set(files) - {"__init__"}
    init = files["__init__"].read_text("utf-8")
    reexports = {
        a.asname or a.name: node.module.removeprefix("tangshi.")
        for node in ast.walk(ast.parse(init))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tangshi.")
        for a in node.names
    }
    graph = {m: imports_of(files[m].read_text("utf-8"), modules, reexports) for m in modules}
    graph["__init__"] = imports_of(init, modules)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One shortest cycle through each strongly connected group of modules (Tarjan, then BFS)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:  # v is the root of a strongly connected group
            group = set()
            while v not in group:
                group.add(stack.pop())
            if len(group) > 1 or v in graph.get(v, {}):
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [shortest_cycle(min(group), group, graph) for group in groups]


def shortest_cycle(start: str, group: set[str], graph: dict[str, dict[str, int]]) -> list[str]:
    """Breadth first from `start` inside its group until an edge leads back to it."""
    paths = {start: [start]}
    frontier = [start]
    while True:
        for v in frontier:
            if start in graph[v]:
                return paths[v] + [start]
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w in group and w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt


def describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    hops = ", ".join(f"{a}.py:{graph[a][b]} imports {b}" for a, b in zip(cycle, cycle[1:], strict=False))
    return f"{' -> '.join(cycle)} ({hops})"


def test_import_graph_reads_every_kind_of_import():
    source = (
        "import tangshi.data.vocab\n"
        "from tangshi.data.corpus import load_corpus\n"
        "from tangshi import api, __version__, Poet\n"
        "def f():\n"
        "    from tangshi.training import train\n"
        "    from tangshi.model import CharRNN\n"
    )
    modules = {"data", "data.vocab", "data.corpus", "model", "model.charrnn", "training.train", "api"}
    found = imports_of(source, modules, {"Poet": "api"})
    assert found == {"data.vocab": 1, "data.corpus": 2, "api": 3, "training.train": 5, "model": 6}
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b": 1}, "b": {}}) == []


def test_no_import_cycles_among_tangshi_modules():
    graph = import_graph()
    assert "data.text" in graph["prosody.regular"] and "data.vocab" in graph["data.corpus"]  # the graph is read at all
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(describe(c, graph) for c in found)
