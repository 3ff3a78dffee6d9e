"""Every name a benchmark script imports from the platform exists.

Benchmarks are run by hand, not by the suite, and import lazily inside functions; a class that moves
(PrepareConfig once left gleam.config) broke four of them unnoticed until someone ran one.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def platform_imports(script: Path) -> list[tuple[int, str, str]]:
    """(line, module, name) of every `from gleam... import name` in the script, lazy ones included."""
    found = []
    for node in ast.walk(ast.parse(script.read_text(), filename=str(script))):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] in ("gleam", "gleam_cli")
        ):
            found += [(node.lineno, node.module, alias.name) for alias in node.names]
    return found


def has_name(module: str, name: str) -> bool:
    """`from module import name` works: an attribute, or a submodule of a package."""
    imported = importlib.import_module(module)
    if hasattr(imported, name):
        return True
    return hasattr(imported, "__path__") and importlib.util.find_spec(f"{module}.{name}") is not None


@pytest.mark.parametrize("script", sorted(BENCHMARKS.glob("*.py")), ids=lambda p: p.name)
def test_a_benchmark_imports_only_names_that_exist(script: Path) -> None:
    missing = [
        f"{script.name}:{line}: {module}.{name}"
        for line, module, name in platform_imports(script)
        if not has_name(module, name)
    ]
    assert not missing, missing
