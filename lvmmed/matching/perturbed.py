"""Noise-averaged black-box gradient of the graph-matching solver (perturb-and-MAP + Vlastelica interpolation).

The plain black-box gradient (``blackbox.py``; Vlastelica et al., ICLR 2020) is ``(X̂ − X̂')/λ`` for *one* pair of
solutions. When the matching is far from the ground truth, as at the start of self-supervised pretraining, the
wrong partner X̂ picks for a row is one of many near-ties: the "push apart" half of that gradient points in a
random direction each step, while its "pull together" half (the identity entries) is consistent. What accumulates
is alignment without any force that spreads the embeddings, and the representation collapses (measured on the
tiny preset: off-diagonal cosines rise from ≈0 to ≈0.7 while the matching accuracy stays at chance).

Implicit MLE (Niepert, Minervini & Franceschi, NeurIPS 2021; Niepert is an author of LVM-Med, whose paper says
only that it back-propagates through the solver "with modern gradient-estimation techniques") replaces the one
pair of solutions by their expectations under perturb-and-MAP noise (Papandreou & Yuille, ICCV 2011):

    ∂L/∂Cv ≈ (1/S) Σ_s [X̂(Cv + ε_s) − X̂(Cv + ε_s − λ·∂L/∂X̂)] / λ,    ε_s ~ σ·Gumbel(0, 1) i.i.d. per entry,

with the same noise ε_s in both solves (I-MLE's variance reduction), and the same for Ce through Ŷe. The
expectation of a perturbed matching is a *soft* matching whose spread is set by σ (the temperature of the vertex
affinity, in cosine units): every plausible wrong partner is pushed a little instead of one arbitrary one, which
is the uniformity that the single-sample gradient lacks. σ → 0 and S = 1 recovers the plain black-box gradient.
The forward output is the unperturbed solution, so the reported Hamming loss and matching accuracy are unchanged.

Choices left open by the papers, made configurable in ``GraphMatchingConfig``: ``perturb_samples`` (S),
``perturb_noise`` (σ) and the noise family (Gumbel, as for perturb-and-MAP on assignment problems).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lvmmed.matching.blackbox import MatchingFunction, edge_gradient, resolve_from
from lvmmed.matching.qap import QAP
from lvmmed.matching.solvers import solve


def gumbel_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard Gumbel(0, 1) noise of ``x``'s shape (fp32, on ``x``'s device)."""
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float32).clamp_(1e-10, 1 - 1e-10)
    return -torch.log(-torch.log(u))


class PerturbedBlackBoxMatching(MatchingFunction):
    """``X̂ = PerturbedBlackBoxMatching.apply(cv, f1, f2, nbr1, nbr2, spec, lambda_val, normalize, stats, S, σ)``.

    The arguments and output are :class:`~lvmmed.matching.blackbox.MatchingFunction`'s, with ``samples`` (S ≥ 1)
    and ``noise`` (σ ≥ 0, cosine units). The backward pass averages the interpolation gradient over S Gumbel
    perturbations of Cv (2·S solves; the noise is drawn from torch's global generator, so it is seeded).
    """

    @staticmethod
    def backward(ctx: Any, grad_x: Tensor) -> tuple[Tensor | None, ...]:
        qap: QAP = ctx.qap
        g = grad_x.detach().float()
        grad_cv, grad_f1, grad_f2 = torch.zeros_like(qap.cv), torch.zeros_like(qap.f1), torch.zeros_like(qap.f2)
        g_max = float(g.abs().max()) if g.numel() else 0.0
        changed = 0.0
        if g_max > 0 and torch.isfinite(g).all():
            g_scale = g_max if ctx.normalize else 1.0
            scale = g_scale / (ctx.lambda_val * ctx.samples)
            rows = torch.arange(qap.n, device=grad_cv.device)
            for _ in range(ctx.samples):
                noisy = qap.cv + ctx.noise * gumbel_like(qap.cv) if ctx.noise > 0 else qap.cv
                perm = solve(qap.with_cv(noisy), ctx.spec).perm if ctx.noise > 0 else ctx.perm
                target = resolve_from(qap.with_cv(noisy - ctx.lambda_val * g / g_scale), perm, ctx.spec).perm
                grad_cv[rows, perm] += scale
                grad_cv[rows, target] -= scale
                edge_gradient(qap, perm, 1.0, grad_f1, grad_f2, scale)
                edge_gradient(qap, target, -1.0, grad_f1, grad_f2, scale)
                changed += float((target != perm).float().mean()) / ctx.samples
        ctx.stats["backward_changed"] = changed
        dt_cv, dt_f1, dt_f2 = ctx.dtypes
        return (grad_cv.to(dt_cv), grad_f1.to(dt_f1), grad_f2.to(dt_f2), *([None] * 8))
