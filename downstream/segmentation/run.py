"""Runs one segmentation cell: ``run_segmentation(cfg) -> dict`` (also writes ``result.json`` and the config).

Dispatch:

* ``protocol=new_center``: :func:`downstream.segmentation.centers.run_new_center` (ViT backbone).
* ``method=mask-guided``: mask-guided classification at every data fraction (:func:`run_mask_guided`).
* otherwise (``seg-unet``, ``seg-prompt-*``): train on the task's train split, report val and test metrics.

CLI: ``python -m downstream --config configs/downstream/seg_tissue.yaml seed=1 weights=<dir>``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from downstream.inputs import apply_weight_settings, check_cpu_cost
from downstream.registry import build_method
from downstream.runtime import build_backbone, machine_info, recorded_run, resolve_device, seed_everything
from downstream.segmentation.centers import run_new_center
from downstream.segmentation.config import SegmentationConfig
from downstream.segmentation.loop import evaluate_segmentation, fit, predict_masks
from downstream.segmentation.mask_guided import MaskGuidedClassifier, sam2_masks
from downstream.segmentation.tasks import (
    SliceData,
    get_task,
    load_split,
    normalise_for,
    split_slices,
    subsample_subjects,
)
from lvmmed.config import load_config


def _prep(cfg: SegmentationConfig):
    return lambda xs: [normalise_for(xs[0], cfg), *xs[1:]]


def _save_delta(method: Any, file: Path) -> str:
    from safetensors.torch import save_file

    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in method.delta_state_dict().items()}, str(tmp))
    tmp.replace(file)
    return str(file)


def load_splits_of(cfg: SegmentationConfig) -> dict[str, SliceData]:
    """Train/val/test slices of the run's task under ``split_mode``."""
    task = get_task(cfg.task)
    if cfg.split_mode == "shard":
        return {s: load_split(task, cfg.data_root, s, cfg.img_size, cfg.in_chans) for s in ("train", "val", "test")}
    every = load_split(task, cfg.data_root, None, cfg.img_size, cfg.in_chans)
    return split_slices(every, cfg.split_mode, cfg.seed, cfg.val_frac, cfg.test_frac)


def run_single(cfg: SegmentationConfig, device: torch.device, out_dir: Path) -> dict[str, Any]:
    """Train/val/test of ``seg-unet`` or ``seg-prompt-*`` on one task."""
    task = get_task(cfg.task)
    if task.label_field:
        raise ValueError(f"task {cfg.task!r} is a mask-guided classification task; use method=mask-guided")
    splits = load_splits_of(cfg)
    check_cpu_cost(cfg, device, sum(len(s) for s in splits.values()))
    train = subsample_subjects(splits["train"], cfg.fraction, cfg.seed)
    torch.manual_seed(cfg.seed)
    method = build_method(cfg.method, build_backbone(cfg), train.num_classes, cfg).to(device)
    t0 = time.perf_counter()
    info = fit(method, [train.images], train.masks, cfg, cfg.optim.epochs, cfg.seed, cfg.augment, _prep(cfg))
    info["wall_s"] = time.perf_counter() - t0
    val, test = (evaluate_segmentation(method, splits[s], cfg) for s in ("val", "test"))
    result = {
        "n_train": len(train), "n_val": len(splits["val"]), "n_test": len(splits["test"]),
        "num_classes": train.num_classes, "class_names": train.class_names,
        "metrics": flat_metrics(test), "ci95": {"dice_mean": test["dice_mean_ci95"]},
        "val_metrics": flat_metrics(val), "params": method.parameter_report(),
        "train": info, "train_seconds": info["wall_s"], "val": val, "test": test,
    }  # fmt: skip
    if cfg.save_delta:
        result["delta_file"] = _save_delta(method, out_dir / "delta.safetensors")
    result["_method"] = method  # removed before writing; lets callers (demo, tests) reuse the model
    return result


def reevaluate(directory: str | Path) -> dict[str, Any]:
    """Rebuilds a finished ``protocol=single`` run from ``config.yaml`` + ``delta.safetensors``; its test metrics
    (:func:`flat_metrics`, the ``metrics`` block of the result).

    The encoder comes from the run's ``weights`` (a random encoder is re-created from the run's seed, exactly as
    in training); the delta holds every trained tensor, including BatchNorm statistics of trained modules.
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    cfg = load_config(SegmentationConfig, directory / "config.yaml")
    if cfg.protocol != "single" or cfg.method == "mask-guided":
        raise ValueError(f"{directory}: re-evaluation supports protocol=single seg-unet/seg-prompt-* runs")
    test = load_split(get_task(cfg.task), cfg.data_root, "test", cfg.img_size, cfg.in_chans)
    torch.manual_seed(cfg.seed)
    method = build_method(cfg.method, build_backbone(cfg), test.num_classes, cfg)
    method.load_delta_state_dict(load_file(str(directory / "delta.safetensors")))
    method.to(resolve_device(cfg.device))
    return flat_metrics(evaluate_segmentation(method, test, cfg))


def _roi(mask: torch.Tensor, foreground: list[int]) -> torch.Tensor:
    return (mask > 0).long() if not foreground else torch.isin(mask, torch.as_tensor(foreground)).long()


def _stratified_fraction(labels: torch.Tensor, fraction: float, seed: int) -> list[int]:
    """A seeded ``fraction`` of the training images per class (at least one each; MedFocusCLIP fractions)."""
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for c in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels.numpy() == c)
        keep += rng.permutation(idx)[: max(1, round(fraction * idx.size))].tolist()
    return sorted(keep)


def classification_scores(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    return {
        "accuracy": float(accuracy_score(target, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(target, pred)),
        "macro_f1": float(f1_score(target, pred, average="macro")),
    }


def provide_masks(cfg: SegmentationConfig, train: SliceData, others: list[SliceData], device: torch.device) -> dict:
    """ROI masks for ``train`` and ``others`` from ``mask_guided.mask_source`` (plus how they were made)."""
    mg = cfg.mask_guided
    if mg.mask_source == "gt":
        return {"masks": [_roi(d.masks, mg.foreground) for d in [train, *others]], "info": {"source": "gt"}}
    if mg.mask_source == "sam2":
        return {"masks": [sam2_masks(d.images, cfg) for d in [train, *others]], "info": {"source": "sam2"}}
    seg_cfg = dataclasses.replace(cfg, method="seg-unet")
    torch.manual_seed(cfg.seed)
    seg = build_method("seg-unet", build_backbone(cfg), train.num_classes, seg_cfg).to(device)
    info = fit(seg, [train.images], train.masks, seg_cfg, mg.seg_epochs, cfg.seed, cfg.augment, _prep(cfg))
    masks = [_roi(predict_masks(seg, d, cfg), mg.foreground) for d in [train, *others]]
    quality = evaluate_segmentation(seg, others[-1], cfg)
    return {"masks": masks, "info": {"source": "seg-unet", "train": info, "test_dice_mean": quality["dice_mean"]}}


def run_mask_guided(cfg: SegmentationConfig, device: torch.device, out_dir: Path) -> dict[str, Any]:
    """Mask-guided vs unmasked classification at every ``mask_guided.fractions`` (same seed, split, masks)."""
    task = get_task(cfg.task)
    if not task.label_field:
        raise ValueError(f"task {cfg.task!r} has no image-level label; mask-guided needs e.g. mask_guided_tissue")
    train, test = (load_split(task, cfg.data_root, s, cfg.img_size, cfg.in_chans) for s in ("train", "test"))
    provided = provide_masks(cfg, train, [test], device)
    train_roi, test_roi = provided["masks"]
    results: dict[str, Any] = {}
    text_branch = ""
    for fraction in cfg.mask_guided.fractions:
        idx = _stratified_fraction(train.labels, fraction, cfg.seed)
        cell: dict[str, Any] = {"num_train": len(idx)}
        for variant in ("mask_guided", "unmasked"):
            torch.manual_seed(cfg.seed)
            model = MaskGuidedClassifier(build_backbone(cfg), len(train.label_names), cfg,
                                         class_names=train.label_names).to(device)  # fmt: skip
            text_branch = model.text_branch
            masks = train_roi[idx] if variant == "mask_guided" else None
            info = fit(model, [train.images[idx], masks], train.labels[idx], cfg, cfg.optim.epochs, cfg.seed,
                       cfg.augment, _prep(cfg))  # fmt: skip
            with torch.no_grad():
                x = normalise_for(test.images, cfg).to(device)
                m = test_roi.to(device) if variant == "mask_guided" else None
                pred = model(x, m)["logits"].argmax(1).cpu().numpy()
            cell[variant] = {**classification_scores(pred, test.labels.numpy()),
                             "time_per_epoch_s": info["time_per_epoch_s"]}  # fmt: skip
        cell["params"] = model.parameter_report()
        results[f"{fraction:g}"] = cell
    return {
        "label_names": train.label_names,
        "num_slices": {"train": len(train), "test": len(test)},
        "masks": provided["info"],
        "text_branch": text_branch,
        "image_encoder": f"lvmmed {cfg.backbone} ({cfg.weights}), frozen",
        "fractions": results,
    }


def flat_metrics(summary: dict[str, Any]) -> dict[str, float | None]:
    """Scalar metrics of an evaluation summary (the ``metrics`` block of the result, as in classification)."""
    keys = ("dice_mean", "iou_mean", "hd95_mean")
    if summary.get("num_volumes", 0) < summary.get("num_images", 0):  # slices from volumes: 3-D metrics too
        keys += ("dice3d_mean", "iou3d_mean")
    out = {k: summary.get(k) for k in keys if k in summary}
    for name, block in (("dice", "dice_per_class"), ("iou", "iou_per_class"), ("hd95", "hd95_per_class")):
        out.update({f"{name}_{c}": v for c, v in summary.get(block, {}).items()})
    if "dice3d_mean" in out:
        out.update({f"dice3d_{c}": v for c, v in summary.get("dice3d_per_class", {}).items()})
    return out


def run_segmentation(cfg: SegmentationConfig) -> dict[str, Any]:
    """Runs one cell; writes ``result.json``, ``result.csv`` and ``config.yaml`` to ``cfg.output_dir``.

    The result mirrors ``downstream.run.run_experiment``: ``task, task_type ("segmentation"), method, protocol,
    weights, weights_name, backbone, seed, fraction, status ("ok" | "failed"), error, seconds, output_dir``,
    plus, for ``protocol=single``: ``n_train, n_val, n_test, num_classes, class_names, metrics`` (test:
    ``dice_mean, iou_mean, hd95_mean, dice3d_mean, iou3d_mean, dice_<class>``), ``ci95 {"dice_mean": [lo, hi]}``
    (bootstrap over subjects), ``val_metrics``, ``params``, ``train``, ``train_seconds`` and the full ``test``/``val``
    summaries; for ``new_center``: ``table`` (one row per adaptation mode with old/new-center Dice and
    forgetting), ``base``, ``adapt``; for ``mask-guided``: ``fractions`` (mask-guided vs unmasked per fraction).
    Failures are recorded, not raised (``status="failed"``, traceback in ``error.txt``).
    """
    cfg = apply_weight_settings(cfg)
    header = {
        "task": cfg.task, "task_type": "segmentation", "method": cfg.method, "protocol": cfg.protocol,
        "backbone": cfg.backbone, "weights": cfg.weights, "weights_name": cfg.weights_name or cfg.weights,
        "seed": cfg.seed, "fraction": cfg.fraction,
    }  # fmt: skip
    return recorded_run(cfg, header, _run, _flat_row, extra=lambda: {"machine": machine_info()})


def _run(cfg: SegmentationConfig, out_dir: Path) -> dict[str, Any]:
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    if cfg.protocol == "new_center":
        return run_new_center(cfg, lambda: build_backbone(cfg), device, out_dir)
    if cfg.method == "mask-guided":
        return run_mask_guided(cfg, device, out_dir)
    body = run_single(cfg, device, out_dir)
    body.pop("_method", None)
    return body


def _flat_row(result: dict[str, Any]) -> dict[str, Any]:
    row = {k: result.get(k) for k in ("task", "method", "protocol", "weights_name", "backbone", "seed", "fraction",
                                      "status", "seconds")}  # fmt: skip
    row.update(result.get("metrics") or {})
    return row
