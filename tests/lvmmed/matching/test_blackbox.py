"""Black-box (Vlastelica et al. 2020) gradients through the matching solver: signs, zeros, and the Ce rule."""

from __future__ import annotations

import pytest
import torch

from lvmmed.matching.blackbox import blackbox_match
from lvmmed.matching.qap import QAP
from lvmmed.matching.solvers import SolverSpec, solve

SPEC = SolverSpec("factorized", "ipfp")


def _hamming(x: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(x.shape[0])
    return (x * (1 - eye) + (1 - x) * eye).sum() / (2 * x.shape[0])


def _instance(make_qap, n: int, seed: int, diagonal: float):
    qap = make_qap(n, k=3, seed=seed)
    cv = (qap.cv + diagonal * torch.eye(n)).requires_grad_()
    ce = (qap.dense_ce() * 0.1).requires_grad_()
    return qap, cv, ce, torch.eye(ce.shape[1])


@pytest.mark.learning
def test__one_sgd_step_along_the_gradient_lowers_the_hamming_loss(make_qap):
    improved, wrong = 0, 0
    lam = 0.5
    for seed in range(20):
        qap, cv, ce, eye_q = _instance(make_qap, 12, seed, diagonal=0.3)
        x = blackbox_match(cv, ce, eye_q, qap.nbr1, qap.nbr2, SPEC, lambda_val=lam)
        loss = _hamming(x)
        if loss.item() == 0:
            continue
        wrong += 1
        loss.backward()
        step = lam / cv.grad.abs().max()
        with torch.no_grad():
            x_new = blackbox_match(cv - step * cv.grad, ce - step * ce.grad, eye_q, qap.nbr1, qap.nbr2, SPEC)
        improved += _hamming(x_new).item() < loss.item()
    assert wrong >= 10, "the instances should mostly be mismatched"
    assert improved / wrong >= 0.9, f"loss decreased on only {improved}/{wrong} wrong instances"


def test__gradient_signs_on_cv(make_qap):
    qap, cv, ce, eye_q = _instance(make_qap, 10, 3, diagonal=0.2)
    x = blackbox_match(cv, ce, eye_q, qap.nbr1, qap.nbr2, SPEC, lambda_val=0.5)
    _hamming(x).backward()
    wrong_rows = (torch.diagonal(x) == 0).nonzero().squeeze(1)
    assert wrong_rows.numel() > 0
    chosen = x.argmax(dim=1)
    # Descending the gradient lowers the affinity of wrong assignments, and never lowers a true pair.
    assert (cv.grad[wrong_rows, chosen[wrong_rows]] > 0).all()
    assert (torch.diagonal(cv.grad) <= 0).all()


def test__gradient_is_zero_when_the_matching_is_correct(make_qap):
    qap, cv, ce, eye_q = _instance(make_qap, 10, 5, diagonal=5.0)
    stats: dict[str, float] = {}
    x = blackbox_match(cv, ce, eye_q, qap.nbr1, qap.nbr2, SPEC, lambda_val=0.5, stats=stats)
    assert torch.equal(x, torch.eye(10))
    _hamming(x).backward()
    assert cv.grad.abs().max() == 0 and ce.grad.abs().max() == 0
    assert stats["backward_changed"] == 0


def test__edge_gradient_is_the_difference_of_active_edge_pairs(make_qap):
    lam = 0.5
    qap, cv, ce, eye_q = _instance(make_qap, 10, 8, diagonal=0.2)
    x = blackbox_match(cv, ce, eye_q, qap.nbr1, qap.nbr2, SPEC, lambda_val=lam, normalize=False)
    loss = _hamming(x)
    loss.backward()
    g = (1 - 2 * torch.eye(10)) / 20  # ∂L/∂X̂ of the mean Hamming loss
    same = QAP.from_dense(cv.detach(), ce.detach(), qap.nbr1, qap.nbr2)
    assert torch.equal(solve(same, SPEC).perm, x.argmax(dim=1))
    perturbed = solve(same.with_cv(cv.detach() - lam * g), SPEC).perm
    expected = torch.zeros_like(ce)
    p, q = qap.edge_matches(x.argmax(dim=1))
    expected[p, q] += 1 / lam
    p, q = qap.edge_matches(perturbed)
    expected[p, q] -= 1 / lam
    torch.testing.assert_close(ce.grad, expected)
    x_prime = torch.zeros(10, 10)
    x_prime[torch.arange(10), perturbed] = 1
    torch.testing.assert_close(cv.grad, (x.detach() - x_prime) / lam)
