"""The library never imports a stage: every arrow points from a stage (or the demo) down into ``lvmmed``.

Parses every module under ``lvmmed/`` (no import is executed), including function-local imports and
``importlib.import_module("...")`` / ``__import__("...")`` calls with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STAGES = ("data_prep", "pretrain", "downstream", "demo")


def stage_imports(source: str, filename: str = "<src>") -> list[tuple[int, str]]:
    """``(line, module)`` of every absolute import of a stage package in ``source``."""
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
        found += [(node.lineno, name) for name in names if name.split(".")[0] in STAGES]
    return sorted(found)


def test_detector_sees_every_import_form():
    source = (
        "import os\nimport downstream.run\nfrom lvmmed import config\n"
        "def f():\n    from data_prep.demo import run_demo\n    import importlib\n"
        "    importlib.import_module('pretrain.config')\n    return __import__('demo')\n"
        "from . import sibling\nimport demos\n"
    )
    assert stage_imports(source) == [(2, "downstream.run"), (5, "data_prep.demo"), (7, "pretrain.config"), (8, "demo")]


@pytest.mark.parametrize("path", sorted((REPO / "lvmmed").rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_library_module_imports_no_stage(path):
    hits = stage_imports(path.read_text(encoding="utf-8"), str(path))
    assert not hits, f"{path.relative_to(REPO)} imports a stage: " + ", ".join(f"line {n}: {m}" for n, m in hits)
