"""Visual Prompt Tuning, shallow and deep (Jia et al., ECCV 2022, arXiv 2203.12119), written from the paper.

The token mechanics live in the backbone (``Backbone.forward_with_prompts``): prompts are inserted after the
prefix (CLS) tokens *after* the position embedding, carry no position embedding of their own, and for deep VPT
the prompt slice is replaced before every block. This module owns the prompt parameters and the head:

* shallow: P ∈ R^{N×D} (N·D parameters); deep: one set per block, (L, N, D) (L·N·D parameters);
* init: uniform(−v, v), v = sqrt(6 / (C·p·p + D)) (Xavier over the patch-embedding fan-in, as in the paper);
* prompt dropout ``vpt.dropout`` (paper default 0);
* head: linear on the pooled (final-normed CLS) output; the backbone stays in ``eval()``; it starts from the
  logistic-regression probe on plain features with ``vpt.init_head=lp`` (our default; the paper's head is random).

Works on any ViT backbone of the contract (timm ViT, SAM-style ViT). ``num_tokens=0`` is the plain backbone.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from downstream.contract import HeadMethod, make_head


def _patch_size(backbone: nn.Module) -> int:
    pe = getattr(backbone, "patch_embed", None)
    size = getattr(pe, "patch_size", None)
    if size is not None:
        return int(size[0] if isinstance(size, tuple | list) else size)
    return int(backbone.feature_strides[-1])


class VPT(HeadMethod):
    """Prompt tokens + linear head on a frozen ViT."""

    deep = False

    def __init__(self, backbone: nn.Module, num_classes: int, cfg: Any, key: str | None = None) -> None:
        super().__init__(backbone, num_classes, cfg, key)
        if not getattr(backbone, "is_vit", False):
            raise ValueError(f"{self.key} needs a ViT backbone (token interface); got {type(backbone).__name__}")
        n, d = int(cfg.vpt.num_tokens), int(backbone.embed_dim)
        self.num_tokens = n
        self.init_head_from_probe = cfg.vpt.init_head == "lp"
        p = _patch_size(backbone)
        bound = math.sqrt(6.0 / (backbone.in_chans * p * p + d))
        shape = (backbone.num_blocks, n, d) if self.deep else (n, d)
        self.prompts = nn.Parameter(torch.empty(shape).uniform_(-bound, bound)) if n else None
        self.prompt_dropout = nn.Dropout(cfg.vpt.dropout)
        self.head = make_head(backbone.feature_dim, num_classes)
        self.declare_trainable()

    def param_groups(self, cfg: Any) -> list[dict[str, Any]]:
        prompts = [self.prompts] if self.prompts is not None else []
        return self._groups(
            cfg, [("prompt", prompts, cfg.vpt.lr), ("head", list(self.head.parameters()), cfg.optim.head_lr)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.prompts is None:
            pooled = self.backbone.forward_with_prompts(x).pooled
        else:
            prompts = self.prompt_dropout(self.prompts)
            if self.deep:
                pooled = self.backbone.forward_with_prompts(x, deep=prompts).pooled
            else:
                pooled = self.backbone.forward_with_prompts(x, shallow=prompts).pooled
        return self.head(pooled)


class VPTShallow(VPT):
    deep = False


class VPTDeep(VPT):
    deep = True
