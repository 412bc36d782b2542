"""Differentiable gathering of a batch across ranks, so one graph spans the global batch.

We use ``lightly.utils.dist.gather`` (``GatherLayer``: ``all_gather`` forward, ``all_reduce``-sum + own slice
backward). Gradient bookkeeping (lightly's 1/world_size trap, lightly PR #2035 / #1977): every rank computes the
*same* global loss L from the gathered batch. The backward all-reduce makes the gradient that reaches rank r's
local embeddings ``W·∂L/∂z_r`` (W = world size); DDP then *averages* parameter gradients over ranks, giving
``(1/W)·Σ_r W·∂L/∂θ_r = ∂L/∂θ``, exactly the single-process full-batch gradient. Parameters that live in the loss
(message passing) see the whole gathered batch on every rank and get the full ``∂L/∂φ`` on each rank; averaging
identical values leaves them unchanged. ``tests/lvmmed/losses/test_distributed.py`` checks both with 2 gloo ranks.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when a process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_batch(x: Tensor) -> Tensor:
    """Concatenates ``x`` from all ranks along dim 0 (rank order), differentiably.

    All ranks must hold the same local batch size (``all_gather`` requirement); a clear error is raised otherwise.
    Without an initialised multi-rank process group the input is returned unchanged.
    """
    if not is_distributed():
        return x
    size = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    if len({int(s) for s in sizes}) != 1:
        found = [int(s) for s in sizes]
        raise ValueError(f"gather_distributed needs equal local batch sizes on all ranks, got {found}")
    from lightly.utils import dist as lightly_dist

    return torch.cat(lightly_dist.gather(x.contiguous()), dim=0)
