"""Arrows point down only: ``demo`` → the stages → ``lvmmed``.

The library never imports a stage, and the stages (``data_prep``, ``pretrain``, ``downstream``) meet only through
``lvmmed``: none imports another stage or the demo. Parses every module (no import is executed), including
function-local imports and ``importlib.import_module("...")`` / ``__import__("...")`` calls with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAGES = ("data_prep", "pretrain", "downstream", "demo")


def stage_imports(source: str, filename: str = "<src>", allowed: str = "") -> list[tuple[int, str]]:
    """``(line, module)`` of every absolute import of a stage package other than ``allowed`` in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        found += [(node.lineno, name) for name in names if name.split(".")[0] in set(STAGES) - {allowed}]
    return sorted(found)


def test_detector_sees_every_import_form():
    source = (
        "import os\nimport downstream.run\nfrom lvmmed import config\n"
        "def f():\n    from data_prep.demo import run_demo\n    import importlib\n"
        "    importlib.import_module('pretrain.config')\n    return __import__('demo')\n"
        "from . import sibling\nimport demos\n"
    )
    assert stage_imports(source) == [(2, "downstream.run"), (5, "data_prep.demo"), (7, "pretrain.config"), (8, "demo")]


def _hits(package: str, allowed: str = "") -> list[str]:
    paths = sorted((REPO / package).rglob("*.py"))
    assert paths, f"no modules under {package}/"
    return [
        f"{path.relative_to(REPO)}:{line}: imports {module}"
        for path in paths
        for line, module in stage_imports(path.read_text(encoding="utf-8"), str(path), allowed)
    ]


def test_library_imports_no_stage():
    hits = _hits("lvmmed")
    assert not hits, "the library imports a stage:\n" + "\n".join(hits)


@pytest.mark.parametrize("stage", STAGES[:3])
def test_stage_imports_no_other_stage(stage):
    hits = _hits(stage, allowed=stage)
    assert not hits, f"{stage} imports another stage (stages meet only through lvmmed):\n" + "\n".join(hits)
