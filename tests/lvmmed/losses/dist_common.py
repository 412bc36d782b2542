"""The fixed problem shared by the distributed worker and the single-process reference."""

from __future__ import annotations

import torch
from torch import nn

from lvmmed.losses import GraphMatchingLoss

BATCH, IN_DIM, DIM = 16, 12, 8


def make_problem(gather: bool):
    """A batch of two noisy views, a linear projector and a GM loss, all from fixed seeds."""
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(BATCH, IN_DIM, generator=gen)
    x0 = base + 1.0 * torch.randn(BATCH, IN_DIM, generator=gen)
    x1 = base + 1.0 * torch.randn(BATCH, IN_DIM, generator=gen)
    torch.manual_seed(0)
    projector = nn.Linear(IN_DIM, DIM)
    loss_fn = GraphMatchingLoss(DIM, k=4, gather_distributed=gather)
    return x0, x1, projector, loss_fn
