"""Black-box differentiation of a combinatorial graph-matching solver (Vlastelica et al., ICLR 2020).

"Differentiation of Blackbox Combinatorial Solvers" (Vlastelica, Paulus, Musil, Martius, Rolínek; arXiv:1912.02175)
defines, for a solver ``y(w) = argmin_y ⟨w, y⟩``, the gradient of the piecewise-linear interpolation of the loss:
``w' = w + λ·∂L/∂y``, ``∇_w L ≈ −(y(w) − y(w'))/λ``. BB-GM (Rolínek et al., ECCV 2020) applies it to graph matching
with unary costs and quadratic (edge) costs. LVM-Med (Nguyen et al., NeurIPS 2023) back-propagates through its
GM solver "with modern gradient-estimation techniques"; which one is not stated, so we use this one.

Our solver *maximises* ``f(X) = ⟨Cv, X⟩ + ⟨Ce, Ye(X)⟩`` with ``Ye[p,q] = X[i,a]·X[j,b]``, so with ``c = −w``:

* forward: ``X̂ = solve(Cv, Ce)``;
* backward: ``Cv' = Cv − λ·∂L/∂X̂`` (Ce is unchanged because the loss depends on X̂ only), ``X̂' = solve(Cv', Ce)``;
  ``∂L/∂Cv = (X̂ − X̂')/λ`` and ``∂L/∂Ce = (Ŷe − Ŷe')/λ``.

Choices the papers leave open:

* ``normalize_perturbation`` (default on): λ is applied to ``∂L/∂X̂ / max|∂L/∂X̂|``, i.e. λ is the largest
  per-entry change of Cv in affinity units, independent of the batch size and of the loss reduction; the gradient
  is rescaled back, so this equals the plain rule with ``λ_eff = λ / max|∂L/∂X̂|``.
* Ce is never materialised: it is ``F1·F2ᵀ`` (see ``qap.py``), ``∂L/∂Ce`` is kept sparse (at most 2·|E1| non-zeros)
  and pushed through the product inside the backward pass (``∂L/∂F1 = G·F2``, ``∂L/∂F2 = Gᵀ·F1``). For a dense
  Ce pass ``F1 = Ce, F2 = I`` and the gradient w.r.t. F1 is exactly ``(Ŷe − Ŷe')/λ``.
* The solver runs in fp32 on detached inputs; gradients are returned in the input dtypes.
* **Warm-started backward re-solve** (``SolverSpec.warm_start``, default on, factorised solver only): the perturbed
  problem differs from the forward one by ``λ·∂L/∂X̂`` in Cv only, so its solution is searched by discrete IPFP
  (the forward solver's own ascent) started at X̂, instead of from scratch (Hungarian on Cv', IPFP from there and,
  for ``rrwm``, a second RRWM run). Every IPFP step is monotone in the perturbed objective, so X̂' is at least as
  good as X̂ for the perturbed problem, as the interpolation needs; each step costs one Hungarian call, and the
  cold solve's first Hungarian on Cv' (and the RRWM walks) are saved. ``SolverSpec.backward_max_iter`` (default
  1, ``loss.graph_matching.solver_backward_iter``) caps the steps: the perturbation moves Cv towards the ground
  truth by λ, and in ``bench/gm_loss.py`` the warm re-solve's second assignment call was the one that found no
  further improvement, so one step gives the same X̂' there for half the calls. ``stats["backward_solver_iters"]``
  counts the calls of the backward pass. BB-GM (Rolínek et al., ECCV 2020) re-solves from scratch; the warm start
  is our choice, for large N. Its first step linearises the perturbed problem at X̂, where the forward IPFP made its
  last linearisation; the perturbed problem is built with ``QAP.with_cv``, which shares the forward problem's cache,
  so that step replays the forward pass's pairwise terms on Cv' (bit-identical to recomputing them, see ``qap.py``).
  When the re-solve provably returns X̂ (``keeps_forward_solution``: X̂ was a fixed point of the forward IPFP and
  the perturbation favours X̂ in every row, e.g. X̂ = I for the Hamming loss) it is skipped: same result, no
  assignment call (``backward_solver_iters`` = 0).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lvmmed.matching.qap import QAP
from lvmmed.matching.solvers import SolverSpec, solve
from lvmmed.matching.solvers.factorized import ipfp


def edge_gradient(qap: QAP, perm: Tensor, sign: float, grad_f1: Tensor, grad_f2: Tensor, scale: float) -> None:
    """Adds ``sign·scale·Ŷe(perm)`` pushed through ``Ce = F1 F2ᵀ`` to the factor gradients (in place)."""
    p, q = qap.edge_matches(perm)
    if p.numel() == 0:
        return
    grad_f1.index_add_(0, p, qap.f2[q], alpha=sign * scale)
    grad_f2.index_add_(0, q, qap.f1[p], alpha=sign * scale)


def resolve_from(qap: QAP, start: Tensor, spec: SolverSpec) -> Any:
    """The backward re-solve: IPFP warm-started from ``start`` (the forward solution) when ``spec.warm_start`` and
    the solver is the factorised one, else a cold solve with ``spec``. Returns the solver's result."""
    if spec.name == "factorized" and spec.warm_start:
        return ipfp(qap, start, spec.backward_max_iter, spec.assignment)
    return solve(qap, spec)


def keeps_forward_solution(qap: QAP, perm: Tensor, fixed_point: bool, spec: SolverSpec, perturbed_cv: Tensor) -> bool:
    """Whether the warm re-solve on ``perturbed_cv`` provably returns the forward solution X̂ (so it can be skipped).

    True when X̂ is a fixed point of the forward IPFP (an optimal assignment of the linearisation L at X̂) and the
    perturbation δ = Cv' − Cv is largest at X̂'s entry in every row, by a margin above the rounding of L' = L + δ:
    any other permutation differs from X̂ in at least two rows, so it loses at least twice that margin on L', the
    re-solve's projection returns X̂ and the step is rejected. For the Hamming loss (δ = λ(2I − 1)) this happens
    exactly when X̂ is the identity. The skipped re-solve would have given the same X̂' = X̂, hence the same (zero)
    gradient; it saves one assignment call.
    """
    if not (fixed_point and spec.name == "factorized" and spec.warm_start):
        return False
    if qap.n < 2:
        return True  # one permutation only
    rows = torch.arange(qap.n, device=perm.device)
    delta = perturbed_cv - qap.cv
    rivals = delta.clone()
    rivals[rows, perm] = float("-inf")
    margin = float((delta[rows, perm] - rivals.max(dim=1).values).min())
    if not margin > 0:
        return False
    rounding = 1e-5 * qap.n * float(qap.with_cv(perturbed_cv).linearize(perm).abs().max())  # a cached replay
    return margin > rounding


class MatchingFunction(torch.autograd.Function):
    """The forward pass shared by the black-box autograd functions; subclasses define only ``backward``.

    ``apply(cv, f1, f2, nbr1, nbr2, spec, lambda_val, normalize, stats[, samples, noise])``, the one signature of
    :class:`BlackBoxMatching` and :class:`~lvmmed.matching.perturbed.PerturbedBlackBoxMatching`:

    Args (of ``apply``):
        cv: (N, N) node affinity (differentiable).
        f1, f2: edge factors, ``Ce = f1 @ f2.T`` (differentiable).
        nbr1, nbr2: (N, k) neighbour tables of the two graphs (structure; not differentiated).
        spec: the ``SolverSpec`` to use in both passes.
        lambda_val: interpolation strength λ > 0.
        normalize: whether λ is relative to ``max|∂L/∂X̂|`` (see module docstring).
        stats: a dict that receives ``objective``, ``solver_iters`` (forward), ``backward_changed`` and
            ``backward_solver_iters`` (backward).
        samples: S ≥ 1 noise samples of the backward pass (perturbed gradient only).
        noise: σ ≥ 0, the scale of their Gumbel noise in cosine units (perturbed gradient only).

    Returns:
        The (N, N) 0/1 permutation matrix X̂ in ``cv``'s dtype. The solve, its stats and everything the backward
        pass needs (``ctx.qap``, ``ctx.perm``, ``ctx.spec``, ``ctx.fixed_point``, ``ctx.lambda_val``,
        ``ctx.normalize``, ``ctx.stats``, ``ctx.samples``, ``ctx.noise``, ``ctx.dtypes``) are kept on ``ctx``.
    """

    @staticmethod
    def forward(
        ctx: Any,
        cv: Tensor,
        f1: Tensor,
        f2: Tensor,
        nbr1: Tensor,
        nbr2: Tensor,
        spec: SolverSpec,
        lambda_val: float,
        normalize: bool,
        stats: dict[str, float],
        samples: int = 1,
        noise: float = 0.0,
    ) -> Tensor:
        if lambda_val <= 0 or samples < 1 or noise < 0:
            raise ValueError(f"need lambda_val > 0, samples >= 1, noise >= 0; got {lambda_val}, {samples}, {noise}")
        qap = QAP(cv, f1, f2, nbr1, nbr2)
        matching = solve(qap, spec)
        stats["objective"] = matching.objective
        stats["solver_iters"] = float(matching.iterations)
        ctx.qap, ctx.perm, ctx.spec, ctx.fixed_point = qap, matching.perm, spec, matching.fixed_point
        ctx.lambda_val, ctx.normalize, ctx.stats = lambda_val, normalize, stats
        ctx.samples, ctx.noise = samples, noise
        ctx.dtypes = (cv.dtype, f1.dtype, f2.dtype)
        return matching.matrix(dtype=cv.dtype)


class BlackBoxMatching(MatchingFunction):
    """``X̂ = BlackBoxMatching.apply(cv, f1, f2, nbr1, nbr2, spec, lambda_val, normalize, stats)``.

    The arguments and output are :class:`MatchingFunction`'s (without ``samples`` and ``noise``); the backward pass
    is the plain black-box interpolation gradient of one re-solve.
    """

    @staticmethod
    def backward(ctx: Any, grad_x: Tensor) -> tuple[Tensor | None, ...]:
        qap: QAP = ctx.qap
        g = grad_x.detach().float()
        grad_cv = torch.zeros_like(qap.cv)
        grad_f1 = torch.zeros_like(qap.f1)
        grad_f2 = torch.zeros_like(qap.f2)
        g_max = float(g.abs().max()) if g.numel() else 0.0
        changed = 0.0
        if g_max > 0 and torch.isfinite(g).all():
            g_scale = g_max if ctx.normalize else 1.0
            perturbed_cv = qap.cv - ctx.lambda_val * g / g_scale
            if keeps_forward_solution(qap, ctx.perm, ctx.fixed_point, ctx.spec, perturbed_cv):
                perturbed, iterations = ctx.perm, 0
            else:
                result = resolve_from(qap.with_cv(perturbed_cv), ctx.perm, ctx.spec)
                perturbed, iterations = result.perm, result.iterations
            ctx.stats["backward_solver_iters"] = float(iterations)
            scale = g_scale / ctx.lambda_val
            n = qap.n
            rows = torch.arange(n, device=grad_cv.device)
            grad_cv[rows, ctx.perm] += scale
            grad_cv[rows, perturbed] -= scale
            edge_gradient(qap, ctx.perm, 1.0, grad_f1, grad_f2, scale)
            edge_gradient(qap, perturbed, -1.0, grad_f1, grad_f2, scale)
            changed = float((perturbed != ctx.perm).float().mean())
        ctx.stats["backward_changed"] = changed
        dt_cv, dt_f1, dt_f2 = ctx.dtypes
        return grad_cv.to(dt_cv), grad_f1.to(dt_f1), grad_f2.to(dt_f2), None, None, None, None, None, None


def blackbox_match(
    cv: Tensor,
    f1: Tensor,
    f2: Tensor,
    nbr1: Tensor,
    nbr2: Tensor,
    spec: SolverSpec | None = None,
    lambda_val: float = 1.0,
    normalize: bool = True,
    stats: dict[str, float] | None = None,
) -> Tensor:
    """Functional form of ``BlackBoxMatching`` (see its docstring)."""
    return BlackBoxMatching.apply(
        cv, f1, f2, nbr1, nbr2, spec or SolverSpec(), lambda_val, normalize, {} if stats is None else stats
    )
