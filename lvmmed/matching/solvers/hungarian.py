"""Linear assignment (exact maximum-weight perfect matching) and the first-order matching baseline.

Two exact solvers behind one function, ``hungarian(scores, backend)``:

* ``"lapjv"`` (default): lapx's ``lapjvr``, the shortest-augmenting-path algorithm of Jonker & Volgenant ("A
  Shortest Augmenting Path Algorithm for Dense and Sparse Linear Assignment Problems", Computing 38, 1987;
  https://github.com/rathaROG/lapx). Its initialisation (column reduction, augmenting row reduction) assigns most
  rows before any augmenting path is searched; on the graph-matching loss's own score matrices it is several times
  faster than scipy at N = 256…1024 (``bench/gm_loss.py``: ``solver_breakdown``, and the ``gm-loss-speed`` block
  of docs/graph_matching.md).
* ``"scipy"``: ``scipy.optimize.linear_sum_assignment`` (Crouse's shortest augmenting path, 2016), the backend of
  every earlier version of this module.

Both are exact: they return an optimal assignment, and the same one whenever the optimum is unique (any input
without exact ties; float32 costs are used as they are, with float64 potentials, and float64 costs stay float64).
With ties (e.g. duplicated rows) each breaks them deterministically but possibly differently. Both run on CPU (the
score matrix is detached and copied when it lives elsewhere); the permutation is moved back to the input's device.
Non-finite scores raise a clear ``ValueError``.
"""

from __future__ import annotations

import lap
import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from lvmmed.matching.qap import QAP
from lvmmed.matching.solvers.result import Matching

ASSIGNMENT_BACKENDS = ("lapjv", "scipy")


def _check_backend(backend: str) -> None:
    if backend not in ASSIGNMENT_BACKENDS:
        raise ValueError(f"unknown assignment backend '{backend}' (expected one of {ASSIGNMENT_BACKENDS})")


def hungarian(scores: Tensor, backend: str = "lapjv") -> Tensor:
    """Maximum-weight perfect matching of a square score matrix.

    Args:
        scores: (N, N) scores; larger is better.
        backend: ``"lapjv"`` (lapx's Jonker–Volgenant solver) or ``"scipy"`` (``linear_sum_assignment``).

    Returns:
        (N,) long tensor ``perm`` with ``X[i, perm[i]] = 1``, on the device of ``scores``.

    Raises:
        ValueError: if the matrix is not square, holds NaN/inf, or the backend is unknown.
    """
    _check_backend(backend)
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"hungarian expects a square matrix, got {tuple(scores.shape)}")
    dtype = scores.dtype if scores.dtype in (torch.float32, torch.float64) else torch.float64
    values = scores.detach().to("cpu", dtype).numpy()
    if not np.isfinite(values).all():  # numpy's check: ~20× faster than torch's on a CPU copy this size
        raise ValueError("hungarian: the score matrix contains NaN or inf (non-finite affinities)")
    if backend == "scipy":
        _, cols = linear_sum_assignment(values.astype(np.float64), maximize=True)
    else:
        # lapjvr minimises; negation is exact. Its rows come back sorted (0…N−1), so cols is the permutation.
        _, cols = lap.lapjvr(np.ascontiguousarray(-values), return_cost=False)
    return torch.from_numpy(np.asarray(cols, dtype=np.int64)).to(scores.device)


def solve_first_order(qap: QAP, backend: str = "lapjv") -> Matching:
    """The ablation baseline: Hungarian on the node affinity Cv only, ignoring the edge term.

    The reported objective is still the full second-order f(X), so solvers are comparable.
    """
    perm = hungarian(qap.cv, backend)
    return Matching(perm=perm, objective=qap.objective(perm), iterations=1)
