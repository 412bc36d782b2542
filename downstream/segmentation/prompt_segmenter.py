"""``seg-prompt-shallow`` / ``seg-prompt-deep``: a prompt-tuned ViT segmenter (Saeed et al. 2023).

Saeed et al. adapt a pretrained transformer segmentation model (probably UNETR) to a new medical center with
learnable prompt tokens in the encoder's input space (< 1 % of the parameters), shallow (first layer only) or
deep (every layer), the encoder frozen. We carry this to our ViT + UNETR decoder (:mod:`.decoders`):

* prompt tokens are inserted after the CLS token, after the position embedding (no positional embedding of
  their own, as VPT, Jia et al. 2022), by ``Backbone.forward_with_prompts``;
* the prompts are **stripped from every hidden state** before the decoder reshapes it to a (h, w) grid, so the
  decoder sees exactly the shapes of the plain model (and ``num_tokens=0`` *is* the plain model);
* trainable: the prompts, plus the decoder when ``prompt.tune_decoder`` (the paper reports both settings);
* only the per-center delta (prompts, tuned decoder) is saved (``delta_state_dict``).

Choices the paper leaves open (config ``prompt.*``): token count, Xavier-uniform init (VPT:
``v = sqrt(6 / (3·p·p + D))`` with patch p) or zeros, and whether the decoder is tuned.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from downstream.segmentation.decoders import vit_skip_indices
from downstream.segmentation.unet import SegmentationMethod


class PromptSegmenter(SegmentationMethod):
    """ViT encoder (frozen) with learnable prompts and a UNETR decoder.

    Args:
        backbone: An lvmmed ViT ``Backbone`` (needs ``forward_with_prompts``).
        num_classes: Classes including background.
        cfg: A :class:`~downstream.segmentation.config.SegmentationConfig` (reads ``prompt``, ``unet``, ``loss``).
    """

    deep: bool = False

    def __init__(self, backbone: nn.Module, num_classes: int, cfg: Any, key: str | None = None) -> None:
        if not getattr(backbone, "is_vit", False):
            raise ValueError(
                f"{key or self.registry_key} needs a ViT backbone (prompt tokens), "
                f"got {getattr(backbone, 'name', '?')}. "
                "Use backbone=vit_tiny/vit_small/vit_base, or seg-unet for CNN encoders."
            )
        super().__init__(backbone, num_classes, cfg, key=key)
        pcfg = cfg.prompt
        self.num_tokens = int(pcfg.num_tokens)
        d = int(backbone.embed_dim)
        shape = (backbone.num_blocks, self.num_tokens, d) if self.deep else (self.num_tokens, d)
        self.prompts = nn.Parameter(torch.zeros(shape))
        if pcfg.init == "xavier" and self.num_tokens:
            patch = int(backbone.feature_strides[-1])
            bound = math.sqrt(6.0 / float(backbone.in_chans * patch * patch + d))
            nn.init.uniform_(self.prompts, -bound, bound)
        self.decoder.requires_grad_(bool(pcfg.tune_decoder))
        self.declare_trainable()

    def hidden_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-block (B, D, h, w) maps with the prompts stripped (the decoder's input)."""
        if self.num_tokens == 0:
            out = self.backbone.forward_with_prompts(x)
        elif self.deep:
            out = self.backbone.forward_with_prompts(x, deep=self.prompts)
        else:
            out = self.backbone.forward_with_prompts(x, shallow=self.prompts)
        return out.hidden_states

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.hidden_maps(x)
        maps = [hidden[i] for i in vit_skip_indices(len(hidden))]
        if self.sam_neck:  # the deepest map through SAM's 256-channel neck (unet.sam_features)
            maps[-1] = self.backbone.neck(maps[-1])
        return self.decoder(maps, x)


class ShallowPromptSegmenter(PromptSegmenter):
    """Prompts prepended once, before the first block (Saeed et al. §2.1, VPT-shallow)."""

    deep = False


class DeepPromptSegmenter(PromptSegmenter):
    """A fresh set of prompts replaces the prompt slice before every block (Saeed et al. §2.2, VPT-deep)."""

    deep = True
