"""Graph-matching solvers that use only the factorised QAP operator (``lvmmed.matching.qap.QAP``).

* ``ipfp``: Integer Projected Fixed Point (Leordeanu, Hebert & Sukthankar, NeurIPS 2009) restricted to discrete
  iterates: starting from a permutation, repeatedly take the Hungarian projection of the gradient
  ``Cv + (Q + Qᵀ)x`` and accept it while the objective increases. Every step is monotone, so the result is never
  worse than its start. At discrete iterates the gradient costs O(N·k²·r) (see ``QAP.linearize``), which is what
  makes the loss fast at SSL batch sizes. The original IPFP also allows a continuous line-search step; we keep
  only full steps (a choice: it stays discrete and cheap).
* ``rrwm``: Reweighted Random Walks (Cho, Lee & Lee, ECCV 2010), written to follow pygmtools' implementation
  step by step (same normalisation by the largest row sum of K, uniform start, α=0.2, β=30, 20 log-domain
  Sinkhorn iterations, 50 walks) but through ``QAP.matvec``; O(|E1|·|E2|) memory and time per walk instead of
  O(N⁴). Its soft output is projected with Hungarian and then polished by ``ipfp``.

``solve_factorized`` also starts IPFP from the first-order solution (Hungarian on Cv) and keeps the best matching
(the ``restarts`` are a choice of ours; they make the result never worse than the first-order baseline).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lvmmed.matching.qap import QAP
from lvmmed.matching.solvers.hungarian import hungarian
from lvmmed.matching.solvers.result import Matching


def ipfp(qap: QAP, perm: Tensor, max_iter: int = 50, backend: str = "lapjv") -> Matching:
    """Discrete IPFP ascent from ``perm``.

    Args:
        qap: the instance.
        perm: (N,) starting permutation.
        max_iter: maximum number of linearise-and-project steps.
        backend: the linear-assignment solver (``hungarian.ASSIGNMENT_BACKENDS``).

    Returns:
        The last accepted matching; ``iterations`` counts the Hungarian projections made.
    """
    best = qap.objective(perm)
    iterations, fixed_point = 0, False
    for _ in range(max_iter):
        candidate = hungarian(qap.linearize(perm), backend)
        iterations += 1
        if torch.equal(candidate, perm):
            fixed_point = True  # its objective is ``best`` exactly, so the step would be rejected anyway
            break
        value = qap.objective(candidate)
        if value <= best + 1e-6 * max(1.0, abs(best)):
            break
        perm, best = candidate, value
    return Matching(perm=perm, objective=best, iterations=iterations, fixed_point=fixed_point)


def _log_sinkhorn(s: Tensor, iterations: int) -> Tensor:
    """pygmtools' log-domain Sinkhorn (τ = 1): even steps normalise rows, odd steps columns."""
    log_s = s
    for i in range(iterations):
        log_s = log_s - torch.logsumexp(log_s, dim=1 if i % 2 == 0 else 0, keepdim=True)
    return log_s.exp()


@torch.no_grad()
def rrwm(qap: QAP, max_iter: int = 50, sk_iter: int = 20, alpha: float = 0.2, beta: float = 30.0) -> tuple[Tensor, int]:
    """Reweighted random walks on the factorised Lawler matrix.

    Returns:
        The soft (N, N) assignment and the number of walks taken.
    """
    n = qap.n
    row_sums = qap.row_sums()
    scale = row_sums.max() + row_sums.min() * 1e-5
    v = torch.full((n, n), 1.0 / (n * n), dtype=torch.float32, device=qap.cv.device)
    walks = 0
    for _ in range(max_iter):
        walks += 1
        v = qap.matvec(v) / scale
        last_v = v
        v = v / v.abs().sum()
        s = beta * v / v.max()
        v = alpha * _log_sinkhorn(s, sk_iter) + (1 - alpha) * v
        v = v / v.abs().sum()
        if torch.linalg.vector_norm(v - last_v) < 1e-5:
            break
    return v, walks


@torch.no_grad()
def solve_factorized(
    qap: QAP,
    method: str = "ipfp",
    max_iter: int = 50,
    backend: str = "lapjv",
    rrwm_iter: int = 50,
    sk_iter: int = 20,
    alpha: float = 0.2,
    beta: float = 30.0,
) -> Matching:
    """Solves the QAP without materialising K.

    Args:
        qap: the instance.
        method: ``"ipfp"`` (IPFP from the first-order solution; fast, the training default) or ``"rrwm"``
            (RRWM → Hungarian → IPFP, plus IPFP from the first-order solution; best objective, O(N²k²) per walk).
        max_iter: IPFP steps.
        backend: the linear-assignment solver of every projection (``"lapjv"`` or ``"scipy"``; both exact).
        rrwm_iter, sk_iter, alpha, beta: RRWM parameters (pygmtools defaults).

    Returns:
        The best matching found; ``iterations`` sums RRWM walks and IPFP steps.
    """
    if method not in ("ipfp", "rrwm"):
        raise ValueError(f"unknown factorized method '{method}' (expected 'ipfp' or 'rrwm')")
    best = ipfp(qap, hungarian(qap.cv, backend), max_iter, backend)
    iterations = best.iterations + 1
    if method == "rrwm" and qap.n > 1:
        soft, walks = rrwm(qap, rrwm_iter, sk_iter, alpha, beta)
        polished = ipfp(qap, hungarian(soft, backend), max_iter, backend)
        iterations += walks + polished.iterations + 1
        if polished.objective > best.objective:
            best = polished
    return Matching(perm=best.perm, objective=best.objective, iterations=iterations, fixed_point=best.fixed_point)
