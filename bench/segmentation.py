"""Segmentation training cost: time per epoch of every segmentation method on real MNI152 slices, in one run.

Setup: the bundled ``mni152`` shard set (``runs/shards`` if present, else built with ``data_prep.bundled``,
profile ``tiny``: 64-px slices), its training split, batch 16, Adam, 2 intra-op threads. Cases:

* ``unet_r18_finetune``: ``seg-unet`` on ResNet-18, encoder fine-tuned (the **baseline** of every ratio);
* ``unet_r18_frozen``: the same with the encoder frozen (decoder only);
* ``unet_vit_finetune``: ``seg-unet`` on vit_tiny (UNETR decoder), fine-tuned;
* ``prompt_deep_vit``: ``seg-prompt-deep`` on vit_tiny, 8 prompts per block, prompts only;
* ``prompt_shallow_vit``: ``seg-prompt-shallow`` likewise;
* ``mask_guided_r18``: ``mask-guided`` classification (ResNet-18 frozen, ROI input + global, fusion head).

Each case trains ``--epochs`` epochs (median epoch time reported) and, without ``--quick``, also reports test
Dice (or balanced accuracy) after those epochs: a cost figure, not a quality comparison (one template brain).
``ratios`` are each case's time per epoch / the baseline's. The JSON records the load average at start and end
(``bench/_common.py``), since the machine may be shared.

Usage: ``python bench/segmentation.py [--quick] [--shards DIR] [--epochs N] [--out bench/results/segmentation.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np
import torch

from bench._common import BenchRun
from bench._shards import bundled_shards
from downstream.registry import build_method
from downstream.segmentation.config import SegmentationConfig
from downstream.segmentation.loop import evaluate_segmentation, fit
from downstream.segmentation.mask_guided import MaskGuidedClassifier
from downstream.segmentation.run import build_backbone, classification_scores
from downstream.segmentation.tasks import load_split, normalise
from lvmmed.config import load_config

REPO = Path(__file__).resolve().parents[1]

CASES = {
    "unet_r18_finetune": ("seg-unet", "resnet18", ["unet.freeze_encoder=false"]),
    "unet_r18_frozen": ("seg-unet", "resnet18", ["unet.freeze_encoder=true"]),
    "unet_vit_finetune": ("seg-unet", "vit_tiny", ["unet.freeze_encoder=false"]),
    "prompt_deep_vit": ("seg-prompt-deep", "vit_tiny", ["prompt.num_tokens=8"]),
    "prompt_shallow_vit": ("seg-prompt-shallow", "vit_tiny", ["prompt.num_tokens=8"]),
    "mask_guided_r18": ("mask-guided", "resnet18", ["task=mask_guided_tissue", "mask_guided.text_branch=learned"]),
}
QUICK = ("unet_r18_finetune", "unet_r18_frozen", "prompt_deep_vit", "mask_guided_r18")
BASELINE = "unet_r18_finetune"


def run_case(name: str, shards: Path, epochs: int, evaluate: bool) -> dict:
    """Trains one case; returns time per epoch, trainable parameters and (optionally) a test score."""
    key, backbone, extra = CASES[name]
    cfg = load_config(
        SegmentationConfig,
        overrides=[f"data_root={shards}", f"method={key}", f"backbone={backbone}", "optim.batch_size=16",
                   "hd95=false", "bootstrap=0", *extra],
    )  # fmt: skip
    train = load_split(cfg.task, shards, "train", cfg.img_size, cfg.in_chans)
    torch.manual_seed(0)
    prep = lambda xs: [normalise(xs[0], cfg.norm_mean, cfg.norm_std), *xs[1:]]  # noqa: E731
    if key == "mask-guided":
        method = MaskGuidedClassifier(build_backbone(cfg), len(train.label_names), cfg, class_names=train.label_names)
        inputs, target = [train.images, (train.masks > 0).long()], train.labels
    else:
        method = build_method(key, build_backbone(cfg), train.num_classes, cfg)
        inputs, target = [train.images], train.masks
    times = []
    for epoch in range(epochs):
        info = fit(method, inputs, target, cfg, epochs=1, seed=epoch, augment=True, prepare=prep)
        times.append(info["time_per_epoch_s"])
    out = {
        "method": key,
        "backbone": backbone,
        "train_slices": len(train),
        "epochs": epochs,
        "time_per_epoch_s": float(np.median(times)),
        "slices_per_s": len(train) / float(np.median(times)),
        "trainable_params": method.parameter_report()["trainable"],
        "trainable_pct": method.parameter_report()["trainable_pct"],
    }
    if evaluate:
        test = load_split(cfg.task, shards, "test", cfg.img_size, cfg.in_chans)
        if key == "mask-guided":
            with torch.no_grad():
                logits = method(normalise(test.images, cfg.norm_mean, cfg.norm_std), (test.masks > 0).long())
            pred = logits["logits"].argmax(1).numpy()
            out["test_balanced_accuracy"] = classification_scores(pred, test.labels.numpy())["balanced_accuracy"]
        else:
            out["test_dice_mean"] = evaluate_segmentation(method, test, cfg)["dice_mean"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 cases, 1 epoch, no evaluation (< 1 min idle)")
    parser.add_argument("--shards", default=None, help="directory holding the mni152 shard set")
    parser.add_argument("--epochs", type=int, default=0, help="epochs per case (default 1 quick, 3 full)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "segmentation.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    epochs = args.epochs or (1 if args.quick else 3)
    names = QUICK if args.quick else tuple(CASES)
    run = BenchRun("segmentation", quick=args.quick)
    with tempfile.TemporaryDirectory() as tmp:
        shards = bundled_shards(args.shards, Path(tmp), present="mni152/manifest.json", names=["mni152"])
        t0 = time.perf_counter()
        cases = {name: run_case(name, shards, epochs, evaluate=not args.quick) for name in names}
        total = time.perf_counter() - t0
    base = cases[BASELINE]["time_per_epoch_s"]
    figures = {
        "baseline": BASELINE,
        "ratios": {f"{n}_vs_{BASELINE}": c["time_per_epoch_s"] / base for n, c in cases.items() if n != BASELINE},
        "cases": cases,
        "total_s": total,
        "config": {"img_size": 64, "batch_size": 16, "optimizer": "adam", "epochs": epochs},
    }
    result = run.finish(figures, args.out)
    print(
        json.dumps(
            {"ratios": result["ratios"], "time_per_epoch_s": {n: c["time_per_epoch_s"] for n, c in cases.items()}}
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
