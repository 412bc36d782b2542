"""``mask-guided``: classification guided by a segmentation mask (MedFocusCLIP, Arora & Namboodiri 2025).

MedFocusCLIP prompts CLIP's visual encoder with the *SAM2-segmented image* (the image restricted to the ROI; the
README reports that binary masks alone lose texture and hurt), fuses ROI-aware image features with text
embeddings, and trains with ``L = λ·L_c + (1 − λ)·L_e``. Our formulation (the paper leaves these open; each is a
``mask_guided.*`` field):

* **Prompt input** ``x_roi = x · w + b · (1 − w)``, ``w = m + α(1 − m)``, where ``b`` is black in the
  normalised input space; ``α = 0`` restricts the image to the ROI, ``0 < α < 1`` is a soft blend. With an
  all-ones mask ``x_roi == x`` exactly, so the model reduces to the unmasked classifier (tested).
* **Attention bias** (optional, ViTs): ``log(m_patch + ε)`` added to the CLS→patch attention logits of every
  block, ``m_patch`` the mask averaged over each patch (zero bias for an all-ones mask).
* **Fusion head**: ``concat`` (global features of ``x`` ⊕ ROI features of ``x_roi`` → MLP → embedding) or ``roi``.
* **Alignment** ``L_e``: CLIP-style cross-entropy of ``cos(z, t_c) / τ`` over the class embeddings ``t_c``.
  ``t_c`` are CLIP text embeddings of the class prompts when ``open_clip`` and a *local* weight file are present
  (``text_branch=auto|clip``), otherwise learned class embeddings (``learned``, or ``auto`` without CLIP). The image
  encoder is always an lvmmed backbone (frozen): **without CLIP weights the method runs on our backbones**, and
  ``result["text_branch"]`` says which branch ran.
* **Masks** from the ground truth, from our ``seg-unet``, or from SAM2 when the optional ``sam2`` package and a
  local checkpoint are installed (never downloaded; a clear error otherwise).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from downstream.contract import Method


class OptionalDependencyMissing(RuntimeError):
    """An optional extra (``sam2``, ``open_clip`` or its local weights) is needed but not installed."""


def clip_text_embeddings(class_names: list[str], cfg: Any) -> tuple[torch.Tensor | None, str]:
    """Frozen CLIP text embeddings of ``"a medical image of <class>"``, or ``(None, reason)`` when unavailable.

    Raises:
        OptionalDependencyMissing: ``text_branch=clip`` but open_clip or the local weights are missing.
    """
    mg = cfg.mask_guided
    if mg.text_branch == "learned":
        return None, "learned class embeddings (text_branch=learned)"
    reason = ""
    if importlib.util.find_spec("open_clip") is None:
        reason = "open_clip is not installed (optional extra: pip install open_clip_torch)"
    elif not mg.clip_pretrained or not Path(mg.clip_pretrained).is_file():
        reason = (
            f"no local CLIP weight file (mask_guided.clip_pretrained={mg.clip_pretrained!r}); nothing is downloaded"
        )
    if reason:
        if mg.text_branch == "clip":
            raise OptionalDependencyMissing(f"mask_guided.text_branch=clip: {reason}")
        return None, f"learned class embeddings ({reason})"
    import open_clip

    model = open_clip.create_model(mg.clip_model, pretrained=mg.clip_pretrained)
    tokenizer = open_clip.get_tokenizer(mg.clip_model)
    with torch.no_grad():
        text = model.encode_text(tokenizer([f"a medical image of {n.replace('_', ' ')}" for n in class_names]))
    return F.normalize(text.float(), dim=-1), f"CLIP text ({mg.clip_model}, {mg.clip_pretrained})"


def sam2_masks(images: torch.Tensor, cfg: Any) -> torch.Tensor:
    """Binary ROI masks from SAM2's automatic mask generator (union of the generated masks), offline only.

    Raises:
        OptionalDependencyMissing: ``sam2`` or its local checkpoint/config is not installed.
    """
    mg = cfg.mask_guided
    if importlib.util.find_spec("sam2") is None:
        raise OptionalDependencyMissing(
            "mask_source=sam2 needs the optional `sam2` package and local weights (mask_guided.sam2_checkpoint, "
            "mask_guided.sam2_config); it is not installed here. Use mask_source=gt or mask_source=seg-unet."
        )
    if not mg.sam2_checkpoint or not Path(mg.sam2_checkpoint).is_file() or not mg.sam2_config:
        raise OptionalDependencyMissing(
            f"mask_source=sam2: set mask_guided.sam2_checkpoint to a local file (got {mg.sam2_checkpoint!r}) and "
            "mask_guided.sam2_config; weights are never downloaded"
        )
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from sam2.build_sam import build_sam2

    generator = SAM2AutomaticMaskGenerator(build_sam2(mg.sam2_config, mg.sam2_checkpoint, device="cpu"))
    out = torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.long)
    for i, img in enumerate(images):
        rgb = (img.expand(3, -1, -1).permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)
        for m in generator.generate(rgb):
            out[i] |= torch.from_numpy(m["segmentation"]).long()
    return out


def _blocks_take_attn_mask(backbone: nn.Module) -> bool:
    import inspect

    if not getattr(backbone, "is_vit", False) or not getattr(backbone, "num_prefix_tokens", 0):
        return False
    return "attn_mask" in inspect.signature(backbone.blocks[0].forward).parameters


class MaskGuidedClassifier(Method):
    """Frozen encoder, ROI prompt input, fusion head, class logits and an alignment embedding.

    In the segmentation task family because it consumes segmentation masks; its target is an
    image-level class. ``forward(x, mask=None)`` returns ``{"logits", "embedding"}``; ``mask=None`` is the
    unmasked classifier (ROI = whole image).

    Args:
        backbone: Any lvmmed ``Backbone`` (frozen; attention bias needs a timm ViT).
        num_classes: Image-level classes.
        cfg: A :class:`~downstream.segmentation.config.SegmentationConfig` (reads ``mask_guided``, ``norm_*``).
        class_names: Used for the CLIP text prompts.
    """

    task = "segmentation"

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        cfg: Any,
        key: str | None = None,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__(backbone, num_classes, cfg, key=key)
        mg = cfg.mask_guided
        self.alpha, self.lam, self.temperature = float(mg.blend_alpha), float(mg.lam), float(mg.temperature)
        self.fusion_mode, self.attention_bias = mg.fusion, bool(mg.attention_bias)
        if self.attention_bias and not _blocks_take_attn_mask(backbone):
            raise ValueError(
                "mask_guided.attention_bias needs a ViT whose blocks accept an additive attn_mask (timm ViTs: "
                f"vit_tiny/vit_small/vit_base); {getattr(backbone, 'name', '?')} does not"
            )
        self.background = (0.0 - cfg.norm_mean) / cfg.norm_std  # black in the normalised input space
        d = int(backbone.feature_dim)
        hidden = max(64, d // 2)
        in_dim = 2 * d if self.fusion_mode == "concat" else d
        self.fusion = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.head = nn.Linear(hidden, num_classes)
        names = list(class_names or [f"class_{i}" for i in range(num_classes)])
        text, self.text_branch = clip_text_embeddings(names, cfg)
        if text is None:
            self.class_embed = nn.Parameter(torch.randn(num_classes, hidden) / math.sqrt(hidden))
            self.text_proj = None
        else:
            self.register_buffer("text_embed", text)
            self.text_proj = nn.Linear(text.shape[1], hidden)
        self.declare_trainable()

    def roi_input(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x · w + b · (1 − w)`` with ``w = m + α(1 − m)`` (exactly ``x`` for an all-ones mask)."""
        m = mask.to(x.dtype).unsqueeze(1) if mask.ndim == 3 else mask.to(x.dtype)
        w = m + self.alpha * (1 - m)
        return x * w + self.background * (1 - w)

    def _encode_biased(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pooled ViT features with ``log(m_patch + ε)`` added to the CLS→patch attention logits."""
        bb = self.backbone
        patch = int(bb.feature_strides[-1])
        m = F.avg_pool2d(mask.to(x.dtype).unsqueeze(1), patch).flatten(1)  # (B, N)
        h = bb.prepare(x)
        t, p = h.shape[1], int(bb.num_prefix_tokens)
        bias = torch.zeros(h.shape[0], 1, t, t, dtype=h.dtype, device=h.device)
        bias[:, 0, 0, p:] = torch.log(m + 1e-4) - torch.log(torch.ones_like(m) + 1e-4)  # 0 where fully ROI
        for block in bb.blocks:
            h = block(h, attn_mask=bias)
        return bb.finalize(h)

    def class_embeddings(self) -> torch.Tensor:
        return self.class_embed if self.text_proj is None else self.text_proj(self.text_embed)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        g = self.backbone(x)
        if mask is None:
            r = g
        elif self.attention_bias:
            r = self._encode_biased(self.roi_input(x, mask), mask)
        else:
            r = self.backbone(self.roi_input(x, mask))
        z = self.fusion(torch.cat([g, r], dim=1) if self.fusion_mode == "concat" else r)
        return {"logits": self.head(z), "embedding": z}

    def losses(self, out: dict[str, torch.Tensor], target: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"task": λ·CE, "align": (1 − λ)·CE(cos(z, t_c)/τ)}`` (the loop sums them)."""
        ce = F.cross_entropy(out["logits"], target)
        sim = F.normalize(out["embedding"], dim=-1) @ F.normalize(self.class_embeddings(), dim=-1).T
        align = F.cross_entropy(sim / self.temperature, target)
        return {"task": self.lam * ce, "align": (1.0 - self.lam) * align}

    def param_groups(self, cfg: Any) -> list[dict[str, Any]]:
        """One ``head`` group (fusion, head, class embeddings) at ``optim.head_lr``."""
        return self._groups(cfg, [("head", self.trainable_parameters(), cfg.optim.head_lr)])
