"""The house's rules, read from the package's own imports (every import: top-level, inside
functions and under TYPE_CHECKING alike), so a change that breaks one fails here:

- ``core`` imports nothing of the package above it; ``supply`` only ``core``;
- ``engine`` imports ``core`` and ``supply``, never ``edges``; only ``engine`` imports dagger;
- ``edges`` imports ``core`` and ``supply``, never the engine;
- nothing imports ``session`` or ``cli`` (``__main__`` calls cli's main);
- no module imports itself back through others (no circle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"
# Which wings each wing may import (its own always).
ALLOWED = {
    "core": {"core"},
    "supply": {"core", "supply"},
    "engine": {"core", "supply", "engine"},
    "edges": {"core", "supply", "edges"},
    "session": {"core", "supply", "engine", "edges"},
    "cli": {"core", "edges", "session"},
    "__main__": {"cli"},
}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, as dotted names (``from pipeline.x import y`` gives
    ``pipeline.x.y`` when that is a module, else ``pipeline.x``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if name in MODULES else node.module)
    return found


MODULES = {_module(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _wing(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "pipeline"


def test_the_package_has_its_wings():
    assert {_wing(m) for m in MODULES} == {*ALLOWED, "pipeline"}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_imports_only_what_its_wing_may(module: str):
    wing = _wing(module)
    if wing == "pipeline":  # the package's __init__
        return
    ours = {_wing(i) for i in GRAPH[module] if i.startswith("pipeline.")}
    assert ours <= ALLOWED[wing], f"{module} imports {sorted(ours - ALLOWED[wing])}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_the_engine_imports_dagger(module: str):
    dagger = {i for i in GRAPH[module] if i == "dagger" or i.startswith("dagger.")}
    assert not dagger or _wing(module) == "engine", f"{module} imports {sorted(dagger)}"


def test_no_module_reaches_itself_through_others():
    ours = {m: {i for i in GRAPH[m] if i in MODULES and i != m} for m in MODULES}
    state: dict[str, int] = {}  # 1: on the path, 2: done
    circles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for nxt in sorted(ours[module]):
            if state.get(nxt) == 1:
                circles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[module] = 2

    for module in sorted(ours):
        if module not in state:
            visit(module, [module])
    assert not circles, " ; ".join(" -> ".join(c) for c in circles)


def test_rules_are_checked_against_a_real_graph():
    """The graph is read, not empty: the engine's runner imports dagger and the core's jobs,
    and the CLI the session."""
    assert "dagger" in GRAPH["pipeline.engine.runner"]
    assert "pipeline.core.jobs" in GRAPH["pipeline.engine.runner"]
    assert "pipeline.session" in GRAPH["pipeline.cli"]
