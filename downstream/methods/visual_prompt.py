"""Pixel-space visual prompts, VP (Bahng, Jahanian, Sankaranarayanan, Isola 2022, arXiv 2203.17274).

A learnable additive perturbation δ on the *normalised* input, x' = x + δ, with as many channels as the backbone
input (after channel replication). Three prompters, written from the paper's description:

* ``vp-pad``: δ is non-zero on a border of width p (four parameters: top/bottom (C, p, W), left/right
  (C, H−2p, p)), i.e. C·(2pW + 2p(H−2p)) values.
* ``vp-fixed``: a p×p patch at the top-left corner.
* ``vp-random``: a p×p patch at a random location for every training batch; at eval either random (Bahng) or
  centred (``vp.random_eval=center``, our deterministic default).

Output side: Bahng maps the first C ImageNet logits of a classifier; our backbones have no ImageNet head, so a
learned linear head is used (which makes VP + head the joint model that MoVL studies). Param groups: the prompt at
``vp.lr`` (40 in Bahng, SGD), the head at ``optim.head_lr``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from downstream.contract import HeadMethod, make_head


def _init(shape: tuple[int, ...], init: str) -> nn.Parameter:
    return nn.Parameter(torch.randn(shape) if init == "randn" else torch.zeros(shape))


class PadPrompter(nn.Module):
    """Border prompt of width ``pad`` around an image of side ``image_size``."""

    def __init__(self, channels: int, image_size: int, pad: int, init: str = "randn") -> None:
        super().__init__()
        if not 0 < 2 * pad < image_size:
            raise ValueError(f"pad prompt needs 0 < 2·pad < image size, got pad={pad}, size={image_size}")
        self.pad, self.image_size = pad, image_size
        inner = image_size - 2 * pad
        self.pad_up = _init((1, channels, pad, image_size), init)
        self.pad_down = _init((1, channels, pad, image_size), init)
        self.pad_left = _init((1, channels, inner, pad), init)
        self.pad_right = _init((1, channels, inner, pad), init)

    def prompt(self) -> torch.Tensor:
        c = self.pad_up.shape[1]
        inner = self.image_size - 2 * self.pad
        centre = self.pad_up.new_zeros(1, c, inner, inner)
        middle = torch.cat([self.pad_left, centre, self.pad_right], dim=3)
        return torch.cat([self.pad_up, middle, self.pad_down], dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_size(x, self.image_size)
        return x + self.prompt().to(x.dtype)


class PatchPrompter(nn.Module):
    """A ``size``×``size`` patch prompt, at the top-left (``random=False``) or at a random place per batch."""

    def __init__(
        self,
        channels: int,
        image_size: int,
        size: int,
        random: bool = False,
        init: str = "randn",
        random_eval: str = "center",
    ) -> None:
        super().__init__()
        if not 0 < size <= image_size:
            raise ValueError(f"patch prompt size must be in (0, {image_size}], got {size}")
        self.size, self.image_size, self.random, self.random_eval = size, image_size, random, random_eval
        self.patch = _init((1, channels, size, size), init)

    def location(self) -> tuple[int, int]:
        span = self.image_size - self.size
        if not self.random:
            return 0, 0
        if self.training or self.random_eval == "random":
            r, c = torch.randint(0, span + 1, (2,)).tolist()
            return r, c
        return span // 2, span // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_size(x, self.image_size)
        r, c = self.location()
        delta = torch.zeros_like(x[:1])
        delta[:, :, r : r + self.size, c : c + self.size] = self.patch.to(x.dtype)
        return x + delta


def _check_size(x: torch.Tensor, size: int) -> None:
    if x.shape[-1] != size or x.shape[-2] != size:
        raise ValueError(f"prompter built for {size}x{size} inputs, got {tuple(x.shape[-2:])}")


def make_prompter(kind: str, channels: int, image_size: int, cfg: Any, init: str | None = None) -> nn.Module:
    """``kind`` in {pad, fixed, random}; sizes and init from ``cfg.vp`` (``init`` overrides ``vp.init``)."""
    vp = cfg.vp
    init = init or vp.init
    if kind == "pad":
        return PadPrompter(channels, image_size, vp.prompt_size, init)
    if kind in ("fixed", "random"):
        return PatchPrompter(channels, image_size, vp.prompt_size, kind == "random", init, vp.random_eval)
    raise ValueError(f"unknown prompter {kind!r}")


def prompt_and_head_groups(method: HeadMethod, cfg: Any) -> list[dict[str, Any]]:
    """Separate optimiser groups for a pixel prompt (VP's large lr, ``cfg.vp.lr``) and the head (``optim.head_lr``)."""
    return method._groups(
        cfg,
        [
            ("prompt", list(method.prompter.parameters()), cfg.vp.lr),
            ("head", list(method.head.parameters()), cfg.optim.head_lr),
        ],
    )


class VisualPrompting(HeadMethod):
    """Frozen backbone, pixel prompt + linear head (VP for backbones without an ImageNet head)."""

    prompter_kind = "pad"

    def __init__(self, backbone: nn.Module, num_classes: int, cfg: Any, key: str | None = None) -> None:
        super().__init__(backbone, num_classes, cfg, key)
        self.prompter = make_prompter(self.prompter_kind, backbone.in_chans, cfg.img_size, cfg)
        self.head = make_head(backbone.feature_dim, num_classes)
        self.declare_trainable()

    def param_groups(self, cfg: Any) -> list[dict[str, Any]]:
        return prompt_and_head_groups(self, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self.prompter(x)))


class VPPad(VisualPrompting):
    prompter_kind = "pad"


class VPFixed(VisualPrompting):
    prompter_kind = "fixed"


class VPRandom(VisualPrompting):
    prompter_kind = "random"
