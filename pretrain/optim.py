"""Optimiser and learning-rate schedule (linear warmup + cosine decay), stateless in the step for exact resume."""

from __future__ import annotations

import torch
from lightly.utils.lars import LARS
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from pretrain.config import OptimConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights with decay, and biases/norm/1-d parameters (incl. tokens) without (common SSL practice)."""
    decay, no_decay = [], []
    for _, param in sorted(model.named_parameters()):
        if param.requires_grad:
            (no_decay if param.ndim <= 1 or param.shape[0] == 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    """AdamW or LARS (lightly) over ``param_groups``; ``lr`` is the (possibly batch-scaled) peak."""
    groups = param_groups(model, cfg.weight_decay)
    if cfg.name == "lars":
        return LARS(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, foreach=True)


def peak_lr(cfg: OptimConfig, global_batch: int) -> float:
    """The configured lr, linearly scaled by global_batch / 256 when ``scale_lr_with_batch`` (Goyal et al. 2017)."""
    return cfg.lr * global_batch / 256 if cfg.scale_lr_with_batch else cfg.lr


def lr_at(step: int, max_steps: int, peak: float, cfg: OptimConfig) -> float:
    """Learning rate of optimiser step ``step`` (0-based): linear warmup to ``peak``, then cosine to the floor."""
    warmup = min(cfg.warmup_steps, max_steps - 1)
    if step < warmup:
        return peak * (step + 1) / warmup
    return cosine_schedule(step - warmup, max(1, max_steps - warmup), peak, peak * cfg.min_lr_ratio)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
