"""The whole tree has no import circle, counting function-local imports and the packages an import executes.

Covers ``lvmmed``, ``data_prep``, ``pretrain``, ``downstream``, ``demo`` and ``bench``. Parses every module (no
import is executed). A function-local import is an edge like any other: moving an import into a function hides a
circle from Python at import time but not from the reader, and it comes back the day the import moves up.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lvmmed", "data_prep", "pretrain", "downstream", "demo", "bench")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _imported_names(node: ast.AST, package: str) -> list[str]:
    """Dotted names an ``import`` / ``from ... import`` / ``importlib.import_module("...")`` node may import."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, *([base] if base else [])])
        return [base] + [f"{base}.{a.name}" for a in node.names]
    if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
        "import_module",
        "find_spec",
        "__import__",
    ):  # importlib.import_module("downstream.methods") imports as much as an import statement
        return [a.value for a in node.args[:1] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    return []


def _in_function(tree: ast.AST) -> set[int]:
    """ids of the nodes that sit inside a function body (the function-local imports)."""
    inside: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            inside.update(id(n) for n in ast.walk(fn) if n is not fn)
    return inside


def _lazy_exports(tree: ast.Module) -> set[int]:
    """ids of the nodes inside a module-level ``__getattr__`` (PEP 562): a package's lazy re-exports."""
    return {
        id(n)
        for fn in tree.body
        if isinstance(fn, ast.FunctionDef) and fn.name == "__getattr__"
        for n in ast.walk(fn)
        if n is not fn
    }


def import_graph(modules: dict[str, Path] | None = None, root: Path = ROOT) -> nx.DiGraph:
    """Edges module → every project module its code imports anywhere (top level, inside functions, or by
    ``importlib.import_module`` with a literal name); each edge keeps ``where`` (``path:line``) and ``local``.

    Importing ``a.b.c`` runs ``a/__init__``, ``a/b/__init__`` and ``a/b/c``, so each of them is an edge target;
    ``from a.b import c`` targets ``a.b.c`` when that is a module. A package's module-level ``__getattr__``
    (PEP 562, e.g. ``lvmmed.models`` loading its factory on first use) runs only when an importer asks the package
    for a name it does not define, so its imports are edges of those importers (``from a import name`` that is
    not a submodule, or ``import a``), not of the package: running ``a/__init__`` does not run them.
    """
    modules = _modules() if modules is None else modules
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)

    def targets(name: str) -> list[str]:
        parts = name.split(".")
        return [".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in modules]

    trees = {name: ast.parse(path.read_text(encoding="utf-8"), str(path)) for name, path in modules.items()}
    packages = {name: name if path.name == "__init__.py" else name.rpartition(".")[0] for name, path in modules.items()}
    lazy: dict[str, list[tuple[str, ast.AST]]] = {}  # package -> (target, node) of its __getattr__ imports
    for name, tree in trees.items():
        inside = _lazy_exports(tree)
        for node in ast.walk(tree):
            if id(node) in inside:
                lazy.setdefault(name, []).extend(
                    (t, node) for imported in _imported_names(node, packages[name]) for t in targets(imported)
                )

    def add(name: str, target: str, node: ast.AST, local: bool, via: str = "") -> None:
        if target != name and not name.startswith(f"{target}."):  # a package's own parents run first
            where = f"{modules[name].relative_to(root)}:{node.lineno}"
            graph.add_edge(name, target, where=where, local=local, via=via)

    for name, tree in trees.items():
        local, lazy_nodes = _in_function(tree), _lazy_exports(tree)
        for node in ast.walk(tree):
            if id(node) in lazy_nodes:
                continue
            for imported in _imported_names(node, packages[name]):
                for target in targets(imported):
                    add(name, target, node, id(node) in local)
            asked = []  # packages asked for a name they may only have through __getattr__
            if isinstance(node, ast.ImportFrom):
                base = (_imported_names(node, packages[name]) or [""])[0]
                if base in lazy and any(f"{base}.{a.name}" not in modules for a in node.names):
                    asked.append(base)
            elif isinstance(node, ast.Import):
                asked += [a.name for a in node.names if a.name in lazy]
            for package in asked:
                for target, lazy_node in lazy[package]:
                    via = f"{modules[package].relative_to(root)}:{lazy_node.lineno}"
                    add(name, target, node, id(node) in local, via=f"through {package}.__getattr__, {via}")
    return graph


def describe(graph: nx.DiGraph, cycle: list[str]) -> str:
    """``a → b (a.py:12, in a function) → a (b.py:3)``: every edge of a circle with the line that makes it."""
    steps = []
    for a, b in zip(cycle, [*cycle[1:], cycle[0]], strict=True):
        edge = graph.edges[a, b]
        notes = [edge["where"], *(["in a function"] if edge["local"] else []), *([edge["via"]] if edge["via"] else [])]
        steps.append(f"→ {b} ({', '.join(notes)})")
    return " ".join([cycle[0], *steps])


def test_graph_sees_real_edges():
    graph = import_graph()
    assert graph.has_edge("downstream.registry", "downstream.methods.linear")
    assert graph.has_edge("downstream.methods.linear", "downstream.contract")
    assert graph.has_edge("pretrain.ablation", "pretrain.ablation_report")
    assert graph.has_edge("bench.docs", "bench.summary")
    assert graph.has_edge("demo.run", "lvmmed.config")
    # lvmmed.models loads its factory in a PEP 562 __getattr__: an edge of who asks for create_backbone
    assert not graph.has_edge("lvmmed.models", "lvmmed.models.factory")
    assert graph.edges["lvmmed", "lvmmed.models.factory"]["local"]  # lvmmed.create_backbone's lazy alias


def test_function_local_imports_and_circles_are_seen(tmp_path):
    """A circle closed by an import inside a function is still a circle, and the report names that line."""
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from a import g\n    return g\n")
    graph = import_graph({"a": tmp_path / "a.py", "b": tmp_path / "b.py"}, root=tmp_path)
    assert graph.edges["b", "a"]["local"] and not graph.edges["a", "b"]["local"]
    assert [describe(graph, c) for c in nx.simple_cycles(graph)] in (
        ["a → b (a.py:1) → a (b.py:2, in a function)"],
        ["b → a (b.py:2, in a function) → b (a.py:1)"],
    )


def test_lazy_package_attributes_are_edges_of_the_importers_that_ask_for_them(tmp_path):
    """PEP 562: ``pkg.__getattr__`` imports ``pkg.heavy`` only for a name ``pkg`` does not define. Importing the
    submodule ``pkg.base`` runs ``pkg/__init__`` but not that function; asking ``pkg`` for the lazy name does."""
    (tmp_path / "pkg").mkdir()
    files = {
        "pkg": (
            "pkg/__init__.py",
            "import importlib\ndef __getattr__(name):\n    return importlib.import_module('pkg.heavy')\n",
        ),
        "pkg.base": ("pkg/base.py", ""),
        "pkg.heavy": ("pkg/heavy.py", "import light\n"),
        "light": ("light.py", "from pkg.base import X\n"),
        "user": ("user.py", "from pkg import heavy_thing\n"),
    }
    for rel, text in files.values():
        (tmp_path / rel).write_text(text)
    graph = import_graph({name: tmp_path / rel for name, (rel, _) in files.items()}, root=tmp_path)
    assert not graph.has_edge("pkg", "pkg.heavy") and graph.has_edge("light", "pkg")
    assert graph.edges["user", "pkg.heavy"]["via"] == "through pkg.__getattr__, pkg/__init__.py:3"
    assert list(nx.simple_cycles(graph)) == []
    (tmp_path / "light.py").write_text("from pkg import heavy_thing\n")  # now light asks pkg for the lazy name
    graph = import_graph({name: tmp_path / rel for name, (rel, _) in files.items()}, root=tmp_path)
    assert sorted(map(sorted, nx.simple_cycles(graph))) == [["light", "pkg.heavy"]]


def test_whole_tree_has_no_import_cycle():
    graph = import_graph()
    cycles = sorted(nx.simple_cycles(graph), key=len)
    if cycles:
        pytest.fail(
            f"{len(cycles)} import circles, shortest first:\n" + "\n".join(describe(graph, c) for c in cycles[:10])
        )


def test_contract_imports_nothing_from_downstream():
    assert list(import_graph().successors("downstream.contract")) == []
