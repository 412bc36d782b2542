"""The second-order graph-matching problem (Lawler QAP) in factorised form, never materialising K.

Objective, maximised over permutation matrices X (N×N) (LVM-Med Sec. 3; Lawler 1963):

    f(X) = Σ_ia Cv[i,a]·X[i,a] + Σ_{p=(i→j)∈E1} Σ_{q=(a→b)∈E2} Ce[p,q]·X[i,a]·X[j,b]

The dense Lawler matrix K (N²×N²) of pygmtools has ``diag(K) = vec(Cv)`` and ``K[(i,a),(j,b)] = Ce[p,q]``; it needs
(N²)² entries (17 GB at N = 256). Here the problem is kept as Cv, the two k-NN graphs, and a *low-rank* edge
affinity ``Ce = F1 · F2ᵀ`` (inner products of edge features, ``F1: |E1|×r``, ``F2: |E2|×r``). A dense Ce is the
special case ``F1 = Ce, F2 = I``. Everything the solvers need is expressed through:

* ``matvec(X)``: the Lawler product ``Kx = Cv∘X + Q x`` with
  ``(Qx)[i,a] = Σ_{m,n} Ce[(i,m),(a,n)]·X[nbr1[i,m], nbr2[a,n]]``
  (gather ``X[dst1][:, dst2]``, multiply by Ce, sum over the k×k block; O(|E1|·|E2|)), and its transpose
  ``Qᵀx`` (scatter with ``index_add_``). Used by RRWM on continuous X.
* ``linearize(perm)``: the gradient ``Cv + (Q + Qᵀ)x`` at a *permutation*; only the O(N·k²) edge pairs that can be
  active are touched (batched k×k blocks per source node for Qᵀx, padded in-edge blocks per destination node for
  Qx), so IPFP on discrete iterates costs O(N·k²·r) per step instead of O(N²k²).
* ``objective(perm)`` and ``edge_matches(perm)``: f(X) and the active edge pairs ``Ŷe[p,q] = X[i,a]·X[j,b] = 1``.

All computations run in fp32 without autograd (the solver is a black box; see ``blackbox.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

_BLOCK_BUDGET = 1 << 22  # entries of padded in-edge blocks evaluated at once by ``linearize``
_CHUNK_NODES = 64  # nodes per padded Qx chunk of ``linearize`` (sorted by in-degree; measured fastest at N = 256…1024)


@dataclass
class QAP:
    """A graph-matching instance. Rows of F1 / F2 are indexed by edge ``p = i * k + m`` (see ``graph.py``).

    Attributes:
        cv: (N, N) node affinity.
        f1: (N*k1, r) edge factor of graph 1.
        f2: (N*k2, r) edge factor of graph 2; ``Ce = f1 @ f2.T``.
        nbr1: (N, k1) neighbours of graph 1.
        nbr2: (N, k2) neighbours of graph 2.
    """

    cv: Tensor
    f1: Tensor
    f2: Tensor
    nbr1: Tensor
    nbr2: Tensor
    _dense_ce: Tensor | None = field(default=None, repr=False)
    _in_edges2: tuple[Tensor, ...] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = self.cv.shape[0]
        if self.cv.dim() != 2 or self.cv.shape[1] != n:
            raise ValueError(f"cv must be square (N, N), got {tuple(self.cv.shape)}")
        if self.nbr1.shape[0] != n or self.nbr2.shape[0] != n:
            raise ValueError("both graphs must have N nodes (perfect matching)")
        if self.f1.shape[0] != self.nbr1.numel() or self.f2.shape[0] != self.nbr2.numel():
            raise ValueError("edge factors must have one row per edge (N * k)")
        if self.f1.shape[1] != self.f2.shape[1]:
            raise ValueError("edge factors must share their rank r")
        self.cv = self.cv.detach().float()
        self.f1 = self.f1.detach().float()
        self.f2 = self.f2.detach().float()

    @classmethod
    def from_dense(cls, cv: Tensor, ce: Tensor, nbr1: Tensor, nbr2: Tensor) -> QAP:
        """An instance with an explicit (|E1|, |E2|) edge affinity (``F2 = I``)."""
        eye = torch.eye(ce.shape[1], dtype=torch.float32, device=ce.device)
        qap = cls(cv, ce, eye, nbr1, nbr2)
        qap._dense_ce = ce.detach().float()
        return qap

    @property
    def n(self) -> int:
        return int(self.cv.shape[0])

    @property
    def k1(self) -> int:
        return int(self.nbr1.shape[1])

    @property
    def k2(self) -> int:
        return int(self.nbr2.shape[1])

    def with_cv(self, cv: Tensor) -> QAP:
        """The same edges with another node affinity (used by the black-box backward pass)."""
        return QAP(cv, self.f1, self.f2, self.nbr1, self.nbr2, self._dense_ce, self._in_edges2)

    def ce_pairs(self, p: Tensor, q: Tensor) -> Tensor:
        """Ce[p, q] for index vectors p, q (row-wise dot products of the factors)."""
        if self._dense_ce is not None:
            return self._dense_ce[p, q]
        return torch.linalg.vecdot(self.f1.index_select(0, p), self.f2.index_select(0, q))

    def ce_blocks(self, perm: Tensor) -> Tensor:
        """(N, k1, k2) blocks ``Ce[(i, m), (π(i), n)]``: every edge of i against every edge of its match."""
        if self._dense_ce is not None:
            rows = torch.arange(self.n * self.k1, device=perm.device).view(self.n, self.k1, 1)
            cols = (perm[:, None] * self.k2 + torch.arange(self.k2, device=perm.device)).view(self.n, 1, self.k2)
            return self._dense_ce[rows, cols]
        f1 = self.f1.view(self.n, self.k1, -1)
        f2 = self.f2.view(self.n, self.k2, -1)[perm]
        return torch.bmm(f1, f2.transpose(1, 2))

    def dense_ce(self) -> Tensor:
        """The (|E1|, |E2|) edge affinity, materialised once (needed only by continuous solvers)."""
        if self._dense_ce is None:
            self._dense_ce = self.f1 @ self.f2.T
        return self._dense_ce

    # ----------------------------------------------------------------------------------- discrete operations
    def edge_matches(self, perm: Tensor) -> tuple[Tensor, Tensor]:
        """Active edge pairs of a permutation: edges p=(i→j) of G1 whose image (π(i)→π(j)) is edge q of G2.

        Returns:
            (p, q) index vectors; ``Ŷe[p, q] = 1`` exactly at these pairs.
        """
        if self.k1 == 0 or self.k2 == 0:
            empty = torch.zeros(0, dtype=torch.long, device=perm.device)
            return empty, empty
        a = perm.repeat_interleave(self.k1)  # π(src1 p)
        b = perm[self.nbr1.reshape(-1)]  # π(dst1 p)
        hit = self.nbr2[a] == b[:, None]  # (P, k2)
        p = hit.any(dim=1).nonzero().squeeze(1)
        n_idx = hit[p].float().argmax(dim=1)
        return p, a[p] * self.k2 + n_idx

    def objective(self, perm: Tensor) -> float:
        """f(X) for the permutation X[i, perm[i]] = 1."""
        unary = self.cv[torch.arange(self.n, device=perm.device), perm].sum()
        p, q = self.edge_matches(perm)
        return float(unary + self.ce_pairs(p, q).sum())

    @staticmethod
    def _padded_in_edges(nbr: Tensor) -> tuple[Tensor, Tensor]:
        """(N, D) ids of each node's in-edges (D = max in-degree), padded with ``N·k``, a zero factor row, and the
        (N,) in-degrees."""
        n = nbr.shape[0]
        dst = nbr.reshape(-1)
        order = torch.argsort(dst, stable=True)
        counts = torch.bincount(dst, minlength=n)
        starts = torch.cumsum(counts, 0) - counts
        dst_sorted = dst[order]
        position = torch.arange(dst.numel(), device=nbr.device) - starts[dst_sorted]
        table = torch.full((n, max(int(counts.max()), 1)), dst.numel(), dtype=torch.long, device=nbr.device)
        table[dst_sorted, position] = order
        return table, counts

    def _in_edge_tables(self) -> tuple[Tensor, ...]:
        """Padded in-edge tables and in-degrees of both graphs, and the factors with an appended zero row (cached)."""
        if self._in_edges2 is None:
            in1, degree1 = self._padded_in_edges(self.nbr1)
            in2, degree2 = self._padded_in_edges(self.nbr2)
            f1_pad = torch.cat([self.f1, self.f1.new_zeros(1, self.f1.shape[1])])
            f2_pad = torch.cat([self.f2, self.f2.new_zeros(1, self.f2.shape[1])])
            self._in_edges2 = (in1, in2, degree1, degree2, f1_pad, f2_pad)
        return self._in_edges2

    def linearize(self, perm: Tensor) -> Tensor:
        """∇f at the permutation ``perm``: ``Cv + Q x + Qᵀ x`` (N, N), touching only O(N·k²) edge pairs."""
        grad = self.cv.clone()
        if self.k1 == 0 or self.k2 == 0:
            return grad
        src1 = torch.arange(self.n, device=perm.device).repeat_interleave(self.k1)
        dst1 = self.nbr1.reshape(-1)
        src2 = torch.arange(self.n, device=perm.device).repeat_interleave(self.k2)
        # Qᵀx: for p = (i→j) and q = (π(i)→b): grad[j, b] += Ce[p, q]; one (k1 × k2) block per source node i.
        block = self.ce_blocks(perm)
        targets_t = (dst1.view(self.n, self.k1, 1) * self.n + self.nbr2[perm].view(self.n, 1, self.k2)).reshape(-1)
        # Qx: for p = (i→j) and q = (a→π(j)): grad[i, a] += Ce[p, q]; one (in1(j) × in2(π(j))) block per node j.
        # Nodes are sorted by in-degree product and each chunk is padded only to its own largest in-degrees (a
        # k-NN graph's in-degrees vary, up to N for hubs or collapsed embeddings); the chunk size keeps the padded
        # entries within ``_BLOCK_BUDGET`` so memory stays bounded.
        in1, in2, degree1, degree2, f1_pad, f2_pad = self._in_edge_tables()
        in2_matched, degree2 = in2[perm], degree2[perm]
        order = torch.argsort(degree1 * degree2)
        degree1, degree2 = degree1[order].tolist(), degree2[order].tolist()
        src1_pad = torch.cat([src1, src1.new_zeros(1)])
        src2_pad = torch.cat([src2, src2.new_zeros(1)])
        flat = grad.view(-1)
        flat.index_add_(0, targets_t, block.reshape(-1))
        lo = 0
        while lo < self.n:
            size = min(self.n - lo, _CHUNK_NODES)
            while True:
                width1, width2 = max(max(degree1[lo : lo + size]), 1), max(max(degree2[lo : lo + size]), 1)
                if size == 1 or size * width1 * width2 <= _BLOCK_BUDGET:
                    break
                size //= 2
            nodes = order[lo : lo + size]
            rows1, rows2 = in1[nodes, :width1], in2_matched[nodes, :width2]
            values = torch.bmm(
                f1_pad.index_select(0, rows1.reshape(-1)).view(*rows1.shape, -1),
                f2_pad.index_select(0, rows2.reshape(-1)).view(*rows2.shape, -1).transpose(1, 2),
            )
            targets = src1_pad[rows1][:, :, None] * self.n + src2_pad[rows2][:, None, :]
            flat.index_add_(0, targets.reshape(-1), values.reshape(-1))
            lo += size
        return grad

    # ---------------------------------------------------------------------------------- continuous operations
    def matvec(self, x: Tensor, transpose: bool = False) -> Tensor:
        """The Lawler product ``K x`` (or ``Kᵀ x``) for a continuous (N, N) matrix x, without forming K."""
        out = self.cv * x
        if self.k1 == 0 or self.k2 == 0:
            return out
        n, k1, k2 = self.n, self.k1, self.k2
        ce4 = self.dense_ce().view(n, k1, n, k2)
        if not transpose:
            gathered = x[self.nbr1][:, :, self.nbr2.reshape(-1)].view(n, k1, n, k2)
            return out + (ce4 * gathered).sum(dim=(1, 3))
        weighted = (ce4 * x[:, None, :, None]).reshape(n * k1, n * k2)
        rows = torch.zeros(n, n * k2, dtype=x.dtype, device=x.device).index_add_(0, self.nbr1.reshape(-1), weighted)
        return out + torch.zeros(n, n, dtype=x.dtype, device=x.device).index_add_(1, self.nbr2.reshape(-1), rows)

    def row_sums(self) -> Tensor:
        """Row sums of the Lawler matrix, ``K·1`` reshaped to (N, N) (RRWM's normalisation)."""
        return self.matvec(torch.ones_like(self.cv))
