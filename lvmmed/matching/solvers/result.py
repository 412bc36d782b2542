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
        fixed_point: IPFP's last projection returned ``perm`` itself, i.e. ``perm`` is an optimal assignment of
            the linearisation at ``perm`` (used by the black-box backward pass to skip a provably unchanged re-solve).
    """

    perm: Tensor
    objective: float
    iterations: int
    fixed_point: bool = False

    def matrix(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The (N, N) permutation matrix X."""
        n = self.perm.numel()
        x = torch.zeros(n, n, dtype=dtype, device=self.perm.device)
        x[torch.arange(n, device=self.perm.device), self.perm] = 1
        return x
