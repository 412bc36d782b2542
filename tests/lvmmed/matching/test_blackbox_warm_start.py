"""The warm-started black-box backward re-solve (IPFP from X̂) against the re-solve from scratch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lvmmed.matching import QAP, SolverSpec, knn_graph
from lvmmed.matching.affinity import edge_factors
from lvmmed.matching.blackbox import BlackBoxMatching


def _backward(n: int, noise: float, warm: bool, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 32, generator=gen)
    hs = F.normalize(base + noise * torch.randn(n, 32, generator=gen), dim=1).requires_grad_()
    ht = F.normalize(base + noise * torch.randn(n, 32, generator=gen), dim=1).requires_grad_()
    gs, gt = knn_graph(hs, 4), knn_graph(ht, 4)
    cv = hs @ ht.T
    f1, f2 = edge_factors(hs, ht, gs, gt)
    stats: dict[str, float] = {}
    x = BlackBoxMatching.apply(cv, f1, f2, gs.neighbors, gt.neighbors, SolverSpec(warm_start=warm), 0.5, True, stats)
    eye = torch.eye(n)
    ((x * (1 - eye) + (1 - x) * eye).sum() / (2 * n)).backward()
    qap = QAP(cv, f1, f2, gs.neighbors, gt.neighbors)
    return x.detach(), hs.grad, stats, qap


@pytest.mark.parametrize("noise", [0.3, 1.0, 2.0])
def test_warm_start_gives_a_gradient_as_good_as_the_cold_resolve(noise):
    x_w, grad_w, stats_w, _ = _backward(48, noise, warm=True)
    x_c, _, stats_c, _ = _backward(48, noise, warm=False)
    assert torch.equal(x_w, x_c)  # same forward
    assert torch.isfinite(grad_w).all() and grad_w.abs().sum() > 0
    # Both re-solves improve on X̂ for the perturbed problem by the same fraction of changed rows here.
    assert stats_w["backward_changed"] == pytest.approx(stats_c["backward_changed"], abs=0.1)
    assert stats_w["backward_solver_iters"] <= stats_c["backward_solver_iters"]


def test_warm_start_needs_no_assignment_call_when_the_matching_is_already_right():
    """X̂ = I is a fixed point of IPFP and the Hamming perturbation favours it in every row: the re-solve provably
    returns X̂, so it is skipped, with the same (zero) gradient as the re-solve from scratch."""
    x, grad, stats, _ = _backward(64, 0.2, warm=True)
    assert torch.equal(x, torch.eye(64))  # easy views: X̂ = I, the perturbation only confirms it
    assert stats["backward_solver_iters"] == 0.0 and stats["backward_changed"] == 0.0
    _, cold_grad, cold, _ = _backward(64, 0.2, warm=False)
    assert cold["backward_solver_iters"] >= 2.0 and cold["backward_changed"] == 0.0
    assert torch.equal(grad, cold_grad) and not grad.any()


def test_the_skip_does_not_fire_when_the_perturbation_can_change_the_matching():
    """With some rows wrong (X̂ ≠ I) the perturbation favours other entries: the re-solve runs."""
    x, _, stats, _ = _backward(64, 1.0, warm=True)
    assert not torch.equal(x, torch.eye(64))
    assert stats["backward_solver_iters"] >= 1.0


@pytest.mark.parametrize("noise", [0.3, 2.0])
def test_backward_replays_the_forwards_last_linearisation(monkeypatch, noise):
    """The forward IPFP ends by linearising at X̂; the warm re-solve linearises the perturbed problem at X̂ again and
    gets the pairwise part from the shared cache (no recomputation), with gradients equal to the scipy backend's."""
    calls = []
    original = QAP._pair_updates
    monkeypatch.setattr(QAP, "_pair_updates", lambda self, p: calls.append(1) or original(self, p))
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(48, 32, generator=gen)
    views = [F.normalize(base + noise * torch.randn(48, 32, generator=gen), dim=1) for _ in range(2)]
    grads = {}
    for backend in ("lapjv", "scipy"):
        hs, ht = (v.clone().requires_grad_() for v in views)
        gs, gt = knn_graph(hs, 4), knn_graph(ht, 4)
        f1, f2 = edge_factors(hs, ht, gs, gt)
        spec, stats = SolverSpec(assignment=backend), {}
        x = BlackBoxMatching.apply(hs @ ht.T, f1, f2, gs.neighbors, gt.neighbors, spec, 0.5, True, stats)
        eye = torch.eye(48)
        forward_calls = len(calls)
        ((x * (1 - eye) + (1 - x) * eye).sum() / 96).backward()
        assert len(calls) == forward_calls, "the backward pass recomputed the forward's linearisation"
        grads[backend] = (x.detach(), hs.grad, ht.grad)
    for a, b in zip(grads["lapjv"], grads["scipy"]):
        assert torch.equal(a, b)
