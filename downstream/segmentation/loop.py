"""Training and evaluation loops shared by the segmentation methods and ``mask-guided``.

The loop never computes loss terms: it sums ``method.losses(out, target)`` (the registry convention). It takes
its device from the method's parameters, clips gradients (LVM-Med: norm 1), stops on a non-finite loss with a
clear error, and records the wall-clock time per epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from downstream.segmentation.metrics import SegmentationEvaluator
from downstream.segmentation.tasks import SliceData, normalise_for
from downstream.stats import bootstrap_mean_ci


class NonFiniteLossError(FloatingPointError):
    """A training loss became NaN/inf (the run stops instead of training on garbage)."""


def make_optimizer(method: Any, cfg: Any) -> torch.optim.Optimizer:
    """The optimiser of ``cfg.optim`` over ``method.param_groups(cfg)``."""
    groups = [g for g in method.param_groups(cfg) if g["params"]]
    if not groups:
        raise RuntimeError(f"{method.key}: no trainable parameters to optimise")
    name = cfg.optim.optimizer
    if name == "sgd":
        return torch.optim.SGD(groups, momentum=0.9)
    return (torch.optim.AdamW if name == "adamw" else torch.optim.Adam)(groups)


def _flip(tensors: Sequence[torch.Tensor | None], gen: torch.Generator) -> list[torch.Tensor | None]:
    """Random horizontal flip per sample, same for every spatial tensor of the batch (image, mask, ROI)."""
    ref = next(t for t in tensors if t is not None and t.ndim >= 3)
    flip = torch.rand(ref.shape[0], generator=gen) < 0.5
    out = []
    for t in tensors:
        if t is None or t.ndim < 3:
            out.append(t)
            continue
        t = t.clone()
        t[flip] = t[flip].flip(-1)
        out.append(t)
    return out


def fit(
    method: Any,
    inputs: Sequence[torch.Tensor | None],
    target: torch.Tensor,
    cfg: Any,
    epochs: int,
    seed: int = 0,
    augment: bool = False,
    prepare: Callable[[list[torch.Tensor | None]], list[torch.Tensor | None]] | None = None,
) -> dict[str, Any]:
    """Trains ``method`` on in-memory tensors with mini-batches.

    Args:
        method: A registry ``Method``; called as ``method(*batch_inputs)``.
        inputs: Tensors indexed along dim 0 (image first; ``None`` entries are passed through).
        target: Targets (labels or label maps), indexed along dim 0.
        cfg: Run config (``optim``).
        epochs: Passes over the data (``cfg.optim.max_steps`` > 0 caps the steps instead).
        seed: Seeds batch order and augmentation.
        augment: Random horizontal flips (images, masks and targets alike).
        prepare: Applied to the batch inputs after augmentation (normalisation).

    Returns:
        ``{"steps", "epochs", "time_per_epoch_s", "final_loss", "loss_curve"}``.

    Raises:
        NonFiniteLossError: The loss became NaN or infinite.
    """
    device = next(method.parameters()).device
    opt = make_optimizer(method, cfg)
    gen = torch.Generator().manual_seed(seed)
    n = int(target.shape[0])
    bs = max(1, min(int(cfg.optim.batch_size), n))
    steps_per_epoch = math.ceil(n / bs)
    max_steps = int(cfg.optim.max_steps) or steps_per_epoch * max(int(epochs), 0)
    params = method.trainable_parameters()
    method.train()
    step, losses, epoch_times = 0, [], []
    while step < max_steps:
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, bs):
            if step >= max_steps:
                break
            idx = order[start : start + bs]
            batch = [None if t is None else t[idx] for t in inputs] + [target[idx]]
            if augment:
                batch = _flip(batch, gen)
            *xs, y = batch
            xs = prepare(list(xs)) if prepare else list(xs)
            xs = [None if t is None else t.to(device) for t in xs]
            out = method(*xs)
            terms = method.losses(out, y.to(device))
            loss = sum(terms.values())
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"{method.key}: non-finite loss at step {step} ({ {k: float(v) for k, v in terms.items()} }); "
                    "lower the learning rates (optim.*_lr) or check the inputs for NaN"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
        epoch_times.append(time.perf_counter() - t0)
    method.eval()
    return {
        "steps": step,
        "epochs": len(epoch_times),
        "time_per_epoch_s": float(np.mean(epoch_times)) if epoch_times else 0.0,
        "final_loss": losses[-1] if losses else None,
        "loss_curve": [float(np.mean(losses[i : i + steps_per_epoch])) for i in range(0, len(losses), steps_per_epoch)],
    }


@torch.no_grad()
def predict_masks(method: Any, data: SliceData, cfg: Any) -> torch.Tensor:
    """(N, H, W) arg-max label maps of ``method`` on ``data`` (normalised as in training)."""
    device = next(method.parameters()).device
    method.eval()
    outs = []
    for start in range(0, len(data), int(cfg.optim.eval_batch_size)):
        x = normalise_for(data.images[start : start + int(cfg.optim.eval_batch_size)], cfg)
        outs.append(method.logits_of(method(x.to(device))).argmax(1).cpu())
    return torch.cat(outs)


def evaluate_segmentation(method: Any, data: SliceData, cfg: Any) -> dict[str, Any]:
    """Dice/IoU/HD95 per class and mean, 3-D Dice/IoU per volume, and a bootstrap CI over subjects."""
    pred = predict_masks(method, data, cfg)
    ev = SegmentationEvaluator(data.num_classes, data.class_names, hd95=cfg.hd95)
    ev.update(pred, data.masks, volumes=data.volumes, subjects=data.subjects)
    summary = ev.summary()
    per_subject = ev.per_subject_mean_dice()
    summary["per_subject_dice"] = per_subject
    summary["dice_mean_ci95"] = bootstrap_mean_ci(list(per_subject.values()), cfg.bootstrap, cfg.seed)
    return summary
