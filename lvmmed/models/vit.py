"""timm Vision Transformers under the lvmmed backbone contract (Dosovitskiy et al., ICLR 2021).

The timm modules are attributes of this class, so state-dict keys are exactly timm's (``patch_embed.proj.weight``,
``blocks.0.attn.qkv.weight``, ``cls_token``, ``pos_embed``...). The timm model object itself is not kept, so
deepcopy, ``.to()`` and ``load_state_dict(assign=True)`` see one set of parameters.

VPT (Jia et al., ECCV 2022) is implemented in :meth:`ViTBackbone.forward_with_prompts`: prompts are inserted after
the prefix (CLS) tokens *after* the position embedding, so they carry none of their own; with ``deep`` prompts the
prompt slice is replaced before every block; prompts are excluded from pooling and stripped from hidden states.
"""

from __future__ import annotations

import timm
import torch
from torch import nn

from lvmmed.models.base import Backbone, PromptedOutput, expand_prompts
from lvmmed.models.specs import TIMM_NAMES


class ViTBackbone(Backbone):
    """A timm ViT without classifier (``num_classes=0``); pooled output is the final-normed CLS token.

    Args:
        name: ``vit_tiny``, ``vit_small`` or ``vit_base`` (ViT-B/16), or any timm ViT name.
        in_chans: Input channels.
        img_size: Input resolution; the grid is ``img_size // 16``.
    """

    is_vit = True
    token_layout = "sequence"

    def __init__(self, name: str = "vit_base", in_chans: int = 3, img_size: int = 224) -> None:
        super().__init__()
        timm_name = TIMM_NAMES.get(name, name)
        net = timm.create_model(timm_name, pretrained=False, num_classes=0, in_chans=in_chans, img_size=img_size)
        self.name, self.in_chans, self.img_size, self.timm_name = name, in_chans, img_size, timm_name
        self.patch_embed, self.cls_token, self.pos_embed = net.patch_embed, net.cls_token, net.pos_embed
        self.reg_token, self.no_embed_class = net.reg_token, net.no_embed_class
        self.pos_drop, self.norm_pre, self.norm = net.pos_drop, net.norm_pre, net.norm
        self.num_prefix_tokens = net.num_prefix_tokens
        self.embed_dim = self.feature_dim = net.embed_dim
        self.grid_size = tuple(net.patch_embed.grid_size)
        patch = net.patch_embed.patch_size[0]
        self.feature_channels = (self.embed_dim,) * 4
        self.feature_strides = (patch,) * 4
        self.blocks = nn.ModuleList(list(net.blocks))

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding, prefix tokens and position embedding, as timm's ``_pos_embed`` (fixed size)."""
        x = self.patch_embed(x)
        prefix = [t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
        if self.no_embed_class:  # position embedding on patches only, prefix tokens added after
            x = torch.cat([*prefix, x + self.pos_embed], dim=1)
        else:
            x = torch.cat([*prefix, x], dim=1) + self.pos_embed
        return self.norm_pre(self.pos_drop(x))

    def finalize(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(h)[:, 0]

    def tokens_to_map(self, tokens: torch.Tensor, num_prompts: int = 0) -> torch.Tensor:
        """(B, T, D) tokens to a (B, D, h, w) map, dropping prefix and prompt tokens."""
        patches = tokens[:, self.num_prefix_tokens + num_prompts :]
        b, n, d = patches.shape
        h, w = self.grid_size if n == self.grid_size[0] * self.grid_size[1] else (int(n**0.5), int(n**0.5))
        return patches.transpose(1, 2).reshape(b, d, h, w)

    def features_from_hidden(self, h: torch.Tensor) -> torch.Tensor:
        """Final-normed patch tokens as a map (the CLS token is what ``finalize`` pools)."""
        return self.tokens_to_map(self.norm(h))

    def forward_multiscale(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Hidden states after blocks at depth 1/4, 1/2, 3/4 and 1 (UNETR-style skips), as maps."""
        outs = self.forward_blocks(x)
        depth = len(outs)
        picks = [max(depth * k // 4 - 1, 0) for k in (1, 2, 3, 4)]
        return [self.tokens_to_map(outs[i]) for i in picks]

    def forward_with_prompts(
        self, x: torch.Tensor, shallow: torch.Tensor | None = None, deep: torch.Tensor | None = None
    ) -> PromptedOutput:
        if deep is not None and deep.shape[0] != len(self.blocks):
            raise ValueError(f"deep prompts need one set per block: got {deep.shape[0]}, have {len(self.blocks)}")
        prompts0 = deep[0] if deep is not None else shallow
        h = self.prepare(x)
        n = 0 if prompts0 is None else prompts0.shape[-2]
        p = self.num_prefix_tokens
        if n:
            h = torch.cat([h[:, :p], expand_prompts(prompts0, h), h[:, p:]], dim=1)
        hidden = []
        for i, block in enumerate(self.blocks):
            if deep is not None and i > 0 and n:
                h = torch.cat([h[:, :p], expand_prompts(deep[i], h), h[:, p + n :]], dim=1)
            h = block(h)
            hidden.append(self.tokens_to_map(h, num_prompts=n))
        stripped = torch.cat([h[:, :p], h[:, p + n :]], dim=1)
        return PromptedOutput(
            pooled=self.finalize(stripped), hidden_states=hidden, prompts=h[:, p : p + n] if n else None
        )
