"""Noise-averaged (I-MLE / perturb-and-MAP) black-box gradient: reduces to the plain rule, spreads over partners."""

from __future__ import annotations

import torch

from lvmmed.matching.blackbox import blackbox_match
from lvmmed.matching.perturbed import PerturbedBlackBoxMatching
from lvmmed.matching.solvers import SolverSpec

SPEC = SolverSpec("factorized", "ipfp")


def _hamming(x: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(x.shape[0])
    return (x * (1 - eye) + (1 - x) * eye).sum() / (2 * x.shape[0])


def _grads(make_qap, seed: int, samples: int, noise: float, n: int = 12):
    qap = make_qap(n, k=3, seed=seed)
    cv = (qap.cv + 0.2 * torch.eye(n)).requires_grad_()
    ce = (qap.dense_ce() * 0.1).requires_grad_()
    eye_q = torch.eye(ce.shape[1])
    if samples == 0:
        x = blackbox_match(cv, ce, eye_q, qap.nbr1, qap.nbr2, SPEC, lambda_val=0.5)
    else:
        x = PerturbedBlackBoxMatching.apply(cv, ce, eye_q, qap.nbr1, qap.nbr2, SPEC, 0.5, True, {}, samples, noise)
    loss = _hamming(x)
    loss.backward()
    return loss.item(), cv.grad, ce.grad


def test__without_noise_it_is_the_plain_blackbox_gradient(make_qap):
    for seed in range(5):
        loss, g_cv, g_ce = _grads(make_qap, seed, samples=1, noise=0.0)
        loss_ref, ref_cv, ref_ce = _grads(make_qap, seed, samples=0, noise=0.0)
        assert loss == loss_ref
        assert torch.allclose(g_cv, ref_cv) and torch.allclose(g_ce, ref_ce)


def test__noise_spreads_the_push_over_more_wrong_partners_and_keeps_the_sign(make_qap):
    torch.manual_seed(0)
    dense, plain = 0, 0
    for seed in range(10):
        _, g_noisy, _ = _grads(make_qap, seed, samples=8, noise=0.3)
        _, g_plain, _ = _grads(make_qap, seed, samples=0, noise=0.0)
        off = ~torch.eye(12, dtype=torch.bool)
        dense += int((g_noisy[off] > 0).sum())
        plain += int((g_plain[off] > 0).sum())
        # the identity entries are pulled up (negative gradient) on average, as in the plain rule
        assert torch.diagonal(g_noisy).sum() <= 0
    assert dense > plain, f"noise should push more wrong partners ({dense} vs {plain})"
