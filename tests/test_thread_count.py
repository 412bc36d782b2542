"""The session thread count of tests/conftest.py reaches torch, the BLAS/OpenMP pools and subprocesses.

Marked ``learning`` so that it also runs in `make test`'s 1-thread pass, where it proves that pass really ran at 1.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch


@pytest.mark.learning
def test_the_session_thread_count_reaches_torch_blas_and_subprocesses():
    from threadpoolctl import threadpool_info

    expected = int(os.environ.get("LVMMED_TEST_THREADS") or os.environ["OMP_NUM_THREADS"])
    assert os.environ["OMP_NUM_THREADS"] == str(expected)
    assert torch.get_num_threads() == expected
    pools = threadpool_info()
    assert all(pool["num_threads"] <= expected for pool in pools), pools
    code = "import os, torch; print(os.environ['OMP_NUM_THREADS'], torch.get_num_threads())"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    env_threads, torch_threads = map(int, child.stdout.split())
    assert env_threads == expected
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert torch_threads == min(expected, cores)  # torch caps OMP_NUM_THREADS at the usable cores
