"""Pretraining losses with one interface: ``loss, info = module(z0, z1, feats0=None, feats1=None)``.

``build_loss(cfg, dim)`` builds the loss that ``cfg.name`` names in :data:`LOSSES`: the LVM-Med graph-matching
loss or a lightly baseline, each registered next to its class. A new loss is one ``LOSSES.register`` call
(CONTRIBUTING.md, "Adding a loss (or any named component)"); ``loss.name`` then validates and builds it. A loss
whose ``uses_local_features`` attribute is true also receives the backbone's pre-pool feature maps.
"""

from __future__ import annotations

from torch import nn

from lvmmed.losses.baselines import BYOLStyleLoss, NTXentLoss, VICRegLoss
from lvmmed.losses.config import (
    LOSSES,
    BYOLConfig,
    GraphMatchingConfig,
    LossConfig,
    NTXentConfig,
    VICRegConfig,
)
from lvmmed.losses.graph_matching import GraphMatchingLoss


def build_loss(cfg: LossConfig, dim: int) -> nn.Module:
    """The loss module registered under ``cfg.name``; ``dim`` is the projector output dimension."""
    return LOSSES.build(cfg.name, cfg, dim)


__all__ = [
    "LOSSES",
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
