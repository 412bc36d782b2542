"""The SAM image encoder (Kirillov et al., ICCV 2023) under the lvmmed backbone contract.

LVM-Med (Nguyen et al., NeurIPS 2023) publishes its ViT-B as ``lvmmed_vit.pth`` in the layout of
``segment_anything``'s ``ImageEncoderViT`` with no prefix and no absolute position embedding
(github.com/duyhominhnguyen/LVM-Med, ``segment_anything/our_vit.py``): patch 16, width 768, depth 12, 12 heads,
decomposed relative position in every block, 14×14 windowed attention except in the global blocks [2, 5, 8, 11],
and a 256-channel neck. This module builds the modules with
``segment_anything`` itself and registers them directly on the backbone, so state-dict keys are exactly the
published ones (``patch_embed.proj.*``, ``blocks.{i}.attn.rel_pos_h``, ``neck.0.weight``...).

Choices the papers leave open, stated here:

* **Pooled feature** (``forward``): the mean of the pre-neck tokens, ``feature_dim = embed_dim`` (768 for ViT-B).
  LVM-Med's classifier average-pools and feeds a ``Linear(768, C)``, i.e. it pools the 768-wide tokens.
* **forward_features**: the pre-neck map (B, 768, H/16, W/16), so that its spatial mean is ``forward(x)``.
  The SAM neck map (B, 256, H/16, W/16), which SAM's mask decoder consumes and which equals
  ``ImageEncoderViT.forward``, is :meth:`SamViTBackbone.forward_neck`.
* **Hidden state layout**: SAM blocks take (B, H, W, C) grids, so ``prepare`` returns a grid and ``blocks[i]``
  maps grid to grid (``token_layout = "grid"``). Adapters that act on the last dimension work unchanged.
* **Prompts (VPT, Jia et al., ECCV 2022)**: SAM blocks attend within 14×14 windows. Prompt tokens carry no
  position (no relative-position bias on prompt rows or columns). In a windowed block every window attends over
  its own tokens plus all prompts, and each prompt's update is the mean of its per-window updates; in a global
  block the prompts join the full sequence. Norms and MLP act per token as usual. The block's own submodules
  (``norm1``, ``attn.qkv``, rel-pos, ``attn.proj``, ``norm2``, ``mlp``) are reused, so no new weights appear.
  With zero prompts the plain blocks run, so the output equals ``forward`` exactly.
"""

from __future__ import annotations

from functools import partial

import torch
from segment_anything.modeling.image_encoder import (
    ImageEncoderViT,
    add_decomposed_rel_pos,
    window_partition,
    window_unpartition,
)
from torch import nn

from lvmmed.models.base import Backbone, PromptedOutput, expand_prompts
from lvmmed.models.specs import SAM_SPECS


class SamViTBackbone(Backbone):
    """A SAM-style ViT image encoder (``segment_anything.ImageEncoderViT`` modules) as an lvmmed backbone.

    Args:
        name: One of ``SAM_SPECS`` (``sam_vit_b`` is the published LVM-Med ViT-B layout).
        in_chans: Input channels.
        img_size: Input resolution (multiple of the patch size, 224 to 1024 in practice). Relative-position tables
            of global blocks are sized ``2 * img_size / 16 - 1``; checkpoints trained at another size are resized
            on load (``lvmmed.weights``) with the same linear interpolation SAM applies at run time.
    """

    is_vit = True
    token_layout = "grid"
    num_prefix_tokens = 0

    def __init__(self, name: str = "sam_vit_b", in_chans: int = 3, img_size: int = 1024) -> None:
        super().__init__()
        if name not in SAM_SPECS:
            raise ValueError(f"Unknown SAM ViT '{name}'. Known: {sorted(SAM_SPECS)}")
        spec = SAM_SPECS[name]
        if img_size % spec.patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of the patch size {spec.patch_size}")
        encoder = ImageEncoderViT(
            img_size=img_size,
            patch_size=spec.patch_size,
            in_chans=in_chans,
            embed_dim=spec.embed_dim,
            depth=spec.depth,
            num_heads=spec.num_heads,
            mlp_ratio=4.0,
            out_chans=spec.out_chans,
            qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            act_layer=nn.GELU,
            use_abs_pos=spec.use_abs_pos,
            use_rel_pos=True,
            window_size=spec.window_size,
            global_attn_indexes=spec.global_attn_indexes,
        )
        self.name, self.in_chans, self.img_size, self.spec = name, in_chans, img_size, spec
        self.patch_embed = encoder.patch_embed
        self.pos_embed = encoder.pos_embed  # None for the LVM-Med layout (no parameter, no key)
        self.blocks = encoder.blocks
        self.neck = encoder.neck
        self.embed_dim = self.feature_dim = spec.embed_dim
        self.neck_channels = spec.out_chans
        self.grid_size = (img_size // spec.patch_size,) * 2
        self.feature_channels = (spec.embed_dim,) * 4
        self.feature_strides = (spec.patch_size,) * 4

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding (+ absolute position if the spec has one): a (B, H/16, W/16, C) grid."""
        h = self.patch_embed(x)
        if self.pos_embed is not None:
            h = h + self.pos_embed
        return h

    def finalize(self, h: torch.Tensor) -> torch.Tensor:
        """Mean of the pre-neck tokens: (B, H, W, C) grid to (B, C)."""
        return h.mean(dim=(1, 2))

    def tokens_to_map(self, tokens: torch.Tensor, num_prompts: int = 0) -> torch.Tensor:
        """A (B, H, W, C) grid or a (B, T, C) sequence (prompts last, ``num_prompts`` dropped) to (B, C, H, W)."""
        if tokens.dim() == 4:
            return tokens.permute(0, 3, 1, 2)
        patches = tokens[:, : tokens.shape[1] - num_prompts]
        b, n, d = patches.shape
        side = round(n**0.5)
        h, w = self.grid_size if n == self.grid_size[0] * self.grid_size[1] else (side, side)
        return patches.transpose(1, 2).reshape(b, d, h, w)

    def features_from_hidden(self, h: torch.Tensor) -> torch.Tensor:
        """Pre-neck map (B, embed_dim, H/16, W/16); its spatial mean is ``forward(x)``."""
        return self.tokens_to_map(h)

    def forward_neck(self, x: torch.Tensor) -> torch.Tensor:
        """SAM's neck output (B, out_chans, H/16, W/16): exactly ``ImageEncoderViT.forward``."""
        return self.neck(self.forward_features(x))

    def forward_multiscale(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Pre-neck maps after blocks at depth 1/4, 1/2, 3/4, 1 (ViT-B: the global blocks 2, 5, 8, 11)."""
        outs = self.forward_blocks(x)
        depth = len(outs)
        return [self.tokens_to_map(outs[max(depth * k // 4 - 1, 0)]) for k in (1, 2, 3, 4)]

    def forward_with_prompts(
        self, x: torch.Tensor, shallow: torch.Tensor | None = None, deep: torch.Tensor | None = None
    ) -> PromptedOutput:
        """VPT forward; see the module docstring for how prompts meet windowed attention."""
        if deep is not None and deep.shape[0] != len(self.blocks):
            raise ValueError(f"deep prompts need one set per block: got {deep.shape[0]}, have {len(self.blocks)}")
        h = self.prepare(x)
        first = deep[0] if deep is not None else shallow
        if first is None or first.shape[-2] == 0:
            hidden = []
            for block in self.blocks:
                h = block(h)
                hidden.append(self.tokens_to_map(h))
            return PromptedOutput(pooled=self.finalize(h), hidden_states=hidden)
        p = expand_prompts(first, h)
        hidden = []
        for i, block in enumerate(self.blocks):
            if deep is not None and i > 0:
                p = expand_prompts(deep[i], h)
            h, p = prompted_block(block, h, p)
            hidden.append(self.tokens_to_map(h))
        return PromptedOutput(pooled=self.finalize(h), hidden_states=hidden, prompts=p)


def _attend(attn: nn.Module, grid: torch.Tensor, prompts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM ``Attention`` over a (B, h, w, C) grid plus (B, N, C) prompts; rel-pos only between grid tokens."""
    b, gh, gw, c = grid.shape
    length, n = gh * gw, prompts.shape[1]
    tokens = torch.cat([grid.reshape(b, length, c), prompts], dim=1)
    qkv = attn.qkv(tokens).reshape(b, length + n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.reshape(3, b * attn.num_heads, length + n, -1).unbind(0)
    scores = (q * attn.scale) @ k.transpose(-2, -1)
    if attn.use_rel_pos:
        grid_scores = add_decomposed_rel_pos(
            scores[:, :length, :length].contiguous(), q[:, :length], attn.rel_pos_h, attn.rel_pos_w, (gh, gw), (gh, gw)
        )
        top = torch.cat([grid_scores, scores[:, :length, length:]], dim=-1)
        scores = torch.cat([top, scores[:, length:]], dim=1)
    scores = scores.softmax(dim=-1)
    out = (scores @ v).view(b, attn.num_heads, length + n, -1).permute(0, 2, 1, 3).reshape(b, length + n, -1)
    out = attn.proj(out)
    return out[:, :length].reshape(b, gh, gw, -1), out[:, length:]


def prompted_block(block: nn.Module, grid: torch.Tensor, prompts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One ``segment_anything`` ``Block`` on a (B, H, W, C) grid with (B, N, C) prompt tokens.

    Windowed blocks: each window attends over its tokens plus every prompt; a prompt's attention update is the
    mean over windows (padded windows included, as SAM includes padding tokens). Global blocks: one sequence.
    """
    b, gh, gw, _ = grid.shape
    normed, normed_p = block.norm1(grid), block.norm1(prompts)
    if block.window_size > 0:
        windows, pad_hw = window_partition(normed, block.window_size)
        num_windows = windows.shape[0] // b
        win_out, p_out = _attend(block.attn, windows, normed_p.repeat_interleave(num_windows, dim=0))
        attn_grid = window_unpartition(win_out, block.window_size, pad_hw, (gh, gw))
        attn_p = p_out.view(b, num_windows, *p_out.shape[1:]).mean(dim=1)
    else:
        attn_grid, attn_p = _attend(block.attn, normed, normed_p)
    grid, prompts = grid + attn_grid, prompts + attn_p
    grid = grid + block.mlp(block.norm2(grid))
    prompts = prompts + block.mlp(block.norm2(prompts))
    return grid, prompts
