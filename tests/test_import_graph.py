"""The package's load-time import graph has no cycle (issue: one home per concern).

Edges are the imports a module runs when it loads (its body, ``try`` and non-``TYPE_CHECKING`` ``if`` blocks).
Imports inside functions (deferred for start-up time or optional dependencies) and ``if TYPE_CHECKING:`` blocks
are not edges: they cannot leave a module half-initialised. The stricter test counts those too
(``deferred_cycles``): a stage may only import the stages before it, even for a type annotation."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parents[1] / "capsim"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _top_level_imports(tree: ast.Module) -> list[ast.stmt]:
    """Import statements executed when the module loads (module body, not functions or TYPE_CHECKING)."""
    out: list[ast.stmt] = []
    for stmt in tree.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            out.append(stmt)
        elif isinstance(stmt, ast.If) and "TYPE_CHECKING" not in ast.unparse(stmt.test):
            out.extend(s for s in stmt.body + stmt.orelse if isinstance(s, (ast.Import, ast.ImportFrom)))
        elif isinstance(stmt, ast.Try):
            out.extend(s for s in stmt.body if isinstance(s, (ast.Import, ast.ImportFrom)))
    return out


def import_graph() -> nx.DiGraph:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for stmt in _top_level_imports(tree):
            targets: list[str] = []
            if isinstance(stmt, ast.Import):
                targets = [a.name for a in stmt.names]
            else:
                base = _resolve(name, path.name == "__init__.py", stmt)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in stmt.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                # a submodule importing its own package's __init__ is how relative imports start: not a cycle
                if target and target != name and not name.startswith(target + "."):
                    graph.add_edge(name, target)
    return graph


def deferred_cycles() -> list[list[str]]:
    """Cycles when every import counts, deferred and type-only ones included (the stricter goal)."""
    global _top_level_imports
    load_time = _top_level_imports
    try:
        _top_level_imports = _every_import  # type: ignore[assignment]
        return list(nx.simple_cycles(import_graph()))
    finally:
        _top_level_imports = load_time


def _every_import(tree: ast.Module) -> list[ast.stmt]:
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def test_graph_sees_known_edges() -> None:
    graph = import_graph()
    # engine/predict.py: from capsim.engine.passes import decode_times, prefill_times
    assert graph.has_edge("capsim.engine.predict", "capsim.engine.passes")
    # memory.py imports ResolvedScenario only under TYPE_CHECKING: not a load-time edge, but a deferred one
    assert not graph.has_edge("capsim.engine.memory", "capsim.engine.resolved")
    load_time = _top_level_imports
    globals()["_top_level_imports"] = _every_import
    try:
        assert import_graph().has_edge("capsim.engine.memory", "capsim.engine.resolved")
    finally:
        globals()["_top_level_imports"] = load_time


def test_no_cycle_even_counting_deferred_and_type_only_imports() -> None:
    cycles = deferred_cycles()
    assert not cycles, "cycles: " + "; ".join(" -> ".join(c + [c[0]]) for c in cycles[:10])


def test_no_private_names_imported_across_modules() -> None:
    """``from capsim.x import _name`` reaches into another module's internals; a private *module* of the same
    package (``_formulas_compiled``) is fine."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("capsim"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    is_module = (PACKAGE.parent / (full.replace(".", "/") + ".py")).exists()
                    if alias.name.startswith("_") and not alias.name.startswith("__") and not is_module:
                        offenders.append(f"{path.relative_to(PACKAGE.parent)}: {full}")
    assert not offenders, offenders


def test_no_import_cycle() -> None:
    cycles = list(nx.simple_cycles(import_graph()))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c + [c[0]]) for c in cycles[:10])
