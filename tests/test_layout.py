"""The code's shape: imports point down without cycles, and modules and functions stay readable.

The layers themselves are import-linter's contract (pyproject.toml, run by ``make test`` as
``lint-imports``); these tests add what a layer contract does not see: cycles between modules
of one package, imports hidden inside functions, and size.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

APP = Path(__file__).resolve().parent.parent / "app"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# A function may be longer when its first lines say why, in a comment starting with this.
LONG_MARK = "# Long:"
# Only the command line imports inside functions: each command loads what it needs, so that
# `enrich --version` and `enrich --help` start fast. Such an import carries this comment.
LAZY_MARK = "start-up"


def strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """Tarjan's algorithm over the module graph (iterative: the graph is small, the stack not)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[set[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
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
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                found.append(component)
    return found


def sources() -> list[Path]:
    return sorted(APP.rglob("*.py"))


def test_no_module_imports_itself_back() -> None:
    graph = grimp.build_graph("app")
    cycles = [sorted(c) for c in strongly_connected(graph) if len(c) > 1]
    assert cycles == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("x", "x.a", "x.b", "x.c"):
        graph.add_module(name)
    graph.add_import(importer="x.a", imported="x.b")
    graph.add_import(importer="x.b", imported="x.a")
    graph.add_import(importer="x.c", imported="x.a")
    assert [c for c in strongly_connected(graph) if len(c) > 1] == [{"x.a", "x.b"}]


def test_imports_inside_functions_are_only_the_clis_and_say_why() -> None:
    hidden = []
    for path in sources():
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("app"):
                    where = f"{path.relative_to(APP.parent)}:{inner.lineno}"
                    in_cli = path.relative_to(APP).parts[0] == "cli"
                    said = any(LAZY_MARK in line for line in lines[node.lineno - 1 : inner.lineno])
                    if not (in_cli and said):
                        hidden.append(where)
    assert hidden == []


def test_modules_are_short() -> None:
    long = {
        str(path.relative_to(APP.parent)): n
        for path in sources()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_functions_are_short_or_say_why() -> None:
    long = {}
    for path in sources():
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            size = (node.end_lineno or node.lineno) - node.lineno + 1
            head = lines[node.lineno - 1 : node.lineno + 15]
            if size > MAX_FUNCTION_LINES and not any(LONG_MARK in line for line in head):
                long[f"{path.relative_to(APP.parent)}:{node.lineno} {node.name}"] = size
    assert long == {}
