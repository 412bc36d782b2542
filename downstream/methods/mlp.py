"""MLP probe on frozen features (LVM-Med's "frozen + multi-FC" setting)."""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

from downstream.contract import HeadMethod


class MLPProbe(HeadMethod):
    """``mlp.layers`` Linear layers (GELU, dropout between them) on frozen pooled features."""

    accepts_plain_features = True  # trains on cached frozen features (downstream.train_loop.Trainer)
    head_only = True

    def __init__(self, backbone: nn.Module, num_classes: int, cfg: Any, key: str | None = None) -> None:
        super().__init__(backbone, num_classes, cfg, key)
        mc = cfg.mlp
        dims = [backbone.feature_dim] + [mc.hidden] * (max(mc.layers, 1) - 1)
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(dims):
            layers += [nn.Linear(a, b), nn.GELU(), nn.Dropout(mc.dropout)]
        layers.append(nn.Linear(dims[-1], num_classes))
        self.head = nn.Sequential(*layers)
        self.declare_trainable()

    def _linear(self) -> nn.Linear:
        return self.head[-1]

    def forward(self, x: torch.Tensor, plain: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of ``x``, or of its cached frozen features ``plain`` (B, D) when given."""
        if plain is None:
            with torch.no_grad():
                plain = self.backbone(x)
        return self.head(plain)
