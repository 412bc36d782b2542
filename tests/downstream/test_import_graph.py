"""``downstream/`` has no import circle, counting function-local imports and the packages an import executes."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "downstream"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> nx.DiGraph:
    """Edges module → every ``downstream`` module its code imports anywhere (top level, inside functions, or by
    ``importlib.import_module`` with a literal name).

    Importing ``a.b.c`` runs ``a/__init__``, ``a/b/__init__`` and ``a/b/c``, so each of them is an edge target;
    ``from a.b import c`` targets ``a.b.c`` when that is a module.
    """
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)

    def targets(name: str) -> list[str]:
        parts = name.split(".")
        return [".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in modules]

    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            found: list[str] = []
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                found = [base] + [f"{base}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module",
                "find_spec",
            ):  # importlib.import_module("downstream.methods") imports as much as an import statement
                found = [a.value for a in node.args[:1] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            for imported in found:
                for target in targets(imported):
                    if target != name and not name.startswith(f"{target}."):  # a package's own parents run first
                        graph.add_edge(name, target)
    return graph


def test_graph_sees_real_edges():
    graph = import_graph()
    assert graph.has_edge("downstream.registry", "downstream.methods.linear")
    assert graph.has_edge("downstream.registry", "downstream.segmentation.tasks")  # function-local import counted
    assert graph.has_edge("downstream.methods.linear", "downstream.contract")


def test_downstream_has_no_import_cycle():
    cycles = list(nx.simple_cycles(import_graph()))
    if cycles:
        shortest = sorted(cycles, key=len)[:5]
        pytest.fail("import circles in downstream/: " + "; ".join(" → ".join([*c, c[0]]) for c in shortest))


def test_contract_imports_nothing_from_downstream():
    assert list(import_graph().successors("downstream.contract")) == []
