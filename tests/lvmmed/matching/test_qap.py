"""The factorised QAP operator against pygmtools' dense Lawler matrix K (same Cv, Ce)."""

from __future__ import annotations

import pytest
import torch

from lvmmed.matching.graph import edge_features, knn_graph
from lvmmed.matching.solvers import dense_lawler


def _vec(x: torch.Tensor) -> torch.Tensor:
    """pygmtools' column-major vectorisation: index(i, a) = a·N + i."""
    return x.T.reshape(-1)


def _unvec(v: torch.Tensor, n: int) -> torch.Tensor:
    return v.reshape(n, n).T


class TestFactorisedOperator:
    @pytest.mark.parametrize("low_rank", [False, True])
    @pytest.mark.parametrize("n", [5, 12, 20])
    def test__objective_equals_dense_pygmtools_objective(self, make_qap, n, low_rank):
        qap = make_qap(n, k=4, seed=n, low_rank=low_rank)
        k = dense_lawler(qap)
        for seed in range(5):
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
            x = torch.zeros(n, n)
            x[torch.arange(n), perm] = 1
            dense = float(_vec(x) @ k @ _vec(x))
            assert qap.objective(perm) == pytest.approx(dense, rel=1e-5, abs=1e-5)

    def test__matvec_and_transpose_equal_dense_products(self, make_qap):
        n = 10
        qap = make_qap(n, k=3, seed=1)
        k = dense_lawler(qap)
        x = torch.rand(n, n)
        torch.testing.assert_close(qap.matvec(x), _unvec(k @ _vec(x), n), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(qap.matvec(x, transpose=True), _unvec(k.T @ _vec(x), n), rtol=1e-5, atol=1e-5)

    @pytest.mark.parametrize("low_rank", [False, True])
    def test__sparse_linearisation_equals_dense_gradient(self, make_qap, low_rank):
        n = 11
        qap = make_qap(n, k=4, seed=3, low_rank=low_rank)
        k = dense_lawler(qap)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
        x = torch.zeros(n, n)
        x[torch.arange(n), perm] = 1
        # gradient of <Cv, X> + pairwise terms: (K + Kᵀ)x counts the unary diagonal twice on X's support.
        dense = _unvec((k + k.T) @ _vec(x), n) - 2 * qap.cv * x + qap.cv
        torch.testing.assert_close(qap.linearize(perm), dense, rtol=1e-5, atol=1e-5)

    @pytest.mark.parametrize("budget", [1 << 22, 700])
    def test__chunked_linearisation_with_hubs_equals_the_matvec_gradient(self, monkeypatch, budget):
        """More nodes than one chunk, very uneven in-degrees (a hub every node points to), a tiny block budget."""
        import lvmmed.matching.qap as qap_module

        monkeypatch.setattr(qap_module, "_BLOCK_BUDGET", budget)
        n, k = 150, 5
        gen = torch.Generator().manual_seed(5)
        z1, z2 = torch.randn(n, 8, generator=gen), torch.randn(n, 8, generator=gen)
        z1[:40] = z1[0] + 1e-3 * torch.randn(40, 8, generator=gen)  # a near-duplicate cluster: in-degrees up to 40
        g1, g2 = knn_graph(z1, k), knn_graph(z2, k)
        f1, f2 = torch.randn(n * k, 6, generator=gen), torch.randn(n * k, 6, generator=gen)
        qap = qap_module.QAP(torch.rand(n, n, generator=gen), f1, f2, g1.neighbors, g2.neighbors)
        assert int(torch.bincount(g1.neighbors.reshape(-1), minlength=n).max()) >= 3 * k
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(1))
        x = torch.zeros(n, n)
        x[torch.arange(n), perm] = 1
        reference = qap.matvec(x) + qap.matvec(x, transpose=True) - 2 * qap.cv * x + qap.cv
        torch.testing.assert_close(qap.linearize(perm), reference, rtol=1e-4, atol=1e-4)

    def test__edge_matches_are_the_active_pairs_of_yhat(self, make_qap):
        n = 9
        qap = make_qap(n, k=3, seed=4)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(2))
        p, q = qap.edge_matches(perm)
        src1, dst1 = torch.arange(n).repeat_interleave(3), qap.nbr1.reshape(-1)
        src2, dst2 = torch.arange(n).repeat_interleave(3), qap.nbr2.reshape(-1)
        y = torch.zeros(n, n)
        y[torch.arange(n), perm] = 1
        dense_ye = y[src1][:, src2] * y[dst1][:, dst2]
        sparse_ye = torch.zeros_like(dense_ye)
        sparse_ye[p, q] = 1
        torch.testing.assert_close(sparse_ye, dense_ye)


class TestGraph:
    def test__knn_excludes_self_and_clamps_k(self):
        z = torch.randn(5, 3)
        g = knn_graph(z, 8)
        assert g.k == 4
        assert not (g.neighbors == torch.arange(5)[:, None]).any()
        assert knn_graph(torch.randn(1, 3), 8).num_edges == 0

    def test__structure_is_not_differentiated_but_edge_features_are(self):
        z = torch.randn(6, 4, requires_grad=True)
        g = knn_graph(z, 2)
        assert not g.neighbors.requires_grad
        e = edge_features(z, g)
        assert e.shape == (12, 4)
        e.sum().backward()
        assert z.grad is not None

    def test__bad_input_raises(self):
        with pytest.raises(ValueError, match="N, d"):
            knn_graph(torch.randn(4), 2)
        with pytest.raises(ValueError, match="k must be"):
            knn_graph(torch.randn(4, 2), 0)


class TestCaches:
    def test__linearisation_replayed_for_another_cv_is_bit_identical(self, make_qap, monkeypatch):
        """``with_cv`` shares the pairwise part of ``linearize``: the replay equals a fresh computation exactly."""
        from lvmmed.matching.qap import QAP

        qap = make_qap(60, k=5, seed=8, low_rank=True)
        perm = torch.randperm(60, generator=torch.Generator().manual_seed(4))
        qap.linearize(perm)
        calls = []
        original = QAP._pair_updates
        monkeypatch.setattr(QAP, "_pair_updates", lambda self, p: calls.append(1) or original(self, p))
        cv2 = qap.cv - 0.7 * torch.eye(60) + 0.01 * torch.rand(60, 60, generator=torch.Generator().manual_seed(1))
        replayed = qap.with_cv(cv2).linearize(perm)
        assert calls == []  # served from the cache
        fresh = QAP(cv2, qap.f1, qap.f2, qap.nbr1, qap.nbr2).linearize(perm)
        assert len(calls) == 1 and torch.equal(replayed, fresh)
        other = torch.randperm(60, generator=torch.Generator().manual_seed(5))
        qap.with_cv(cv2).linearize(other)
        assert len(calls) == 2  # another permutation is computed, not replayed

    def test__cached_objective_and_edge_matches_equal_fresh_ones(self, make_qap):
        from lvmmed.matching.qap import QAP

        qap = make_qap(30, k=4, seed=2, low_rank=True)
        for seed in range(6):
            perm = torch.randperm(30, generator=torch.Generator().manual_seed(seed % 3))
            fresh = QAP(qap.cv, qap.f1, qap.f2, qap.nbr1, qap.nbr2)
            assert qap.objective(perm) == fresh.objective(perm)
            for a, b in zip(qap.edge_matches(perm), fresh.edge_matches(perm)):
                assert torch.equal(a, b)
