"""Full fine-tuning (FF): every backbone parameter trains, with a linear head (LVM-Med "non-frozen").

``finetune.init_head=lp`` (default) starts the head from the logistic-regression probe on frozen features (LP-FT,
Kumar et al., "Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution", ICLR 2022), so
the untrained model is the probe and val selection (:mod:`downstream.tuning`) can keep it.
"""

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
        self.init_head_from_probe = cfg.finetune.init_head == "lp"
        self.head = make_head(backbone.feature_dim, num_classes)
        self.declare_trainable()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))
