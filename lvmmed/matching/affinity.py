"""Node and edge affinities (c^v, c^e) between the two views' graphs.

LVM-Med (Nguyen et al., NeurIPS 2023) computes vertex and edge affinities from the message-passing outputs and
"integrates local and global" similarity. The exact forms are not given; our choices (configurable in
``GraphMatchingConfig``):

* Global node term: cosine similarity of the refined node features, ``Cv[i,a] = ⟨ĥ^s_i, ĥ^t_a⟩`` ∈ [−1, 1].
* Local node term (optional, ``local_weight > 0``): the pre-pool feature maps are average-pooled to a
  ``grid × grid`` set of L2-normalised descriptors, and ``Cv_loc[i,a] = mean_u max_v ⟨d^s_{i,u}, d^t_{a,v}⟩``:
  each local descriptor of image i is matched to its best counterpart in image a, as in VICRegL's
  nearest-neighbour local criterion (Bardes et al., NeurIPS 2022), which LVM-Med's augmentations follow.
  ``Cv = Cv_global + local_weight·Cv_loc``.
* Edge term: edge features are differences of endpoint features (BB-GM, ``graph.edge_features``), L2-normalised;
  ``Ce[p,q] = (edge_weight / k)·⟨ê^s_p, ê^t_q⟩``. The 1/k makes the k pairwise terms a node can gain comparable to
  its single unary term. Ce is returned as its two factors (``Ce = F1·F2ᵀ``), never as a matrix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lvmmed.matching.graph import KnnGraph, edge_features


def batch_standardize(hs: Tensor, ht: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Standardises every feature dimension over the batch of *both* views (zero mean, unit variance, no affine).

    Used before the cosine node and edge affinities when ``node_norm == "batch"``. With one shared mean and
    variance for the two views the identity pairs stay comparable, and a representation in which all images
    share one direction (the collapse that a hardest-negative objective drifts into) has no variance left to
    match with, so it is no longer a fixed point of the matching loss.
    """
    both = torch.cat([hs, ht])
    mean, var = both.mean(dim=0, keepdim=True), both.var(dim=0, unbiased=False, keepdim=True)
    scale = torch.rsqrt(var + eps)
    return (hs - mean) * scale, (ht - mean) * scale


def unit_rows(x: Tensor, eps: float = 1e-12) -> Tensor:
    """``x / max(‖x‖, eps)`` along the last dimension: ``F.normalize``'s value and gradient, written as a product with
    ``rsqrt`` of the squared norm. Its backward is a few products instead of ``F.normalize``'s division, which on
    CPU made the (N·k, d) edge features' normalisation 3–6× slower at N = 256…1024 (``bench/gm_loss.py`` stages)."""
    return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True).clamp_min(eps * eps))


def node_affinity(hs: Tensor, ht: Tensor) -> Tensor:
    """Cosine affinity (N, N) between two sets of node features (normalised here)."""
    return unit_rows(hs) @ unit_rows(ht).T


def pool_local(feats: Tensor, grid: int) -> Tensor:
    """(B, C, h, w) feature maps → (B, grid², C) L2-normalised local descriptors (fp32)."""
    if feats.dim() != 4:
        raise ValueError(f"local features must be (B, C, h, w), got shape {tuple(feats.shape)}")
    pooled = F.adaptive_avg_pool2d(feats.float(), grid).flatten(2).transpose(1, 2)
    return F.normalize(pooled, dim=2)


def local_affinity(ds: Tensor, dt: Tensor) -> Tensor:
    """``mean_u max_v ⟨ds[i,u], dt[a,v]⟩`` for descriptors ds (N, U, C), dt (N, V, C) → (N, N)."""
    sim = torch.einsum("iuc,avc->iauv", ds, dt)
    return sim.max(dim=3).values.mean(dim=2)


def edge_factors(hs: Tensor, ht: Tensor, gs: KnnGraph, gt: KnnGraph, edge_weight: float = 1.0) -> tuple[Tensor, Tensor]:
    """Factors (F1, F2) of the edge affinity ``Ce = F1 F2ᵀ = (edge_weight / k)·cos(e^s_p, e^t_q)``.

    Args:
        hs, ht: (N, d) refined node features of the two views.
        gs, gt: their k-NN graphs.
        edge_weight: weight of the pairwise term relative to the unary term (before the 1/k).

    Returns:
        F1 (N·k_s, d), F2 (N·k_t, d).
    """
    k = max(gs.k, 1)
    f1 = unit_rows(edge_features(hs, gs)) * (edge_weight / k)
    f2 = unit_rows(edge_features(ht, gt))
    return f1, f2
