"""Dense decoders on the multi-scale features of any lvmmed backbone, built from MONAI blocks.

* :class:`UNetDecoder` (Ronneberger et al., MICCAI 2015): for pyramidal CNN features (ResNet strides 2..32), as
  LVM-Med's 2-D segmentation uses a U-Net on its ResNet-50 (Nguyen et al., NeurIPS 2023, via
  segmentation_models_pytorch). Each stage is MONAI's ``UpCat`` (2x upsample, concatenate the skip, two
  conv-norm-act layers); a last ``UpCat`` without skip restores the input resolution.
* :class:`UNETRDecoder` (Hatamizadeh et al., WACV 2022): for a ViT whose features all share the patch stride.
  Hidden states at depth 1/4, 1/2, 3/4 are progressively upsampled (``UnetrPrUpBlock``) into skips at strides
  P/2, P/4, P/8; the last hidden state is decoded upwards (``UnetrUpBlock``) and the raw image gives the
  full-resolution skip (``UnetrBasicBlock``), all with ``spatial_dims=2``.

Choices the papers leave open (config fields of :class:`~downstream.segmentation.config.SegModelConfig`):
decoder width (``decoder_channels``), normalisation (``norm``: instance as MONAI UNETR, or batch as smp U-Net).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock
from monai.networks.nets.basic_unet import UpCat
from torch import nn

NORMS = ("instance", "batch")


def vit_skip_indices(num_blocks: int) -> list[int]:
    """Blocks feeding the UNETR decoder: depth 1/4, 1/2, 3/4, 1 (as ``ViTBackbone.forward_multiscale``)."""
    return [max(num_blocks * k // 4 - 1, 0) for k in (1, 2, 3, 4)]


class UNetDecoder(nn.Module):
    """U-Net decoder for features at increasing power-of-two strides (shallow to deep).

    Args:
        feature_channels: Channels of each encoder feature map, shallow to deep.
        feature_strides: Stride of each map w.r.t. the input (e.g. ``(2, 4, 8, 16, 32)``).
        num_classes: Output classes including background.
        decoder_channels: Width of the decoder stage at each skip level (shallow to deep); defaults to
            ``(16, 32, 64, 128, ...)`` truncated to the number of maps minus one.
        norm: ``"batch"`` or ``"instance"``.
    """

    def __init__(
        self,
        feature_channels: Sequence[int],
        feature_strides: Sequence[int],
        num_classes: int,
        decoder_channels: Sequence[int] | None = None,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        chans, strides = list(feature_channels), list(feature_strides)
        if len(chans) != len(strides) or len(chans) < 2:
            raise ValueError(f"need >= 2 feature maps with strides, got channels={chans} strides={strides}")
        for a, b in itertools.pairwise(strides):
            if b != 2 * a:
                raise ValueError(f"UNetDecoder needs strides doubling at every level, got {strides}")
        n_skips = len(chans) - 1
        widths = list(decoder_channels or [16 * 2**i for i in range(n_skips)])[:n_skips]
        if len(widths) != n_skips:
            raise ValueError(f"decoder_channels needs {n_skips} entries, got {list(decoder_channels or [])}")
        norm_arg = ("batch", {"affine": True}) if norm == "batch" else ("instance", {"affine": True})
        act = ("relu", {"inplace": True})

        def up_block(in_chans: int, skip_chans: int, out_chans: int) -> UpCat:
            # 2x nearest upsample, concat the skip (none when skip_chans == 0), two conv-norm-act layers.
            return UpCat(2, in_chans, skip_chans, out_chans, act, norm_arg, bias=False, upsample="nontrainable",
                         pre_conv=None, interp_mode="nearest", align_corners=None, halves=False)  # fmt: skip

        self.ups = nn.ModuleList()
        in_ch = chans[-1]
        for level in range(n_skips - 1, -1, -1):  # deepest skip first
            self.ups.append(up_block(in_ch, chans[level], widths[level]))
            in_ch = widths[level]
        self.first_stride = strides[0]
        n_final = int(math.log2(strides[0]))
        self.final = nn.ModuleList(up_block(in_ch, 0, in_ch) for _ in range(n_final))
        self.head = nn.Conv2d(in_ch, num_classes, kernel_size=1)

    def forward(self, features: Sequence[torch.Tensor], image: torch.Tensor | None = None) -> torch.Tensor:
        """Decodes ``features`` (shallow to deep) to (B, num_classes, H, W) logits."""
        h = features[-1]
        for up, skip in zip(self.ups, reversed(features[:-1])):
            h = up(h, skip)
        for up in self.final:
            h = up(h, None)
        return self.head(h)


class UNETRDecoder(nn.Module):
    """UNETR decoder (2-D) for four same-stride ViT hidden-state maps plus the input image.

    Args:
        in_chans: Image channels (the full-resolution skip is computed from the image).
        embed_dim: Token width D of the hidden-state maps (B, D, h, w).
        patch_size: Patch stride P; must be 16 (timm and SAM ViTs).
        num_classes: Output classes including background.
        feature_size: Base decoder width F (UNETR's ``feature_size``; skips use F, 2F, 4F, 8F).
        norm: ``"instance"`` (MONAI UNETR default) or ``"batch"``.
        bottom_dim: Width of the deepest map (``embed_dim`` unless it comes from SAM's 256-channel neck).
    """

    def __init__(
        self,
        in_chans: int,
        embed_dim: int,
        patch_size: int,
        num_classes: int,
        feature_size: int = 16,
        norm: str = "instance",
        bottom_dim: int | None = None,
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if patch_size != 16:
            raise ValueError(f"UNETRDecoder is built for 16-pixel patches (UNETR, timm/SAM ViTs), got {patch_size}")
        f = feature_size
        self.enc1 = UnetrBasicBlock(2, in_chans, f, kernel_size=3, stride=1, norm_name=norm, res_block=True)
        # Skips from hidden states 1/4, 1/2, 3/4 at strides P/8... P/2 (num_layer extra 2x upsamplings each).
        self.skips = nn.ModuleList(
            UnetrPrUpBlock(2, embed_dim, f * 2 ** (i + 1), num_layer=2 - i, kernel_size=3, stride=1,
                           upsample_kernel_size=2, norm_name=norm, res_block=True)
            for i in range(3)
        )  # fmt: skip
        self.ups = nn.ModuleList()
        in_ch = bottom_dim or embed_dim
        for w in (f * 8, f * 4, f * 2, f):
            self.ups.append(UnetrUpBlock(2, in_ch, w, kernel_size=3, upsample_kernel_size=2, norm_name=norm,
                                         res_block=True))  # fmt: skip
            in_ch = w
        self.head = UnetOutBlock(2, f, num_classes)

    def forward(self, features: Sequence[torch.Tensor], image: torch.Tensor | None = None) -> torch.Tensor:
        """``features``: four (B, D, h, w) maps (depth 1/4..1); ``image``: the (B, C, H, W) encoder input."""
        if len(features) != 4:
            raise ValueError(f"UNETRDecoder takes 4 hidden-state maps, got {len(features)}")
        if image is None:
            raise ValueError("UNETRDecoder needs the input image for its full-resolution skip")
        skips = [self.enc1(image)] + [blk(z) for blk, z in zip(self.skips, features[:3])]
        # skips[k] has stride 2**k (k = 0..3); decode from the deepest map (stride 16) upwards.
        h = features[3]
        for up, skip in zip(self.ups, reversed(skips)):
            h = up(h, skip)
        return self.head(h)


def build_decoder(
    backbone: nn.Module, num_classes: int, decoder_channels: Sequence[int] = (), norm: str = "", sam_neck: bool = False
) -> nn.Module:
    """The decoder matching a backbone: UNETR for ViTs, U-Net for pyramidal CNNs.

    Args:
        backbone: An lvmmed ``Backbone`` (uses ``is_vit``, ``feature_channels``, ``feature_strides``, ``in_chans``).
        num_classes: Output classes including background.
        decoder_channels: U-Net stage widths (CNN) or ``(feature_size,)`` (ViT); empty = defaults.
        norm: ``"batch"``/``"instance"``; empty = the architecture default (batch for U-Net, instance for UNETR).
        sam_neck: The deepest map comes from a SAM encoder's neck (``backbone.neck_channels`` wide).
    """
    if getattr(backbone, "is_vit", False):
        patch = int(backbone.feature_strides[-1])
        size = int(decoder_channels[0]) if decoder_channels else 16
        bottom = int(backbone.neck_channels) if sam_neck else None
        return UNETRDecoder(backbone.in_chans, backbone.embed_dim, patch, num_classes, size, norm or "instance",
                            bottom)  # fmt: skip
    return UNetDecoder(
        backbone.feature_channels, backbone.feature_strides, num_classes, list(decoder_channels) or None,
        norm or "batch",
    )  # fmt: skip
