"""The shape of the package: no import cycles, small modules, every public name documented.

The layers themselves are import-linter contracts in `pyproject.toml` (`lint-imports`,
run by `.ci/run`); these tests hold what import-linter does not check.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "baiduwx_async"
MAX_LINES = 400
#: Modules whose `__all__` is public API, each with its reference page entries.
PUBLIC_MODULES = (
    "baiduwx_async",
    "baiduwx_async.testing",
    "baiduwx_async.redis",
    "baiduwx_async.gateway",
    "baiduwx_async.ray",
)


def test_no_import_cycles() -> None:
    """Every import counts: at module level, inside functions (lazy), and under
    `TYPE_CHECKING` (a cycle of annotations is still two modules that need each other)."""
    graph = grimp.build_graph("baiduwx_async", exclude_type_checking_imports=False)
    cycles = set()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            if imported != module and graph.chain_exists(importer=imported, imported=module):
                chain = graph.find_shortest_chain(importer=imported, imported=module)
                cycles.add(" -> ".join((module, *(chain or ()))))
    assert sorted(cycles) == []


def test_no_module_over_the_line_limit() -> None:
    long = {
        str(path.relative_to(ROOT)): count
        for path in PACKAGE.rglob("*.py")
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def _public_names() -> list[tuple[str, str]]:
    return [
        (module, name)
        for module in PUBLIC_MODULES
        for name in importlib.import_module(module).__all__
        if not name.startswith("__")
    ]


def _reference_entries() -> set[str]:
    entries = set()
    for page in (ROOT / "docs" / "reference").glob("*.md"):
        entries.update(re.findall(r"^::: ([\w.]+)", page.read_text(encoding="utf-8"), re.M))
    return entries


@pytest.mark.parametrize(("module", "name"), _public_names())
def test_every_public_name_has_a_documented_reference_entry(module: str, name: str) -> None:
    assert f"{module}.{name}" in _reference_entries(), f"docs/reference has no ::: {module}.{name}"
    obj = getattr(importlib.import_module(module), name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        # its own docstring: inspect.getdoc would accept one inherited from a base class
        assert (obj.__doc__ or "").strip(), f"{module}.{name} has no docstring"
