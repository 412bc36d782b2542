"""Feature standardisation before a one-layer head, folded back into the head after training.

MAE's linear probe puts a BatchNorm without affine parameters before the head (He et al., CVPR 2022); here the
statistics are the train split's and fixed. The head is re-expressed so the initial logits are unchanged, and after
selection :func:`fold_standardizer` folds the statistics into the linear layer again (same logits), so a tuned
run's delta loads into a freshly built method. Used by the tuning protocol (``downstream/tuning.py``).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["FeatureStandardizer", "fold_standardizer", "standardize_head"]


class FeatureStandardizer(torch.nn.Module):
    """Fixed per-dimension standardisation of pooled features before a linear head (train-split statistics).

    MAE's linear probe puts a BatchNorm without affine parameters before the head (He et al., CVPR 2022); this is
    the same normalisation with frozen statistics. Self-supervised exports can have features whose variation
    across samples is tiny next to their norm (std ~0.03 against a norm of ~14 for our tiny exports); on those an
    SGD-trained head is ill-conditioned, and a probe-initialised head (the probe is fitted on standardised
    features) turns small feature changes into huge logits.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("std", std.detach().clone())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.std


def standardize_head(method: Any, train_features: torch.Tensor) -> bool:
    """Puts a :class:`FeatureStandardizer` before ``method.head`` when the head is one linear layer.

    The linear layer is re-expressed so the logits are unchanged (W' = W·diag(s), b' = b + W·m): the method's
    initial state, e.g. the probe, stays exactly what it was. Returns whether the head was wrapped.
    """
    head = getattr(method, "head", None)
    if not isinstance(head, torch.nn.Module) or any(isinstance(m, FeatureStandardizer) for m in head.modules()):
        return False
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    if len(linears) != 1:
        return False
    linear = linears[0]
    mean = train_features.mean(0).to(linear.weight)
    std = (train_features.std(0) + 1e-6).to(linear.weight)
    with torch.no_grad():
        bias = linear.bias + linear.weight @ mean
        linear.weight.mul_(std)
        linear.bias.copy_(bias)
    method.head = torch.nn.Sequential(FeatureStandardizer(mean, std), head)
    method.declare_trainable()
    return True


def fold_standardizer(method: Any) -> bool:
    """Folds a :class:`FeatureStandardizer` back into the linear head it precedes (the inverse of
    :func:`standardize_head`: W = W'·diag(1/s), b = b' − W·m), so a tuned method has the architecture of a fresh
    one and its saved delta (``delta.safetensors``) loads into ``python -m downstream``'s fresh method; the logits
    are unchanged. Returns whether a standardiser was folded.
    """
    head = getattr(method, "head", None)
    if not (isinstance(head, torch.nn.Sequential) and len(head) == 2 and isinstance(head[0], FeatureStandardizer)):
        return False
    standardizer, inner = head[0], head[1]
    linear = next(m for m in inner.modules() if isinstance(m, torch.nn.Linear))
    with torch.no_grad():
        linear.weight.div_(standardizer.std.to(linear.weight))
        linear.bias.sub_(linear.weight @ standardizer.mean.to(linear.weight))
    method.head = inner
    method.declare_trainable()
    return True
