"""The benchmarks run as ``python bench/<name>.py`` and as ``python -m bench.<name>`` from any directory, with
the checkout on ``sys.path`` the way ``make venv`` puts it there (``lvmmed-dev.pth``), and no script edits
``sys.path`` itself (``bench/__init__.py`` drops the script-directory entry that would shadow the stages)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("form", ["path", "module"])
def test_a_bench_that_imports_a_stage_named_like_a_bench_script_starts_from_another_directory(tmp_path, form):
    # bench/storage.py imports the data_prep stage; bench/data_prep.py is a script of the same name beside it
    args = [str(REPO / "bench" / "storage.py"), "--help"] if form == "path" else ["-m", "bench.storage", "--help"]
    result = _run(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--quick" in result.stdout


def test_bench_package_is_the_checkouts_and_no_script_edits_sys_path():
    result = _run(
        ["-c", "import bench, data_prep; print(bench.__file__); print(data_prep.__file__)"], cwd=REPO / "bench"
    )
    assert result.stdout.split() == [str(REPO / "bench" / "__init__.py"), str(REPO / "data_prep" / "__init__.py")]
    editors = []
    for path in sorted((REPO / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys":
                editors.append(f"{path.name}:{node.lineno}")
    assert [e for e in editors if not e.startswith("__init__.py:")] == []


def test_every_script_imports_bench_before_a_stage():
    """Run by path, a stage import before ``import bench`` would find bench/<stage>.py instead of the stage."""
    late = []
    for path in sorted((REPO / "bench").glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            roots = {n.split(".")[0] for n in names}
            if "bench" in roots:
                break
            if roots & {"data_prep", "pretrain", "downstream", "demo"}:
                late.append(f"{path.name}:{node.lineno}")
                break
    assert late == []
