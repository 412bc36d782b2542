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

**Caches** (pure speed-ups: every cached result is bit-identical to its recomputation). The pairwise part of
``linearize(perm)`` (the (target, value) lists it adds to Cv) and the edge matches of a permutation depend on the
graphs, the factors and ``perm`` only, not on Cv. They are kept for the last few permutations and shared with every
instance made by ``with_cv``, so the black-box backward pass, whose perturbed problem differs only in Cv and whose
first IPFP step linearises at the forward solution X̂, replays the forward pass's last linearisation (same values
added in the same order) instead of recomputing it. The index tables that do not depend on ``perm`` are built once
per instance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

_BLOCK_BUDGET = 1 << 22  # entries of padded in-edge blocks evaluated at once by ``linearize``
_CHUNK_NODES = 64  # nodes per padded Qx chunk of ``linearize`` (sorted by in-degree; measured fastest at N = 256…1024)
_CACHED_PERMS = 2  # linearisations kept per problem (the forward's last one is what the backward pass replays)
_CACHE_BUDGET = 4 * _BLOCK_BUDGET  # a linearisation with more (target, value) entries than this is not kept


@dataclass
class _Tables:
    """Index tables of ``linearize`` that do not depend on the permutation (built once per instance)."""

    dst1_scaled: Tensor  # (N, k1, 1) destination of edge (i, m) of G1, times N
    in1: Tensor  # (N, D1) in-edges of each G1 node, padded with the zero row N·k1
    in2: Tensor  # (N, D2) in-edges of each G2 node, padded with N·k2
    degree1: Tensor  # (N,) in-degrees of G1
    degree2: Tensor  # (N,) in-degrees of G2
    in_src1_scaled: Tensor  # (N, D1) source node of each padded in-edge of G1, times N (0 for padding)
    in_src2: Tensor  # (N, D2) source node of each padded in-edge of G2 (0 for padding)
    f1_pad: Tensor  # F1 with an appended zero row
    f2_pad: Tensor  # F2 with an appended zero row


@dataclass
class _Cache:
    """Results that depend on the graphs, the factors and a permutation, but not on Cv (shared by ``with_cv``)."""

    linearizations: list[tuple[Tensor, list[tuple[Tensor, Tensor]]]] = field(default_factory=list)
    matches: list[tuple[Tensor, Tensor, Tensor, Tensor]] = field(default_factory=list)  # (perm, p, q, Σ Ce[p, q])


def _lookup(entries: list, perm: Tensor) -> tuple | None:
    for entry in entries:
        if entry[0].shape == perm.shape and torch.equal(entry[0], perm):
            return entry
    return None


def _remember(entries: list, entry: tuple, keep: int) -> None:
    entries.insert(0, entry)
    del entries[keep:]


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
    _tables: _Tables | None = field(default=None, repr=False)
    _cache: _Cache = field(default_factory=_Cache, repr=False)

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
        """The same edges with another node affinity (used by the black-box backward pass); shares the caches."""
        return QAP(cv, self.f1, self.f2, self.nbr1, self.nbr2, self._dense_ce, self._tables, self._cache)

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
        f2 = self.f2.view(self.n, self.k2, -1).index_select(0, perm)
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
        _, p, q, _ = self._matches(perm)
        return p, q

    def _matches(self, perm: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(perm, p, q, Σ Ce[p, q]) of ``perm``, from the cache when it was computed before."""
        hit = _lookup(self._cache.matches, perm)
        if hit is not None:
            return hit
        if self.k1 == 0 or self.k2 == 0:
            p = q = torch.zeros(0, dtype=torch.long, device=perm.device)
        else:
            a = perm.repeat_interleave(self.k1)  # π(src1 p)
            b = perm.index_select(0, self.nbr1.reshape(-1))  # π(dst1 p)
            hits = self.nbr2.index_select(0, a) == b[:, None]  # (P, k2)
            p = hits.any(dim=1).nonzero().squeeze(1)
            n_idx = hits.index_select(0, p).float().argmax(dim=1)
            q = a.index_select(0, p) * self.k2 + n_idx
        entry = (perm.clone(), p, q, self.ce_pairs(p, q).sum())
        _remember(self._cache.matches, entry, 4)
        return entry

    def objective(self, perm: Tensor) -> float:
        """f(X) for the permutation X[i, perm[i]] = 1."""
        unary = self.cv[torch.arange(self.n, device=perm.device), perm].sum()
        return float(unary + self._matches(perm)[3])

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

    def _index_tables(self) -> _Tables:
        """The permutation-independent tables of ``linearize`` (built on first use, shared by ``with_cv``)."""
        if self._tables is None:
            n, k1, k2, device = self.n, self.k1, self.k2, self.cv.device
            in1, degree1 = self._padded_in_edges(self.nbr1)
            in2, degree2 = self._padded_in_edges(self.nbr2)
            zero = torch.zeros(1, dtype=torch.long, device=device)
            src1_pad = torch.cat([torch.arange(n, device=device).repeat_interleave(k1), zero])
            src2_pad = torch.cat([torch.arange(n, device=device).repeat_interleave(k2), zero])
            self._tables = _Tables(
                dst1_scaled=self.nbr1.reshape(-1).view(n, k1, 1) * n,
                in1=in1,
                in2=in2,
                degree1=degree1,
                degree2=degree2,
                in_src1_scaled=src1_pad[in1] * n,
                in_src2=src2_pad[in2],
                f1_pad=torch.cat([self.f1, self.f1.new_zeros(1, self.f1.shape[1])]),
                f2_pad=torch.cat([self.f2, self.f2.new_zeros(1, self.f2.shape[1])]),
            )
        return self._tables

    def _pair_updates(self, perm: Tensor) -> list[tuple[Tensor, Tensor]]:
        """The (flat target index, value) lists that ``linearize`` adds to Cv, in the order it adds them."""
        n, k2, tables = self.n, self.k2, self._index_tables()
        # Qᵀx: for p = (i→j) and q = (π(i)→b): grad[j, b] += Ce[p, q]; one (k1 × k2) block per source node i.
        block = self.ce_blocks(perm)
        targets_t = (tables.dst1_scaled + self.nbr2.index_select(0, perm).view(n, 1, k2)).reshape(-1)
        updates = [(targets_t, block.reshape(-1))]
        # Qx: for p = (i→j) and q = (a→π(j)): grad[i, a] += Ce[p, q]; one (in1(j) × in2(π(j))) block per node j.
        # Nodes are sorted by in-degree product and each chunk is padded only to its own largest in-degrees (a
        # k-NN graph's in-degrees vary, up to N for hubs or collapsed embeddings); the chunk size keeps the padded
        # entries within ``_BLOCK_BUDGET`` so memory stays bounded.
        in2_matched = tables.in2.index_select(0, perm)
        in_src2_matched = tables.in_src2.index_select(0, perm)
        degree2 = tables.degree2.index_select(0, perm)
        order = torch.argsort(tables.degree1 * degree2)
        degree1, degree2 = tables.degree1[order].tolist(), degree2[order].tolist()
        lo = 0
        while lo < n:
            size = min(n - lo, _CHUNK_NODES)
            while True:
                width1, width2 = max(max(degree1[lo : lo + size]), 1), max(max(degree2[lo : lo + size]), 1)
                if size == 1 or size * width1 * width2 <= _BLOCK_BUDGET:
                    break
                size //= 2
            nodes = order[lo : lo + size]
            rows1 = tables.in1.index_select(0, nodes)[:, :width1].reshape(-1)
            rows2 = in2_matched.index_select(0, nodes)[:, :width2].reshape(-1)
            values = torch.bmm(
                tables.f1_pad.index_select(0, rows1).view(size, width1, -1),
                tables.f2_pad.index_select(0, rows2).view(size, width2, -1).transpose(1, 2),
            )
            sources1 = tables.in_src1_scaled.index_select(0, nodes)[:, :width1, None]
            sources2 = in_src2_matched.index_select(0, nodes)[:, None, :width2]
            updates.append(((sources1 + sources2).reshape(-1), values.reshape(-1)))
            lo += size
        return updates

    def linearize(self, perm: Tensor) -> Tensor:
        """∇f at the permutation ``perm``: ``Cv + Q x + Qᵀ x`` (N, N), touching only O(N·k²) edge pairs."""
        grad = self.cv.clone()
        if self.k1 == 0 or self.k2 == 0:
            return grad
        hit = _lookup(self._cache.linearizations, perm)
        if hit is not None:
            updates = hit[1]
        else:
            updates = self._pair_updates(perm)
            if sum(values.numel() for _, values in updates) <= _CACHE_BUDGET:
                _remember(self._cache.linearizations, (perm.clone(), updates), _CACHED_PERMS)
        flat = grad.view(-1)
        for targets, values in updates:
            flat.index_add_(0, targets, values)
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
