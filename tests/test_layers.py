"""The import graph keeps the layers: bot/ → handlers/ → storage/, scheduler/ → storage/; no circles anywhere.

Read from the source with `ast` (nothing is imported), counting imports inside functions too: a function-level
import that closes a circle is still a circle, only a hidden one.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "handlers", "storage", "scheduler")
# What each package may import from the others.
ALLOWED = {
    "storage": set(),
    "handlers": {"storage"},
    "scheduler": {"storage"},
    "bot": {"handlers", "storage", "scheduler"},
}
# Only the front door may import lazily (so `steward --help` starts fast and jieba loads only to serve); the
# domain never needs to: there a function-level import only ever hid a circle.
LAZY_IMPORTS_ALLOWED = ("bot.",)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(modules: dict[str, Path]) -> tuple[dict[str, set[str]], list[tuple[str, str]]]:
    """module → project modules it imports; and (module, target) for every import inside a function."""
    graph: dict[str, set[str]] = defaultdict(set)
    lazy: list[tuple[str, str]] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        in_functions = {
            id(node)
            for fn in ast.walk(tree)
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
            for node in ast.walk(fn)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                targets = [
                    f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                    for alias in node.names
                ]
            else:
                continue
            for target in targets:
                if target.split(".")[0] not in PACKAGES:
                    continue
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in modules and target != name:
                    graph[name].add(target)
                    if id(node) in in_functions:
                        lazy.append((name, target))
    return graph, lazy


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in list(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
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


def test_each_package_imports_only_the_layers_below_it():
    graph, _lazy = _imports(_modules())
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        for target in targets
        if target.split(".")[0] != module.split(".")[0]
        and target.split(".")[0] not in ALLOWED[module.split(".")[0]]
    )
    assert wrong == []


def test_no_module_imports_itself_back_through_others():
    graph, _lazy = _imports(_modules())
    assert _cycles(graph) == []


def test_no_function_level_import_outside_the_front_door():
    _graph, lazy = _imports(_modules())
    hidden = sorted({f"{module} → {target}" for module, target in lazy if not module.startswith(LAZY_IMPORTS_ALLOWED)})
    assert hidden == []


def test_the_checker_finds_a_circle_and_a_wrong_layer():
    # The checks above pass on a clean tree; make sure they would notice the failures they exist for.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
