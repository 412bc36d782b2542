"""Random QAP instances on k-NN graphs (shape/algebra checks only; learning tests use real images)."""

from __future__ import annotations

import pytest
import torch

from lvmmed.matching.graph import knn_graph
from lvmmed.matching.qap import QAP


def random_qap(n: int, k: int = 4, seed: int = 0, low_rank: bool = False) -> QAP:
    gen = torch.Generator().manual_seed(seed)
    g1 = knn_graph(torch.randn(n, 8, generator=gen), k)
    g2 = knn_graph(torch.randn(n, 8, generator=gen), k)
    cv = torch.rand(n, n, generator=gen)
    if low_rank:
        f1 = torch.randn(n * g1.k, 6, generator=gen) / 3
        f2 = torch.randn(n * g2.k, 6, generator=gen) / 3
        return QAP(cv, f1, f2, g1.neighbors, g2.neighbors)
    ce = torch.rand(n * g1.k, n * g2.k, generator=gen)
    return QAP.from_dense(cv, ce, g1.neighbors, g2.neighbors)


@pytest.fixture
def make_qap():
    return random_qap
