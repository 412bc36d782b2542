"""k-nearest-neighbour graphs over a batch of embeddings (the graphs G^s, G^t of LVM-Med).

LVM-Med (Nguyen et al., NeurIPS 2023, arXiv:2306.11925, Fig. 2) builds one graph per view whose nodes are the
projected embeddings of the images in the batch and whose edges connect each node to its nearest neighbours.
Choices the paper leaves open, fixed here:

* Similarity for the neighbour search: cosine (embeddings are L2-normalised first), self excluded.
* Edges are *directed* ``i → j`` for ``j ∈ kNN(i)``, so every node has exactly ``k`` out-edges. Edge ``p`` is
  stored at row ``p = i * k + m``; its source is ``i`` and its destination ``neighbors[i, m]``. The fixed
  out-degree lets the factorised QAP operator reshape edge tensors to ``(N, k, ...)`` instead of scattering.
* ``k`` is clamped to ``N - 1``; a batch of one node has no edges.
* The structure is not differentiated (computed under ``torch.no_grad``); gradients flow only through features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class KnnGraph:
    """A directed k-NN graph with fixed out-degree.

    Attributes:
        neighbors: (N, k) long tensor; ``neighbors[i, m]`` is the m-th nearest neighbour of node i.
    """

    neighbors: Tensor

    @property
    def num_nodes(self) -> int:
        return int(self.neighbors.shape[0])

    @property
    def k(self) -> int:
        return int(self.neighbors.shape[1])

    @property
    def num_edges(self) -> int:
        return self.num_nodes * self.k

    @property
    def src(self) -> Tensor:
        """(|E|,) source node of every edge (``p // k``)."""
        n, k = self.neighbors.shape
        return torch.arange(n, device=self.neighbors.device).repeat_interleave(k)

    @property
    def dst(self) -> Tensor:
        """(|E|,) destination node of every edge."""
        return self.neighbors.reshape(-1)

    def connectivity(self) -> Tensor:
        """(|E|, 2) ``[src, dst]`` pairs in pygmtools' connectivity convention."""
        return torch.stack([self.src, self.dst], dim=1)


@torch.no_grad()
def knn_graph(z: Tensor, k: int) -> KnnGraph:
    """Builds the directed cosine k-NN graph of a batch of embeddings.

    Args:
        z: (N, d) embeddings (any float dtype; the search runs in fp32).
        k: neighbours per node; clamped to ``N - 1``.

    Returns:
        The graph. Ties are broken by ``torch.topk`` (deterministic on CPU for a given input).

    Raises:
        ValueError: if ``z`` is not 2-D or ``k < 1``.
    """
    if z.dim() != 2:
        raise ValueError(f"knn_graph expects (N, d) embeddings, got shape {tuple(z.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = z.shape[0]
    k_eff = min(k, n - 1)
    if k_eff <= 0:
        return KnnGraph(torch.zeros(n, 0, dtype=torch.long, device=z.device))
    zn = F.normalize(z.detach().float(), dim=1)
    sim = zn @ zn.T
    sim.fill_diagonal_(float("-inf"))
    neighbors = sim.topk(k_eff, dim=1).indices
    return KnnGraph(neighbors)


def edge_features(h: Tensor, graph: KnnGraph) -> Tensor:
    """Edge features as the difference of endpoint features, ``e_(i→j) = h_j − h_i`` (as in BB-GM).

    Args:
        h: (N, d) node features.
        graph: the graph whose edges to featurise.

    Returns:
        (N * k, d) edge features, row ``p = i * k + m``.
    """
    n, k = graph.neighbors.shape
    ends = h.index_select(0, graph.neighbors.reshape(-1)).view(n, k, -1)  # backward: index_add_, not index_put_
    return (ends - h[:, None, :]).reshape(-1, h.shape[1])
