"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021) on a frozen backbone.

After every block of the backbone contract's staged interface: h ← h + up(σ(down(h))), with the up-projection
zero-initialised so that the adapted model equals the frozen one at step 0. Reduction factor r (VPT's default 8):
the bottleneck width is max(D // r, 1).

Placement is our choice (documented): after the whole block on the residual stream, rather than inside the block
after its MLP as in Pfeiffer/VPT's adapter block. It needs no change to the backbone's modules and works for ViT
tokens (B, T, D; Linear projections) and ResNet stages (B, C, H, W; 1×1 convolutions). The pooled output after
``finalize`` feeds a linear head.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from downstream.contract import HeadMethod, make_head


class Bottleneck(nn.Module):
    """h ↦ up(GELU(down(h))) for tokens (``conv=False``) or feature maps (``conv=True``); up starts at zero."""

    def __init__(self, dim: int, reduction: int = 8, conv: bool = False) -> None:
        super().__init__()
        hidden = max(dim // max(reduction, 1), 1)
        layer = (lambda a, b: nn.Conv2d(a, b, 1)) if conv else nn.Linear
        self.down, self.act, self.up = layer(dim, hidden), nn.GELU(), layer(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(h)))


def hidden_layout(backbone: nn.Module) -> str:
    """Layout of block outputs: ``tokens`` (B, T, D; timm ViT), ``grid`` (B, H, W, D; SAM ViT) or ``map``
    (B, C, H, W; ResNet)."""
    if not getattr(backbone, "is_vit", False):
        return "map"
    return "grid" if getattr(backbone, "token_layout", "tokens") == "grid" else "tokens"


def pool_hidden(h: torch.Tensor, layout: str) -> torch.Tensor:
    """Mean over tokens / grid cells / pixels: (B, D)."""
    return h.mean(dim={"tokens": (1,), "grid": (1, 2), "map": (2, 3)}[layout])


def block_widths(backbone: nn.Module) -> list[int]:
    """Channel/token width after every block (ViT: embed_dim; ResNet: stage widths)."""
    if getattr(backbone, "is_vit", False):
        return [int(backbone.embed_dim)] * backbone.num_blocks
    return [int(c) for c in backbone.feature_channels[-backbone.num_blocks :]]


class AdapterTuning(HeadMethod):
    """One bottleneck adapter per block + linear head; backbone frozen and in ``eval()``."""

    def __init__(self, backbone: nn.Module, num_classes: int, cfg: Any, key: str | None = None) -> None:
        super().__init__(backbone, num_classes, cfg, key)
        conv = hidden_layout(backbone) == "map"
        self.adapters = nn.ModuleList(Bottleneck(w, cfg.adapter.reduction, conv) for w in block_widths(backbone))
        self.head = make_head(backbone.feature_dim, num_classes)
        self.declare_trainable()

    def param_groups(self, cfg: Any) -> list[dict[str, Any]]:
        return self._groups(
            cfg,
            [
                ("adapter", list(self.adapters.parameters()), cfg.adapter.lr),
                ("head", list(self.head.parameters()), cfg.optim.head_lr),
            ],
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.backbone.prepare(x)
        for block, adapter in zip(self.backbone.blocks, self.adapters):
            h = block(h)
            h = h + adapter(h)
        return self.head(self.backbone.finalize(h))
