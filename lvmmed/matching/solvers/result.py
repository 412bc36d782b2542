"""The common result type of every graph-matching solver."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Matching:
    """A discrete matching.

    Attributes:
        perm: (N,) long tensor; node i of graph 1 is matched to node ``perm[i]`` of graph 2.
        objective: the QAP objective f(X) of this matching.
        iterations: solver iterations used (outer iterations; 1 for Hungarian only).
    """

    perm: Tensor
    objective: float
    iterations: int

    def matrix(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The (N, N) permutation matrix X."""
        n = self.perm.numel()
        x = torch.zeros(n, n, dtype=dtype, device=self.perm.device)
        x[torch.arange(n, device=self.perm.device), self.perm] = 1
        return x
