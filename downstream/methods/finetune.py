"""Full fine-tuning (FF): every backbone parameter trains, with a linear head (LVM-Med "non-frozen")."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from downstream.contract import HeadMethod, make_head


class FullFinetune(HeadMethod):
    """Backbone at ``optim.backbone_lr``, head at ``optim.head_lr`` (separate param groups)."""

    def __init__(self, backbone: nn.Module, num_classes: int, cfg: Any, key: str | None = None) -> None:
        super().__init__(backbone, num_classes, cfg, key)
        self.backbone.requires_grad_(True)
        self.head = make_head(backbone.feature_dim, num_classes)
        self.declare_trainable()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))
