"""The package's own imports: no import circle, and the output layer imports no result kind.

Counts module-level and function-level imports, not those under ``if TYPE_CHECKING:``;
importing ``a.b`` also runs ``a/__init__.py`` (except for ``a``'s own submodules).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "hooklab"
#: The output layer may import only these (and itself): no kind, method, CLI or demo.
# leaves: hooklab.options declares option types (it imports nothing from hooklab)
OUTPUT_MAY_IMPORT = ("hooklab.output", "hooklab.version", "hooklab.registry", "hooklab.options")
#: Circles another branch removes; the lead deletes an entry when that branch is merged.
KNOWN_CIRCLES: list[set[str]] = []


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports (``TYPE_CHECKING`` blocks left out)."""
    found: set[str] = set()
    is_pkg = path.name == "__init__.py"

    def add(target: str) -> None:
        resolved = _resolve(target, mods)
        if resolved and resolved != name:
            found.add(resolved)

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for c in child.orelse:
                    visit(c)
                continue
            if isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative import
                    parts = name.split(".")
                    keep = len(parts) - child.level + (1 if is_pkg else 0)
                    base = ".".join(parts[:keep] + ([base] if base else []))
                if base == PACKAGE or base.startswith(PACKAGE + "."):
                    for alias in child.names:
                        full = f"{base}.{alias.name}"
                        add(full if full in mods else base)
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                        add(alias.name)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        deps = _imports(name, path, mods)
        for dep in list(deps):  # importing a.b runs a/__init__.py (not for a's own modules)
            parent = dep.rpartition(".")[0]
            while parent and not name.startswith(parent + "."):
                if parent in mods:
                    deps.add(parent)
                parent = parent.rpartition(".")[0]
        graph[name] = deps
    return graph


def _circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(group)

    for v in graph:
        if v not in index:
            strong(v)
    return out


def test_no_import_circles():
    circles = [c for c in _circles(_graph()) if c not in KNOWN_CIRCLES]
    assert not circles, "import circles: " + "; ".join(" <-> ".join(sorted(c)) for c in circles)


@pytest.mark.parametrize("known", KNOWN_CIRCLES, ids=lambda c: "-".join(sorted(c)))
def test_known_circles_are_still_there(known):
    # when this fails, the circle is gone: delete it from KNOWN_CIRCLES
    assert known in _circles(_graph())


def test_output_layer_imports_no_result_kind():
    graph = _graph()
    bad = {
        (name, dep)
        for name, deps in graph.items()
        if name == "hooklab.output" or name.startswith("hooklab.output.")
        for dep in deps
        if not any(dep == ok or dep.startswith(ok + ".") for ok in OUTPUT_MAY_IMPORT)
    }
    assert not bad, f"hooklab.output imports outside the output layer: {sorted(bad)}"


def test_the_checker_sees_a_circle_and_type_checking(tmp_path, monkeypatch):
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from hooklab.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("from hooklab.sub.b import g\n")
    (pkg / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from hooklab import c\n"
        "import hooklab.a\n"
    )
    (pkg / "c.py").write_text("from hooklab.sub import b\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert _circles(_graph()) == [{"hooklab.a", "hooklab.sub", "hooklab.sub.b"}]
