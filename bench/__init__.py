"""The benchmarks (``python bench/<name>.py [--quick]``, or ``python -m bench.<name>``): see ``bench/README.md``.

``bench`` is a package of the checkout, importable wherever the checkout is: ``make venv`` puts the checkout on the
venv's ``sys.path`` (``lvmmed-dev.pth``), and ``python -m`` from the repository root finds it in the working
directory. It is not part of the installed distribution (``pyproject.toml``): the scripts measure a checkout and
write into ``bench/results/``.

Run by path, a script gets its own directory, ``bench/``, as the first ``sys.path`` entry, where ``data_prep.py``,
``pretrain.py`` and ``downstream.py`` would stand in for the stages of the same names. Every script imports
``bench`` before any stage (``from bench._common import BenchRun`` sorts first), so that entry is dropped here,
once; run with ``-m`` the entry is the working directory and nothing changes.
"""

from __future__ import annotations

import sys
from pathlib import Path

if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]
