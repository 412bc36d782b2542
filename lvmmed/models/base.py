"""The backbone contract every lvmmed encoder follows (ResNet, ViT, SAM-style ViT).

Downstream methods never reach into architecture internals; they use only this contract:

* ``forward(x) -> (B, feature_dim)``: pooled features (what SSL projectors and linear probes consume).
* ``forward_features(x) -> (B, C, h, w)``: the last feature map before pooling (local features for the
  graph-matching node affinity, decoders, attention maps); ``forward_pooled_and_features(x)`` returns both
  from one pass (``features_from_hidden(h)`` maps the last block's output to that map).
* ``forward_multiscale(x) -> list[(B, C_i, h_i, w_i)]``: features for U-Net/UNETR decoders, shallow to deep,
  with ``feature_channels`` and ``feature_strides`` describing them.
* The staged interface ``prepare(x) -> h``, ``blocks`` (an ``nn.ModuleList``), ``finalize(h) -> pooled``:
  ``finalize(blocks[-1](...blocks[0](prepare(x))))`` equals ``forward(x)``. Adapters, GMoE experts and partial
  fine-tuning hook into ``blocks``. For ResNets the blocks are the four stages; for ViTs the transformer blocks.
* ViTs additionally implement ``forward_with_prompts(x, shallow, deep)`` (VPT, Jia et al. 2022): learnable prompt
  tokens that carry no positional embedding, inserted after the prefix tokens, replaced before every block when
  ``deep`` is given, and stripped from every returned hidden state.

Attributes every backbone sets: ``name``, ``in_chans``, ``img_size``, ``feature_dim``, ``is_vit``,
``feature_channels``, ``feature_strides``, ``embed_dim`` (ViTs: token width), ``num_prefix_tokens`` (ViTs: CLS and
register tokens; 0 for SAM-style encoders), ``token_layout`` (``"sequence"`` for timm ViTs whose blocks map
(B, T, D) to (B, T, D); ``"grid"`` for SAM-style encoders whose blocks map (B, H, W, D) grids; ``"map"`` for
ResNets), ``num_blocks``. :meth:`Backbone.config` gives what ``lvmmed.weights.save_pretrained`` records to rebuild it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class PromptedOutput:
    """Result of :meth:`Backbone.forward_with_prompts`.

    Attributes:
        pooled: (B, feature_dim) pooled features, prompts excluded from pooling.
        hidden_states: one (B, D, h, w) map per block, prompt tokens stripped before the reshape.
        prompts: (B, N, D) prompt tokens after the last block (None without prompts).
    """

    pooled: torch.Tensor
    hidden_states: list[torch.Tensor]
    prompts: torch.Tensor | None = None


class Backbone(nn.Module):
    """Base class for lvmmed backbones. Subclasses implement ``prepare``, ``finalize``, ``features_from_hidden``."""

    name: str = "backbone"
    in_chans: int = 3
    img_size: int = 224
    feature_dim: int = 0
    embed_dim: int = 0
    is_vit: bool = False
    num_prefix_tokens: int = 0
    token_layout: str = "map"
    feature_channels: tuple[int, ...] = ()
    feature_strides: tuple[int, ...] = ()
    blocks: nn.ModuleList

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def config(self) -> dict:
        """Rebuilds the architecture: ``create_backbone(c["architecture"], c["in_chans"], img_size=c["img_size"])``."""
        return {"architecture": self.name, "in_chans": self.in_chans, "img_size": self.img_size}

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Stem / patch embedding (+ position embedding): the input of ``blocks[0]``."""
        raise NotImplementedError

    def finalize(self, h: torch.Tensor) -> torch.Tensor:
        """Final norm and pooling: the output of the last block to (B, feature_dim)."""
        raise NotImplementedError

    def forward_blocks(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Runs the staged interface and returns the output of every block (raw, not reshaped)."""
        h = self.prepare(x)
        outs = []
        for block in self.blocks:
            h = block(h)
            outs.append(h)
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.finalize(self.forward_blocks(x)[-1])

    def features_from_hidden(self, h: torch.Tensor) -> torch.Tensor:
        """The last block's output to the (B, C, h, w) map that ``forward_features`` returns."""
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) last feature map before pooling."""
        return self.features_from_hidden(self.forward_blocks(x)[-1])

    def forward_pooled_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(forward(x), forward_features(x))`` from one pass (global + local features, e.g. for GM affinities)."""
        h = self.forward_blocks(x)[-1]
        return self.finalize(h), self.features_from_hidden(h)

    def forward_multiscale(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps for dense decoders, shallow to deep (see ``feature_channels``/``feature_strides``)."""
        raise NotImplementedError

    def forward_with_prompts(
        self, x: torch.Tensor, shallow: torch.Tensor | None = None, deep: torch.Tensor | None = None
    ) -> PromptedOutput:
        """VPT forward (ViTs only). ``shallow``: (N, D) or (B, N, D) prompts; ``deep``: (num_blocks, N, D) prompts."""
        raise NotImplementedError(f"{type(self).__name__} has no token interface; prompts need a ViT backbone")

    def tokens_to_map(self, tokens: torch.Tensor, num_prompts: int = 0) -> torch.Tensor:
        """ViTs: hidden tokens to a (B, D, h, w) map, prefix and prompt tokens dropped."""
        raise NotImplementedError(f"{type(self).__name__} has no token interface")


def expand_prompts(prompts: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N, D) shared or (B, N, D) per-sample prompts to (B, N, D) in ``like``'s dtype and device."""
    if prompts.dim() == 2:
        prompts = prompts.unsqueeze(0).expand(like.shape[0], -1, -1)
    elif prompts.dim() != 3 or prompts.shape[0] != like.shape[0]:
        raise ValueError(f"prompts must be (N, D) or (B, N, D) with B={like.shape[0]}; got {tuple(prompts.shape)}")
    return prompts.to(dtype=like.dtype, device=like.device)
