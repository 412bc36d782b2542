"""LoRA (Hu et al., ICLR 2022) through peft, on the backbone's ``lora.target_modules`` (timm ViT: fused ``qkv``).

peft's ``inject_adapter_in_model`` adds the low-rank pair (A: Kaiming-uniform, B: zero, so the model is unchanged
at step 0) to every matching Linear/Conv layer, in place. Only the ``lora_`` tensors and the head train; the
delta checkpoint therefore holds exactly peft's adapter weights plus the head.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from downstream.contract import HeadMethod, make_head


class LoRATuning(HeadMethod):
    """peft LoRA on the frozen backbone + linear head."""

    def __init__(self, backbone: nn.Module, num_classes: int, cfg: Any, key: str | None = None) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        super().__init__(backbone, num_classes, cfg, key)
        lc = cfg.lora
        config = LoraConfig(
            r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout, target_modules=list(lc.target_modules), bias="none"
        )
        try:
            inject_adapter_in_model(config, self.backbone)
        except ValueError as err:
            raise ValueError(
                f"lora: no layer of {type(backbone).__name__} matches target_modules={list(lc.target_modules)} "
                f"(set lora.target_modules): {err}"
            ) from None
        for name, p in self.backbone.named_parameters():
            p.requires_grad_("lora_" in name)
        self.head = make_head(backbone.feature_dim, num_classes)
        self.declare_trainable()

    def param_groups(self, cfg: Any) -> list[dict[str, Any]]:
        lora = [p for n, p in self.named_trainable() if "lora_" in n]
        return self._groups(
            cfg, [("lora", lora, cfg.lora.lr), ("head", list(self.head.parameters()), cfg.optim.head_lr)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))
