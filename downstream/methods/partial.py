"""Partial fine-tuning (``partial-k``): the last k backbone blocks and the final norm train, the rest is frozen.

Blocks are the backbone contract's ``blocks`` (transformer blocks for ViTs, residual stages for ResNets). The final
norm (ViT ``norm``, applied in ``finalize``) trains with the last blocks: our choice, since it only rescales what
those blocks produce. Frozen earlier blocks stay in ``eval()``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from downstream.contract import HeadMethod, make_head


class PartialFinetune(HeadMethod):
    """``partial-2`` trains the last 2 blocks; plain ``partial-k`` reads ``partial.k``."""

    def __init__(self, backbone: nn.Module, num_classes: int, cfg: Any, key: str | None = None) -> None:
        super().__init__(backbone, num_classes, cfg, key)
        suffix = (key or "").rsplit("-", 1)[-1]
        self.k = int(suffix) if suffix.isdigit() else int(cfg.partial.k)
        blocks = backbone.blocks
        if not 1 <= self.k <= len(blocks):
            raise ValueError(f"partial-k needs 1 <= k <= {len(blocks)} blocks, got k={self.k}")
        for block in list(blocks)[-self.k :]:
            block.requires_grad_(True)
        norm = getattr(backbone, "norm", None)
        if isinstance(norm, nn.Module):
            norm.requires_grad_(True)
        self.head = make_head(backbone.feature_dim, num_classes)
        self.declare_trainable()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))
