"""The layers hold: no import cycle between modules or packages, and the library never imports an app.

Read from the code with `ast` (nothing is imported), counting every import, including the ones inside
functions: a lazy import is still a dependency, and hiding a cycle in a function only moves it. The
layers are drawn in docs/architecture.md ("Layers").
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = {
    "gleam": ROOT / "platform" / "gleam",
    "gleam_cli": ROOT / "platform" / "gleam_cli",
    "serve": ROOT / "serve",
}
APPS = ("serve", "gleam_cli")


def _modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for root in SOURCE_ROOTS.values():
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root.parent).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _imported_names(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        prefix = ".".join([*package, *([node.module] if node.module else [])])
    else:
        prefix = node.module or ""
    return [prefix, *(f"{prefix}.{alias.name}" for alias in node.names)]


def module_graph() -> dict[str, set[str]]:
    """module -> the platform modules it imports (a `from pkg import mod` counts as importing mod)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                graph[name].update(t for t in _imported_names(name, path, node) if t in modules and t != name)
    return graph


def package_of(module: str) -> str:
    """The layer of a module: `gleam.corpus.sources.vigor` -> `gleam.corpus`, `gleam.storage` -> `gleam`."""
    parts = module.split(".")
    if parts[0] != "gleam" or len(parts) == 1:
        return parts[0]
    is_package = (SOURCE_ROOTS["gleam"] / Path(*parts[1:]) / "__init__.py").exists()
    return "gleam" if len(parts) == 2 and not is_package else ".".join(parts[:2])


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def _describe(graph: dict[str, set[str]], cycle: list[str]) -> str:
    members = set(cycle)
    return "; ".join(f"{a} -> {', '.join(sorted(graph[a] & members))}" for a in cycle)


def test_the_finder_sees_a_cycle_it_is_shown() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_another_that_imports_it_back() -> None:
    graph = module_graph()
    assert len(graph) > 50  # the walk found the tree
    cycles = find_cycles(graph)
    assert not cycles, "module import cycles: " + " | ".join(_describe(graph, c) for c in cycles)


def test_no_package_imports_another_that_imports_it_back() -> None:
    packages: dict[str, set[str]] = defaultdict(set)
    for module, targets in module_graph().items():
        packages[package_of(module)].update(
            package_of(t) for t in targets if package_of(t) != package_of(module)
        )
    cycles = find_cycles(packages)
    assert not cycles, "package import cycles: " + " | ".join(_describe(packages, c) for c in cycles)


@pytest.mark.parametrize("app", APPS)
def test_the_library_never_imports_an_app(app: str) -> None:
    offenders = sorted(
        f"{module} -> {target}"
        for module, targets in module_graph().items()
        if module.split(".")[0] == "gleam"
        for target in targets
        if target.split(".")[0] == app
    )
    assert not offenders, f"the library imports the {app} app: {offenders}"
