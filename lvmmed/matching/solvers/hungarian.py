"""Linear assignment (Kuhn–Munkres / Hungarian) via scipy, and the first-order matching baseline.

``scipy.optimize.linear_sum_assignment`` runs on CPU (the score matrix is detached and copied); the returned
permutation is moved back to the input's device. Non-finite scores raise a clear ``ValueError`` instead of scipy's
generic message.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from lvmmed.matching.qap import QAP
from lvmmed.matching.solvers.result import Matching


def hungarian(scores: Tensor) -> Tensor:
    """Maximum-weight perfect matching of a square score matrix.

    Args:
        scores: (N, N) scores; larger is better.

    Returns:
        (N,) long tensor ``perm`` with ``X[i, perm[i]] = 1``, on the device of ``scores``.

    Raises:
        ValueError: if the matrix is not square or holds NaN/inf.
    """
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"hungarian expects a square matrix, got {tuple(scores.shape)}")
    array = scores.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(array).all():
        raise ValueError("hungarian: the score matrix contains NaN or inf (non-finite affinities)")
    _, cols = linear_sum_assignment(array, maximize=True)
    return torch.from_numpy(cols).to(scores.device)


def solve_first_order(qap: QAP) -> Matching:
    """The ablation baseline: Hungarian on the node affinity Cv only, ignoring the edge term.

    The reported objective is still the full second-order f(X), so solvers are comparable.
    """
    perm = hungarian(qap.cv)
    return Matching(perm=perm, objective=qap.objective(perm), iterations=1)
