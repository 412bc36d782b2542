"""The new-center protocol with a forgetting report (Saeed et al. 2023, "prompt-based tuning ... new center").

1. Train a base segmenter (ViT encoder + UNETR decoder, ``seg-unet``) on the **old centers**.
2. Evaluate it on every center (**before**).
3. Adapt a copy to the **new center** with each mode of ``centers.adapt``: ``direct`` (no adaptation),
   ``seg-prompt-shallow``, ``seg-prompt-deep`` (prompts only, < 1 % of the parameters), the same ``+decoder``
   (prompts and decoder), ``partial`` (decoder only) and ``finetune`` (everything).
4. Evaluate each adapted model on the new center **and on every old center** (**after**). Forgetting of an
   old center = Dice before − Dice after (positive = the adaptation hurt the old center). It is a first-class
   number of the result, next to the trainable-parameter count and wall-clock time.

A *center* is a shard set under ``data_root`` (``mni152``, ``colin27``), optionally filtered by ``meta.center``
(``<set>/<center>``), optionally with a deterministic acquisition variant (``<center>@<variant>``): when only one
template is installed, ``mni152@lowcontrast`` (gamma, contrast and resolution change) stands in for a second
scanner. With bundled templates this is a **protocol check on few subjects** (slabs of one or two brains), not
a clinical multi-center result; docs/segmentation.md says so.

Only the per-center delta of each adapted model is saved (``deltas/<new center>/<mode>.safetensors``).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from downstream.registry import build_method
from downstream.segmentation.loop import evaluate_segmentation, fit
from downstream.segmentation.tasks import (
    SegTask,
    SliceData,
    TaskUnavailable,
    concat,
    load_split,
    normalise_for,
    subsample_subjects,
)


def _low_contrast(x: torch.Tensor) -> torch.Tensor:
    """Gamma 1.5, half resolution (average-pool, bilinear back up) and contrast 0.7 around 0.15."""
    y = x.clamp(0, 1) ** 1.5
    size = y.shape[-2:]
    y = F.interpolate(F.avg_pool2d(y, 2), size=size, mode="bilinear", align_corners=False)
    return (0.15 + 0.7 * y).clamp(0, 1)


def _noisy(x: torch.Tensor) -> torch.Tensor:
    """Additive Gaussian noise, sigma 0.05, fixed seed (a noisier scanner)."""
    gen = torch.Generator().manual_seed(1234)
    return (x + 0.05 * torch.randn(x.shape, generator=gen)).clamp(0, 1)


VARIANTS = {"lowcontrast": _low_contrast, "noisy": _noisy}


def load_center(name: str, data_root: str | Path, split: str, img_size: int, in_chans: int) -> SliceData:
    """Loads one split of a center ``<set>[/<meta center>][@<variant>]`` with its masks as classes.

    Raises:
        TaskUnavailable: The shard set is missing (e.g. Colin27 without ``mricron-data``).
        KeyError: Unknown variant.
    """
    base, _, variant = name.partition("@")
    shard_set, _, meta_center = base.partition("/")
    requires = "mricron-data" if shard_set.startswith("colin27") else ""
    task = SegTask(f"center:{name}", shard_set, requires=requires)
    data = load_split(task, data_root, split, img_size, in_chans)
    if meta_center:
        data = data.where_center(meta_center)
        if not len(data):
            raise TaskUnavailable(f"No slices with meta.center={meta_center!r} in shard set {shard_set!r}")
    if variant:
        if variant not in VARIANTS:
            raise KeyError(f"Unknown center variant {variant!r}. Known: {sorted(VARIANTS)}")
        data.images = VARIANTS[variant](data.images)
    data.centers = [name] * len(data)
    return data


def resolve_new_center(cfg: Any) -> tuple[str, str]:
    """``(center, note)``: ``centers.new`` if installed, else ``centers.fallback_new`` with a note saying so."""
    try:
        load_center(cfg.centers.new, cfg.data_root, "test", 32, cfg.in_chans)
        return cfg.centers.new, ""
    except TaskUnavailable as err:
        if not cfg.centers.fallback_new:
            raise
        note = f"new center {cfg.centers.new!r} unavailable ({err}); using {cfg.centers.fallback_new!r} instead"
        return cfg.centers.fallback_new, note


def _adapted_method(mode: str, base: Any, cfg: Any) -> Any:
    """A copy of the trained base model set up for adaptation ``mode`` (decoder weights carried over)."""
    cfg = copy.deepcopy(cfg)
    backbone = copy.deepcopy(base.backbone)
    if mode in ("partial", "finetune"):
        cfg.unet.freeze_encoder = mode == "partial"
        method = build_method("seg-unet", backbone, base.num_classes, cfg)
    else:
        key, _, extra = mode.partition("+")
        cfg.prompt.tune_decoder = extra == "decoder"
        method = build_method(key, backbone, base.num_classes, cfg)
    method.decoder.load_state_dict(base.decoder.state_dict())
    return method.to(next(base.parameters()).device)


def _dice(summary: dict) -> float | None:
    return summary.get("dice_mean")


def run_new_center(cfg: Any, build_backbone: Any, device: torch.device, out_dir: Path) -> dict[str, Any]:
    """Runs the protocol and returns the JSON-ready result (see the module docstring).

    Args:
        cfg: A :class:`~downstream.segmentation.config.SegmentationConfig` (reads ``centers``, ``optim``...).
        build_backbone: ``() -> Backbone`` (a ViT, since prompts need tokens).
        device: Where to train.
        out_dir: Run directory (deltas are written under it).
    """
    new, note = resolve_new_center(cfg)
    old = list(cfg.centers.old)
    if new in old:
        raise ValueError(f"new center {new!r} is also an old center {old}")
    load = lambda c, s: load_center(c, cfg.data_root, s, cfg.img_size, cfg.in_chans)  # noqa: E731
    old_train = concat([load(c, "train") for c in old])
    tests = {c: load(c, "test") for c in [*old, new]}
    new_train = subsample_subjects(load(new, "train"), cfg.centers.adapt_fraction, cfg.seed)
    names = {tuple(d.class_names) for d in [old_train, new_train, *tests.values()]}
    if len(names) != 1:
        raise ValueError(f"centers disagree on the mask classes: {sorted(names)}")
    prep = lambda xs: [normalise_for(xs[0], cfg)]  # noqa: E731

    torch.manual_seed(cfg.seed)
    base = build_method("seg-unet", build_backbone(), old_train.num_classes, cfg).to(device)
    t0 = time.perf_counter()
    base_fit = fit(base, [old_train.images], old_train.masks, cfg, cfg.centers.base_epochs, cfg.seed, cfg.augment, prep)
    base_fit["wall_s"] = time.perf_counter() - t0
    before = {c: evaluate_segmentation(base, d, cfg) for c, d in tests.items()}

    adapt: dict[str, Any] = {}
    for mode in cfg.centers.adapt:
        if mode == "direct":
            method, train_info, after = base, {"steps": 0, "wall_s": 0.0}, before
        else:
            torch.manual_seed(cfg.seed)
            method = _adapted_method(mode, base, cfg)
            t0 = time.perf_counter()
            train_info = fit(method, [new_train.images], new_train.masks, cfg, cfg.optim.epochs, cfg.seed,
                             cfg.augment, prep)  # fmt: skip
            train_info["wall_s"] = time.perf_counter() - t0
            after = {c: evaluate_segmentation(method, d, cfg) for c, d in tests.items()}
        delta_file = None
        if cfg.save_delta and mode != "direct":
            from safetensors.torch import save_file

            delta_file = out_dir / "deltas" / new.replace("/", "_") / f"{mode}.safetensors"
            delta_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = delta_file.with_suffix(".tmp")
            save_file({k: v.contiguous() for k, v in method.delta_state_dict().items()}, str(tmp))
            tmp.replace(delta_file)
        adapt[mode] = {
            "new_center": after[new],
            "old_centers": {c: after[c] for c in old},
            "forgetting": {c: _sub(_dice(before[c]), _dice(after[c])) for c in old},
            "params": method.parameter_report() if mode != "direct" else {"trainable": 0},
            "train": {k: v for k, v in train_info.items() if k != "loss_curve"},
            "delta_file": str(delta_file) if delta_file else None,
        }
    return {
        "protocol": "new_center",
        "old_centers": old,
        "new_center": new,
        "note": note,
        "class_names": old_train.class_names,
        "num_slices": {
            "old_train": len(old_train),
            "new_train": len(new_train),
            **{f"test/{c}": len(d) for c, d in tests.items()},
        },
        "base": {"train": base_fit, "before": before, "params": base.parameter_report()},
        "adapt": adapt,
        "table": forgetting_table(before, adapt, old, new),
    }


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else float(a - b)


def forgetting_table(before: dict, adapt: dict, old: list[str], new: str) -> list[dict[str, Any]]:
    """One row per adaptation mode: new-center Dice, each old center's Dice before/after/forgetting, params."""
    rows = []
    for mode, res in adapt.items():
        row: dict[str, Any] = {
            "mode": mode,
            "new_center_dice_before": _dice(before[new]),
            "new_center_dice": _dice(res["new_center"]),
            "trainable_params": res["params"].get("trainable", 0),
            "trainable_pct": res["params"].get("trainable_pct", 0.0),
        }
        for c in old:
            row[f"{c}_dice_before"] = _dice(before[c])
            row[f"{c}_dice_after"] = _dice(res["old_centers"][c])
            row[f"{c}_forgetting"] = res["forgetting"][c]
        rows.append(row)
    return rows
