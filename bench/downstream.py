"""Downstream speed: seconds per training epoch of every classification method, and LP fit vs feature extraction.

Task: ``tissue`` (MNI152 patches, bundled tiny shards; built into a temporary directory unless ``--data-root`` holds
an ``mni152`` set). Backbone: ``vit_tiny`` at 32 px (``--backbone sam_vit_tiny`` also works), random init, one
process. For every method, one epoch over the training split (same samples, same batch size) is timed after a
one-step warm-up; the baseline, feature extraction, gets the same warm-up (one batch through the frozen backbone)
before it is timed. The linear probe records feature extraction (train + val) and the logistic-regression C sweep
separately. Ratios are against the baseline measured in the same run: feature extraction of the same training split
(a forward pass of the frozen backbone), i.e. ``epoch_seconds / feature_seconds``. No targets: the numbers feed the
benchmark-matrix planning. The load average at start and end is recorded because the machine may be shared.

Usage: ``python bench/downstream.py [--quick] [--data-root runs/shards] [--out bench/results/downstream.json]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np
import torch

from bench._common import BenchRun
from data_prep.bundled import build_bundled
from downstream.config import DownstreamConfig
from downstream.methods.gmoe import GMoEAdapter
from downstream.methods.linear import fit_logistic_probe
from downstream.registry import build_method, list_methods
from downstream.run import prepare_inputs
from downstream.tasks import load_task
from downstream.train_loop import extract_features, train_method
from lvmmed.config import load_config
from lvmmed.models import create_backbone


def _data_root(arg: str | None, tmp: Path) -> Path:
    if arg and (Path(arg) / "mni152" / "manifest.json").is_file():
        return Path(arg)

    build_bundled(tmp, profile="tiny", names=["mni152"])
    return tmp


def _build(key: str, cfg: DownstreamConfig, classes: int):
    torch.manual_seed(0)
    bb = create_backbone(cfg.backbone, in_chans=1, img_size=cfg.img_size)
    if key == "gmoe-adapter":
        general = create_backbone(cfg.backbone, in_chans=1, img_size=cfg.img_size)
        return GMoEAdapter(bb, classes, cfg, key=key, general_backbone=general)
    return build_method(key, bb, classes, cfg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (finishes in about a minute)")
    parser.add_argument("--data-root", default="runs/shards")
    parser.add_argument("--backbone", default="vit_tiny")
    parser.add_argument("--out", default="bench/results/downstream.json")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    per_class = 8 if args.quick else 100
    run = BenchRun("downstream", quick=args.quick)
    with tempfile.TemporaryDirectory() as tmp:
        root = _data_root(args.data_root, Path(tmp))
        cfg = load_config(
            DownstreamConfig,
            overrides=[
                f"backbone={args.backbone}",
                "img_size=32",
                "in_chans=1",
                f"max_per_class={per_class}",
                "optim.batch_size=32",
                "gmoe.num_experts=2",
                "linear.solver=sgd",
            ],
        )
        task = load_task("tissue", root, cfg.patch_size, cfg.patch_stride, cfg.max_per_class)
    train = task.splits == "train"
    x = prepare_inputs(task.images[train], cfg, torch.device("cpu"))
    y = torch.as_tensor(task.labels[train])
    val = prepare_inputs(task.images[task.splits == "val"], cfg, torch.device("cpu"))
    y_val = task.labels[task.splits == "val"]
    steps = int(np.ceil(len(x) / cfg.optim.batch_size))

    probe = _build("linear", cfg, task.num_classes)
    extract_features(probe, x[: cfg.optim.batch_size])  # warm-up, as every method gets one before it is timed
    t = time.perf_counter()
    feats = extract_features(probe, x)
    feature_seconds = time.perf_counter() - t
    val_feats = extract_features(probe, val)
    t = time.perf_counter()
    fit = fit_logistic_probe(feats, task.labels[train], task.num_classes, val_feats, y_val, cfg.linear.c_grid)
    lp_seconds = time.perf_counter() - t

    methods = {}
    for key in list_methods("classification"):
        key = "partial-2" if key == "partial-k" else key
        method = _build(key, cfg, task.num_classes)
        warm = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, max_steps=1))
        train_method(method, x[: cfg.optim.batch_size], y[: cfg.optim.batch_size], warm)
        epoch_cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, epochs=1, max_steps=0))
        info = train_method(method, x, y, epoch_cfg)
        report = method.parameter_report()
        methods[key] = {
            "epoch_seconds": info["seconds"],
            "steps": info["steps"],
            "samples_per_second": len(x) / info["seconds"],
            "ratio_to_feature_extraction": info["seconds"] / feature_seconds,
            "trainable": report["trainable"],
            "trainable_pct": report["trainable_pct"],
            "param_multiple": report["param_multiple"],
        }
        print(f"{key:<14} {info['seconds']:7.2f} s/epoch  ({len(x) / info['seconds']:7.1f} samples/s)", flush=True)
    figures = {
        "task": "tissue",
        "backbone": args.backbone,
        "img_size": cfg.img_size,
        "train_samples": len(x),
        "batch_size": cfg.optim.batch_size,
        "steps_per_epoch": steps,
        "threads": torch.get_num_threads(),
        "baseline": "feature extraction of the training split (frozen forward pass, after a one-batch warm-up)",
        "feature_extraction_seconds": feature_seconds,
        "linear_probe": {
            "logreg_fit_seconds": lp_seconds,
            "c_grid": list(cfg.linear.c_grid),
            "best_C": fit.c,
            "ratio_fit_to_feature_extraction": lp_seconds / feature_seconds,
        },
        "methods": methods,
    }
    run.finish(figures, args.out)
    print(f"features {feature_seconds:.2f}s, LP fit {lp_seconds:.2f}s -> {args.out}")


if __name__ == "__main__":
    main()
