"""MoVL: mixture of visual prompting and linear probing (Tian, Yue, Liu, Yang, Jiang, Wang 2024, arXiv 2405.07411).

Verified from the abstract: VP and LP are trained together on a frozen backbone; the loss is a categorisation loss
plus a discrepancy loss describing the variance between prompted and plain images; coupling strategies and the
initialisation matter. The exact discrepancy, λ, prompt and schedule are **not** public (no code). Our reading,
every part of it configurable (``movl.*``):

* logits = W f(x + δ) + b, f frozen; trainable: the pixel prompt δ (VP prompters of :mod:`visual_prompt`) and
  the head (W, b).
* L = CE(W f(x+δ) + b, y) + λ · D(prompted, plain) with D in {MSE, 1 − cos, KL(p_prompted ‖ p_plain)}, taken in
  feature space (pooled features) or logit space. The plain branch is a stop-gradient reference ("original-image
  information"): it keeps the prompted representation close to what the pretrained model sees without a prompt.
* Coupling: ``joint`` (δ and head together) from an LP-initialised head (``init=lp``, the logistic-regression
  probe on plain features, LP-FT-like) or a random head; ``lp_then_vp`` (head on plain inputs first, then δ with
  the head frozen) and ``vp_then_lp`` (δ first with the head frozen, then the head on prompted inputs).

Default: MSE in feature space, λ = 1, joint, LP-initialised head, pad prompt initialised at zero
(``movl.prompt_init=zeros``), so the untrained MoVL model *is* the linear probe it starts from and model selection
on val can keep that state (:mod:`downstream.tuning`). The plain stream is frozen: the training loop may hand the
method cached plain features of the batch (``plain=``, :class:`downstream.train_loop.Trainer`) instead of
recomputing them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from downstream.contract import HeadMethod, make_head
from downstream.methods.visual_prompt import make_prompter, prompt_and_head_groups


def discrepancy(prompted: torch.Tensor, plain: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean discrepancy between prompted and plain (B, D) tensors: ``mse``, ``cos`` (1 − cos) or ``kl``."""
    if kind == "mse":
        return F.mse_loss(prompted, plain)
    if kind == "cos":
        return (1.0 - F.cosine_similarity(prompted, plain, dim=-1)).mean()
    if kind == "kl":
        return F.kl_div(F.log_softmax(plain, -1), F.log_softmax(prompted, -1), log_target=True, reduction="batchmean")
    raise ValueError(f"unknown discrepancy {kind!r}")


class MoVL(HeadMethod):
    """Joint VP + LP with a prompted-vs-plain discrepancy term (see module docstring)."""

    accepts_plain_features = True

    def __init__(self, backbone: nn.Module, num_classes: int, cfg: Any, key: str | None = None) -> None:
        super().__init__(backbone, num_classes, cfg, key)
        self.init_head_from_probe = self.mc.init == "lp"
        self.prompter = make_prompter(self.mc.prompter, backbone.in_chans, cfg.img_size, cfg, self.mc.prompt_init)
        self.head = make_head(backbone.feature_dim, num_classes)
        self.phase = "joint"
        self.declare_trainable()

    @property
    def mc(self) -> Any:
        """The ``movl`` sub-config of the current run config (a tuner may swap ``self.cfg`` per candidate)."""
        return self.cfg.movl

    def param_groups(self, cfg: Any) -> list[dict[str, Any]]:
        return prompt_and_head_groups(self, cfg)

    def phases(self) -> list[tuple[str, float]]:
        f = float(self.mc.first_phase_frac)
        if self.mc.schedule == "lp_then_vp":
            return [("lp", f), ("vp", 1.0 - f)]
        if self.mc.schedule == "vp_then_lp":
            return [("vp", f), ("lp", 1.0 - f)]
        return [("joint", 1.0)]

    def set_phase(self, name: str) -> None:
        self.phase = name
        self.prompter.requires_grad_(name in ("joint", "vp"))
        self.head.requires_grad_(name in ("joint", "lp"))

    @property
    def bypass_prompt(self) -> bool:
        """Head-only phase that precedes any prompt training: the head learns on plain inputs."""
        return self.phase == "lp" and self.mc.schedule == "lp_then_vp"

    def forward(self, x: torch.Tensor, plain: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Logits of the prompted input (plus the discrepancy inputs in training).

        Args:
            x: Normalised inputs.
            plain: Optional cached frozen features of ``x`` without prompt (B, D); computed when absent.
        """
        if self.bypass_prompt:
            if plain is None:
                with torch.no_grad():
                    plain = self.backbone(x)
            return {"logits": self.head(plain)}
        prompted = self.backbone(self.prompter(x))
        logits = self.head(prompted)
        out = {"logits": logits}
        if self.training and self.mc.weight > 0:
            if plain is None:
                with torch.no_grad():
                    plain = self.backbone(x)
            if self.mc.space == "feature":
                out["prompted"], out["plain"] = prompted, plain
            else:
                out["prompted"], out["plain"] = logits, self.head(plain).detach()
        return out

    def extra_loss(self, out: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not isinstance(out, dict) or "prompted" not in out:
            return {}
        return {"discrepancy": self.mc.weight * discrepancy(out["prompted"], out["plain"], self.mc.discrepancy)}
