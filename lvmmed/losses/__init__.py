"""Pretraining losses with one interface: ``loss, info = module(z0, z1, feats0=None, feats1=None)``.

``build_loss(cfg, dim)`` picks the LVM-Med graph-matching loss or a lightly baseline from a ``LossConfig``.
"""

from __future__ import annotations

from torch import nn

from lvmmed.losses.baselines import BYOLStyleLoss, NTXentLoss, VICRegLoss
from lvmmed.losses.config import (
    BYOLConfig,
    GraphMatchingConfig,
    LossConfig,
    NTXentConfig,
    VICRegConfig,
)
from lvmmed.losses.graph_matching import GraphMatchingLoss


def build_loss(cfg: LossConfig, dim: int) -> nn.Module:
    """The loss module named by ``cfg.name``; ``dim`` is the projector output dimension."""
    if cfg.name == "graph_matching":
        return GraphMatchingLoss(dim, cfg.graph_matching)
    if cfg.name == "ntxent":
        return NTXentLoss(cfg.ntxent)
    if cfg.name == "vicreg":
        return VICRegLoss(cfg.vicreg)
    if cfg.name == "byol":
        return BYOLStyleLoss(dim, cfg.byol)
    raise ValueError(f"unknown loss '{cfg.name}'")


__all__ = [
    "BYOLConfig",
    "BYOLStyleLoss",
    "GraphMatchingConfig",
    "GraphMatchingLoss",
    "LossConfig",
    "NTXentConfig",
    "NTXentLoss",
    "VICRegConfig",
    "VICRegLoss",
    "build_loss",
]
