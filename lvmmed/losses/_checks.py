"""Input validation shared by the loss modules."""

from __future__ import annotations

from torch import Tensor


def check_pair(z0: Tensor, z1: Tensor) -> None:
    """Raises ``ValueError`` unless z0 and z1 are (B, D) tensors of the same shape."""
    if z0.dim() != 2 or z1.dim() != 2:
        raise ValueError(f"expected two (B, D) embeddings, got shapes {tuple(z0.shape)} and {tuple(z1.shape)}")
    if z0.shape != z1.shape:
        raise ValueError(f"the two views must have the same shape (B, D), got {tuple(z0.shape)} and {tuple(z1.shape)}")
    if z0.shape[0] == 0:
        raise ValueError("empty batch: the loss needs at least one sample")
