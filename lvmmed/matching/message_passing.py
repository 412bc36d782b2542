"""Message-passing network g_ε that refines node embeddings with neighbourhood context (LVM-Med, Fig. 2).

LVM-Med only says that a message passing network "aggregates features per node by their neighbor information".
Choices fixed here (all configurable through ``GraphMatchingConfig``):

* Aggregation: mean of the neighbours' features over the k-NN graph (out-edges), as a GraphSAGE-style update
  ``h ← h + W2 · act(W1 · [h, mean_nbr(h) − h])``. The residual form follows BB-GM's ``x + 0.1·mp(x)``; the
  last layer is scaled by ``residual_scale`` (default 0.1) so that the initial network is close to identity
  and the matching starts from the projector's similarity.
* The same (siamese) network refines both views; ``num_layers = 0`` disables message passing.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lvmmed.matching.graph import KnnGraph


class MessagePassingLayer(nn.Module):
    """One residual mean-aggregation layer.

    Args:
        dim: node feature dimension (input = output).
        hidden_dim: width of the update MLP.
        residual_scale: multiplier of the update (BB-GM uses 0.1).
    """

    def __init__(self, dim: int, hidden_dim: int, residual_scale: float = 0.1) -> None:
        super().__init__()
        self.update = nn.Sequential(nn.Linear(2 * dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, dim))
        self.residual_scale = residual_scale

    def forward(self, h: Tensor, graph: KnnGraph) -> Tensor:
        if graph.k == 0:
            return h
        # index_select, not h[neighbors]: its backward is one index_add_ instead of a sorting index_put_.
        n, k = graph.neighbors.shape
        neighbour_mean = h.index_select(0, graph.neighbors.reshape(-1)).view(n, k, -1).mean(dim=1)
        return h + self.residual_scale * self.update(torch.cat([h, neighbour_mean - h], dim=1))


class MessagePassing(nn.Module):
    """A stack of ``num_layers`` residual message-passing layers (identity when ``num_layers == 0``).

    Args:
        dim: node feature dimension.
        num_layers: depth.
        hidden_dim: width of each layer's MLP.
        residual_scale: multiplier of each layer's update.
    """

    def __init__(self, dim: int, num_layers: int = 1, hidden_dim: int = 256, residual_scale: float = 0.1) -> None:
        super().__init__()
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        self.layers = nn.ModuleList(MessagePassingLayer(dim, hidden_dim, residual_scale) for _ in range(num_layers))

    def forward(self, h: Tensor, graph: KnnGraph) -> Tensor:
        """Refines (N, dim) node features over ``graph``; the structure is not differentiated."""
        for layer in self.layers:
            h = layer(h, graph)
        return h
