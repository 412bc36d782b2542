"""``seg-unet``: a U-Net (CNN) or UNETR (ViT) decoder on any lvmmed encoder, trained with MONAI's DiceCELoss.

LVM-Med (Nguyen et al., NeurIPS 2023) evaluates 2-D segmentation with a U-Net on its ResNet-50, end to end
(Adam, lr 1e-4, grad clip 1); for ViT encoders we follow UNETR (Hatamizadeh et al., WACV 2022). The encoder is
frozen (``unet.freeze_encoder=true``, decoder only) or fine-tuned (default, LVM-Med's setting).

Example:
    >>> from lvmmed.models import create_backbone
    >>> from downstream.segmentation.config import SegmentationConfig
    >>> m = SegUNet(create_backbone("resnet18", in_chans=1), 4, SegmentationConfig())
    >>> m(torch.zeros(1, 1, 64, 64)).shape
    torch.Size([1, 4, 64, 64])
"""

from __future__ import annotations

from typing import Any

import torch
from monai.losses import DiceCELoss
from torch import nn

from downstream.contract import Method
from downstream.segmentation.decoders import build_decoder


def seg_loss(cfg: Any) -> nn.Module:
    """MONAI ``DiceCELoss`` (softmax over classes, integer targets one-hot encoded) from ``cfg.loss``."""
    return DiceCELoss(
        include_background=cfg.loss.include_background,
        to_onehot_y=True,
        softmax=True,
        lambda_dice=cfg.loss.lambda_dice,
        lambda_ce=cfg.loss.lambda_ce,
    )


def uses_sam_neck(backbone: nn.Module, cfg: Any) -> bool:
    """Whether the decoder reads SAM's neck (``unet.sam_features``; ``auto``: the published ``lvmmed-vitb``)."""
    choice = getattr(getattr(cfg, "unet", None), "sam_features", "pre_neck")
    if not hasattr(backbone, "neck") or choice == "pre_neck":
        return False
    return choice == "neck" or str(getattr(cfg, "weights", "")).partition("=")[0] == "lvmmed-vitb"


class SegmentationMethod(Method):
    """Shared parts of the segmentation methods: decoder, Dice+CE loss, and the optimiser groups.

    ``forward(x)`` returns (B, C, H, W) logits; targets are (B, H, W) integer label maps.
    """

    task = "segmentation"

    def __init__(self, backbone: nn.Module, num_classes: int, cfg: Any, key: str | None = None) -> None:
        super().__init__(backbone, num_classes, cfg, key=key)
        unet = getattr(cfg, "unet", None)
        self.sam_neck = uses_sam_neck(backbone, cfg)
        self.decoder = build_decoder(
            backbone,
            num_classes,
            list(getattr(unet, "decoder_channels", []) or []),
            getattr(unet, "norm", ""),
            self.sam_neck,
        )
        self.loss_fn = seg_loss(cfg)

    def task_loss(self, out: torch.Tensor | dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """Dice + CE of (B, C, H, W) logits against (B, H, W) labels."""
        return self.loss_fn(self.logits_of(out).float(), target.long().unsqueeze(1))

    def param_groups(self, cfg: Any) -> list[dict[str, Any]]:
        """Groups ``prompts`` (``optim.prompt_lr``), ``decoder`` (``optim.head_lr``), ``backbone``."""
        named = list(self.named_trainable())
        spec = [
            ("prompts", [p for n, p in named if n.startswith("prompts")], cfg.optim.prompt_lr),
            ("decoder", [p for n, p in named if n.startswith("decoder")], cfg.optim.head_lr),
            ("backbone", [p for n, p in named if n.startswith("backbone")], cfg.optim.backbone_lr),
        ]
        return self._groups(cfg, spec)

    def _delta_buffer_names(self) -> list[str]:
        """Buffers (BatchNorm statistics) of the modules that own declared parameters: they change in training."""
        owners = {n.rsplit(".", 1)[0] for n in self.declared_names if "." in n}
        return [n for n, _ in self.named_buffers() if n.rsplit(".", 1)[0] in owners]

    def delta_state_dict(self) -> dict[str, torch.Tensor]:
        """Declared parameters plus the running statistics of the trained modules (so a reload is exact)."""
        buffers = dict(self.named_buffers())
        stats = {n: buffers[n].detach().cpu().clone() for n in self._delta_buffer_names()}
        return {**super().delta_state_dict(), **stats}

    def load_delta_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        names = set(self._delta_buffer_names())
        super().load_delta_state_dict({k: v for k, v in state.items() if k not in names})
        buffers = dict(self.named_buffers())
        missing = sorted(names - set(state))
        if missing:
            raise KeyError(f"delta mismatch for {self.key}: missing buffers {missing[:5]}")
        with torch.no_grad():
            for n in names:
                buffers[n].copy_(state[n].to(buffers[n].device, buffers[n].dtype))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W) arg-max labels."""
        return self.logits_of(self(x)).argmax(1)


class SegUNet(SegmentationMethod):
    """Encoder + U-Net/UNETR decoder; the encoder trains unless ``cfg.unet.freeze_encoder``.

    Args:
        backbone: Any lvmmed ``Backbone`` (``forward_multiscale`` gives the skips).
        num_classes: Classes including background.
        cfg: A :class:`~downstream.segmentation.config.SegmentationConfig` (reads ``unet``, ``loss``).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, cfg: Any, key: str | None = None) -> None:
        super().__init__(backbone, num_classes, cfg, key=key)
        if not cfg.unet.freeze_encoder:
            self.backbone.requires_grad_(True)
        self.declare_trainable()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.backbone.forward_multiscale(x)
        if self.sam_neck:
            maps = [*maps[:-1], self.backbone.neck(maps[-1])]
        return self.decoder(maps, x)
