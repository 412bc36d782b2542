"""The SGD training loop shared by every non-closed-form method. It never computes loss terms itself.

The method returns its loss terms (``Method.losses``); the loop sums them, checks they are finite, steps the
optimiser over the method's own param groups, and follows the method's phases (MoVL's sequential couplings).
Schedule: linear warmup over ``optim.warmup_frac`` of the steps, then cosine decay to 0 (Bahng's ``cosine_lr``,
VPT's warmup + cosine). Batches come from a seeded permutation per epoch, so a run is reproducible on one device.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from downstream.contract import Method


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN/inf; the message names the term and the step."""


def build_optimizer(method: Method, cfg: Any) -> torch.optim.Optimizer:
    groups = method.param_groups(cfg)
    if not groups:
        raise ValueError(f"{method.key} has no parameter groups to optimise")
    if cfg.optim.optimizer == "adamw":
        return torch.optim.AdamW(groups)
    return torch.optim.SGD(groups, momentum=cfg.optim.momentum)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Warmup-then-cosine multiplier of the base lr at ``step`` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal and vertical flips per sample (orientation-agnostic patch tasks)."""
    flip_h = torch.rand(x.shape[0], generator=generator) < 0.5
    flip_v = torch.rand(x.shape[0], generator=generator) < 0.5
    x = torch.where(flip_h.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
    return torch.where(flip_v.view(-1, 1, 1, 1).to(x.device), x.flip(-2), x)


def total_steps(n: int, cfg: Any) -> int:
    if cfg.optim.max_steps > 0:
        return int(cfg.optim.max_steps)
    return max(1, int(cfg.optim.epochs) * math.ceil(n / cfg.optim.batch_size))


def train_method(
    method: Method, x: torch.Tensor, y: torch.Tensor, cfg: Any, seed: int = 0, progress: bool = False,
    desc: str = "train",
) -> dict[str, Any]:  # fmt: skip
    """Trains ``method`` in place on (x, y) (already normalised, on the method's device).

    Returns:
        ``{"steps", "seconds", "final_loss", "loss_terms"}`` (terms averaged over the last epoch-sized window).

    Raises:
        NonFiniteLossError: A loss term is NaN or inf.
    """
    n = len(x)
    steps = total_steps(n, cfg)
    warmup = int(cfg.optim.warmup_frac * steps)
    optimizer = build_optimizer(method, cfg)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    gen = torch.Generator().manual_seed(int(seed))
    bs = min(int(cfg.optim.batch_size), n)
    phases, bounds, acc = method.phases(), [], 0.0
    for name, frac in phases:
        acc += frac
        bounds.append((name, round(acc * steps)))
    window = max(1, math.ceil(n / bs))
    recent: list[dict[str, float]] = []
    method.train()
    perm, pos, phase_i, current = torch.randperm(n, generator=gen), 0, 0, None
    start = time.perf_counter()
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for step in bar:
        while phase_i < len(bounds) - 1 and step >= bounds[phase_i][1]:
            phase_i += 1
        if current != bounds[phase_i][0]:
            current = bounds[phase_i][0]
            method.set_phase(current)
            method.train()
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos : pos + bs].to(x.device)
        pos += bs
        xb, yb = x[idx], y[idx]
        if cfg.augment:
            xb = augment_batch(xb, gen)
        factor = lr_factor(step, steps, warmup)
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * factor
        terms = method.losses(method(xb), yb)
        for name, value in terms.items():
            if not torch.isfinite(value):
                raise NonFiniteLossError(f"{method.key}: loss term '{name}' is {value.item()} at step {step}")
        loss = sum(terms.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(method.trainable_parameters(), cfg.optim.grad_clip)
        optimizer.step()
        recent.append({k: float(v.detach()) for k, v in terms.items()})
        recent = recent[-window:]
        if progress and step % 10 == 0:
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    method.set_phase("joint")
    method.eval()
    keys = recent[-1].keys() if recent else []
    terms_mean = {k: float(np.mean([r[k] for r in recent if k in r])) for k in keys}
    return {
        "steps": steps,
        "seconds": time.perf_counter() - start,
        "final_loss": float(sum(terms_mean.values())),
        "loss_terms": terms_mean,
    }


@torch.no_grad()
def predict_probs(method: Method, x: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Softmax probabilities (N, C) in eval mode."""
    method.eval()
    out = []
    for i in range(0, len(x), batch_size):
        logits = Method.logits_of(method(x[i : i + batch_size]))
        out.append(torch.softmax(logits.float(), dim=-1).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, method.num_classes))


@torch.no_grad()
def extract_features(method: Method, x: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Frozen pooled backbone features (N, D) of plain inputs."""
    method.eval()
    out = [method.extract_features(x[i : i + batch_size]).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0))
