"""Channel handling shared by pretraining and downstream: match an image to a backbone's input channels.

Choice (configurable by the caller through ``in_chans``): grey images are replicated to 3 channels for 3-channel
backbones (as MONAI#944 and mmpretrain#753 recommend); colour images are converted to luminance (ITU-R BT.601
weights) for 1-channel backbones.
"""

from __future__ import annotations

import numpy as np
import torch

_LUMA = (0.299, 0.587, 0.114)


def to_chw(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """HxW or HxWxC (shard layout) to a float32 (C, H, W) tensor."""
    t = torch.as_tensor(np.asarray(image, dtype=np.float32) if isinstance(image, np.ndarray) else image).float()
    if t.ndim == 2:
        return t.unsqueeze(0)
    if t.ndim == 3 and t.shape[-1] in (1, 3, 4) and t.shape[0] not in (1, 3):
        return t[..., :3].permute(2, 0, 1).contiguous()
    if t.ndim == 3:
        return t
    raise ValueError(f"expected HxW or HxWxC image, got shape {tuple(t.shape)}")


def match_channels(image: torch.Tensor, in_chans: int) -> torch.Tensor:
    """(C, H, W) or (B, C, H, W) tensor to ``in_chans`` channels (1 or 3)."""
    c_dim = image.ndim - 3
    c = image.shape[c_dim]
    if c == in_chans:
        return image
    if c == 1 and in_chans == 3:
        return image.expand(*image.shape[:c_dim], 3, *image.shape[c_dim + 1 :]).contiguous()
    if c == 3 and in_chans == 1:
        w = torch.tensor(_LUMA, dtype=image.dtype, device=image.device).view(3, 1, 1)
        return (image * w).sum(dim=c_dim, keepdim=True)
    raise ValueError(f"cannot map {c} channels to {in_chans}")
