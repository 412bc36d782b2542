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


def flip_flags(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample horizontal and vertical flip flags (drawn in this order from ``generator``)."""
    return torch.rand(n, generator=generator) < 0.5, torch.rand(n, generator=generator) < 0.5


def apply_flips(x: torch.Tensor, flip_h: torch.Tensor, flip_v: torch.Tensor) -> torch.Tensor:
    x = torch.where(flip_h.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
    return torch.where(flip_v.view(-1, 1, 1, 1).to(x.device), x.flip(-2), x)


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal and vertical flips per sample (orientation-agnostic patch tasks)."""
    return apply_flips(x, *flip_flags(x.shape[0], generator))


def flip_variants(x: torch.Tensor) -> list[torch.Tensor]:
    """The four flip variants of ``x`` in :func:`flip_index` order: none, h, v, h+v."""
    return [x, x.flip(-1), x.flip(-2), x.flip(-1).flip(-2)]


def flip_index(flip_h: torch.Tensor, flip_v: torch.Tensor) -> torch.Tensor:
    return flip_h.long() + 2 * flip_v.long()


def total_steps(n: int, cfg: Any) -> int:
    if cfg.optim.max_steps > 0:
        return int(cfg.optim.max_steps)
    return max(1, int(cfg.optim.epochs) * math.ceil(n / cfg.optim.batch_size))


class Trainer:
    """Trains ``method`` in place on (x, y) under one warmup + cosine schedule of ``steps`` steps, in chunks.

    :meth:`advance` runs the next ``n`` steps, so a tuner can evaluate on val between chunks (early stopping,
    successive halving) without changing the schedule. Between chunks the method is in ``eval()``.

    Args:
        method: The method (its declared parameters train).
        x / y: Normalised training inputs and targets, on the method's device.
        cfg: Run config (``optim``, ``augment``).
        seed: Seed of the batch order and flips.
        steps: Length of the schedule (default :func:`total_steps`).
        plain_features: Optional (4, N, D) frozen features of the flip variants of ``x`` (:func:`flip_variants`
            order) for methods with ``accepts_plain_features`` (MoVL's plain stream): the loop hands the cached
            rows of the batch to the method instead of it recomputing the frozen forward.
    """

    def __init__(
        self, method: Method, x: torch.Tensor, y: torch.Tensor, cfg: Any, seed: int = 0, steps: int | None = None,
        plain_features: torch.Tensor | None = None,
    ) -> None:  # fmt: skip
        self.method, self.x, self.y, self.cfg = method, x, y, cfg
        self.n = len(x)
        self.steps = int(steps or total_steps(self.n, cfg))
        self.warmup = int(cfg.optim.warmup_frac * self.steps)
        self.optimizer = build_optimizer(method, cfg)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.gen = torch.Generator().manual_seed(int(seed))
        self.bs = min(int(cfg.optim.batch_size), self.n)
        self.bounds, acc = [], 0.0
        for name, frac in method.phases():
            acc += frac
            self.bounds.append((name, round(acc * self.steps)))
        self.plain = plain_features if method.accepts_plain_features else None
        self.perm, self.pos, self.phase_i = torch.randperm(self.n, generator=self.gen), 0, 0
        self.step = 0
        self.seconds = 0.0

    @property
    def done(self) -> bool:
        return self.step >= self.steps

    def advance(self, n: int, progress: bool = False, desc: str = "train") -> dict[str, float]:
        """Runs up to ``n`` more steps; returns the loss terms averaged over them (empty when none ran).

        Raises:
            NonFiniteLossError: A loss term is NaN or inf.
        """
        method, cfg = self.method, self.cfg
        start, current, sums, count = time.perf_counter(), None, {}, 0
        end = min(self.steps, self.step + int(n))
        bar = tqdm(range(self.step, end), desc=desc, disable=not progress, leave=False)
        try:  # an error closes the bar first, so the one-line error message is the last line
            for step in bar:
                while self.phase_i < len(self.bounds) - 1 and step >= self.bounds[self.phase_i][1]:
                    self.phase_i += 1
                if current != self.bounds[self.phase_i][0]:
                    current = self.bounds[self.phase_i][0]
                    method.set_phase(current)
                    method.train()
                if self.pos + self.bs > self.n:
                    self.perm, self.pos = torch.randperm(self.n, generator=self.gen), 0
                idx = self.perm[self.pos : self.pos + self.bs]
                self.pos += self.bs
                xb, yb = self.x[idx.to(self.x.device)], self.y[idx.to(self.y.device)]
                kwargs = {}
                if cfg.augment:
                    flips = flip_flags(len(idx), self.gen)
                    xb = apply_flips(xb, *flips)
                    if self.plain is not None:
                        kwargs["plain"] = self.plain[flip_index(*flips), idx].to(xb.device)
                elif self.plain is not None:
                    kwargs["plain"] = self.plain[0, idx].to(xb.device)
                factor = lr_factor(step, self.steps, self.warmup)
                for group, base in zip(self.optimizer.param_groups, self.base_lrs):
                    group["lr"] = base * factor
                terms = method.losses(method(xb, **kwargs), yb)
                for name, value in terms.items():
                    if not torch.isfinite(value):
                        raise NonFiniteLossError(f"{method.key}: loss term '{name}' is {value.item()} at step {step}")
                loss = sum(terms.values())
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.optim.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(method.trainable_parameters(), cfg.optim.grad_clip)
                self.optimizer.step()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                count += 1
                self.step = step + 1
                if progress and step % 10 == 0:
                    bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        finally:
            bar.close()
        method.set_phase("joint")
        method.eval()
        self.seconds += time.perf_counter() - start
        return {k: v / count for k, v in sums.items()} if count else {}


def train_method(
    method: Method, x: torch.Tensor, y: torch.Tensor, cfg: Any, seed: int = 0, progress: bool = False,
    desc: str = "train",
) -> dict[str, Any]:  # fmt: skip
    """Trains ``method`` in place on (x, y) (already normalised, on the method's device) for the whole schedule.

    Returns:
        ``{"steps", "seconds", "final_loss", "loss_terms"}`` (terms averaged over the last epoch-sized window).

    Raises:
        NonFiniteLossError: A loss term is NaN or inf.
    """
    trainer = Trainer(method, x, y, cfg, seed)
    window = max(1, math.ceil(trainer.n / trainer.bs))
    head = max(0, trainer.steps - window)
    if head:
        trainer.advance(head, progress, desc)
    terms = trainer.advance(trainer.steps - head, progress, desc)
    return {
        "steps": trainer.steps,
        "seconds": trainer.seconds,
        "final_loss": float(sum(terms.values())),
        "loss_terms": terms,
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
