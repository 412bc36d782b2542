"""Pretraining throughput: our full loop vs the bare backbone vs lightly's reference SimCLR loop, in one run.

Setup (full mode): ResNet-18 at 96 px, batch 64 (two views each), 2 intra-op threads, the bundled real shards
(``runs/shards`` if present, else built with ``data_prep.bundled``, profile ``tiny``). All variants use
3-channel inputs (grey replicated) so the backbone cost is identical. Images/s count source images (one image =
two views), as the median over 20 timed steps after 3 warm-up steps. ``--quick`` is a smoke run (64 px, batch 16,
3 timed steps after 1 warm-up; under a minute on an idle 2-core machine): its JSON says ``"quick": true`` and its
figures back no claim. The variants:

* ``full_gm``: ``python -m pretrain`` in-process (stream from tar shards + two-view augmentation + backbone +
  projector + graph-matching loss + AdamW step), read from its ``metrics.csv`` (checkpointing excluded).
* ``full_ntxent``: the same loop with the NT-Xent loss.
* ``backbone``: the bare ResNet-18 forward+backward on in-memory tensors of the same shape (2 x batch views).
* ``lightly_simclr``: lightly's reference loop: ``SimCLRTransform`` on in-memory PIL images of the same shards,
  a torch DataLoader, ResNet-18 + ``SimCLRProjectionHead`` + ``NTXentLoss``, AdamW step.

Targets: ``full_gm / backbone >= 0.85`` and ``full_ntxent / lightly_simclr >= 1.0`` (``met`` flags in the JSON).
The machine may be shared, so the JSON records the load average at start and end, and the bare backbone is
measured before *and* after the loops (``backbone.drift``): with a large drift the ratios measure the load, not
the code.

Usage: ``python bench/pretrain.py [--quick] [--shards DIR] [--workers 1] [--out bench/results/pretrain.json]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np
import torch
from accelerate.state import AcceleratorState, GradientState
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform
from PIL import Image

from bench._common import BenchRun
from bench._shards import bundled_shards
from lvmmed.data.pipeline import DataConfig, resolve_shard_sets
from lvmmed.data.shards import iter_samples
from lvmmed.models import create_backbone
from pretrain.__main__ import main as train

REPO = Path(__file__).resolve().parents[1]

BACKBONE = "resnet18"
# (size, batch, timed steps, warm-up steps): the full mode backs the targets; quick is a smoke run (< 1 min).
FULL = {"size": 96, "batch": 64, "steps": 20, "warmup": 3}
QUICK = {"size": 64, "batch": 16, "steps": 3, "warmup": 1}


def full_loop(shards: Path, loss: str, setup: dict, workers: int, tmp: Path) -> dict:
    """Images/s of the real training loop, from the per-step throughput it logs."""
    out, steps, warmup = tmp / f"run_{loss}", setup["steps"], setup["warmup"]
    train(
        [
            "--config",
            str(REPO / "configs/pretrain/tiny_cpu_r18.yaml"),
            f"output_dir={out}",
            "resume=never",
            f"data.shards=[{shards}]",
            f"augment.size={setup['size']}",
            f"data.batch_size={setup['batch']}",
            "model.in_chans=3",
            f"data.num_workers={workers}",
            f"max_steps={steps + warmup}",
            "log_every=1",
            "checkpoint_every=0",
            "export_at_end=false",
            "trackers=[]",
            f"loss.name={loss}",
            "model.proj_hidden_dim=512",
            "model.proj_output_dim=128",
        ]
    )
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    rows = list(csv.DictReader((out / "metrics.csv").open()))[warmup:]
    rates = [float(r["images_per_s"]) for r in rows]
    return {
        "images_per_s": statistics.median(rates),
        "steps": len(rates),
        "loss_first_last": [float(rows[0]["loss"]), float(rows[-1]["loss"])],
    }


def bare_backbone(setup: dict) -> dict:
    """Images/s of the backbone alone: forward+backward of 2 x batch in-memory views (no data, loss or step)."""
    size, batch = setup["size"], setup["batch"]
    model = create_backbone(BACKBONE, in_chans=3, img_size=size).train()
    x = torch.randn(2 * batch, 3, size, size)
    rates, warmup = [], setup["warmup"]
    for i in range(setup["steps"] + warmup):
        t0 = time.perf_counter()
        model(x).sum().backward()
        model.zero_grad(set_to_none=True)
        if i >= warmup:
            rates.append(batch / (time.perf_counter() - t0))
    return {"images_per_s": statistics.median(rates), "steps": len(rates)}


class _PILImages(torch.utils.data.Dataset):
    """In-memory PIL RGB images with lightly's SimCLR transform (the reference pipeline's input)."""

    def __init__(self, images: list, transform) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return 10**6

    def __getitem__(self, i: int):
        return self.transform(self.images[i % len(self.images)])


def lightly_simclr(shards: Path, setup: dict, workers: int) -> dict:
    """Images/s of lightly's reference SimCLR loop on the same images, backbone, batch and resolution."""
    roots = {Path(u).parent for s in resolve_shard_sets(DataConfig(shards=[str(shards)])) for u in s.urls}
    images = []
    for root in sorted(roots):
        for sample in iter_samples(root, "train"):
            arr = (np.clip(np.asarray(sample["image"], dtype=np.float32), 0, 1) * 255).astype(np.uint8)
            images.append(Image.fromarray(arr).convert("RGB"))
    size, batch, warmup = setup["size"], setup["batch"], setup["warmup"]
    dataset = _PILImages(images, SimCLRTransform(input_size=size))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True, persistent_workers=workers > 0
    )
    backbone = create_backbone(BACKBONE, in_chans=3, img_size=size)
    head = SimCLRProjectionHead(backbone.feature_dim, 512, 128)
    criterion = NTXentLoss()
    params = [*backbone.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-3, foreach=True)
    rates, it = [], iter(loader)
    for i in range(setup["steps"] + warmup):
        t0 = time.perf_counter()
        x0, x1 = next(it)
        z = head(backbone(torch.cat([x0, x1])))
        loss = criterion(z[:batch], z[batch:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= warmup:
            rates.append(batch / (time.perf_counter() - t0))
    return {"images_per_s": statistics.median(rates), "steps": len(rates)}


def measure(shards: Path, setup: dict, workers: int, tmp: Path) -> dict:
    """Images/s of every variant.

    The bare backbone is measured before *and* after the loops: its drift shows how much a shared machine's load
    changed during the run (ratios are only meaningful when it is small).
    """
    before = bare_backbone(setup)
    results = {
        "full_gm": full_loop(shards, "graph_matching", setup, workers, tmp),
        "full_ntxent": full_loop(shards, "ntxent", setup, workers, tmp),
        "lightly_simclr": lightly_simclr(shards, setup, workers),
    }
    after = bare_backbone(setup)
    results["backbone"] = {
        "images_per_s": (before["images_per_s"] + after["images_per_s"]) / 2,
        "before": before["images_per_s"],
        "after": after["images_per_s"],
        "drift": abs(before["images_per_s"] - after["images_per_s"]) / max(before["images_per_s"], 1e-9),
    }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run at 64 px, batch 16 (< 1 min; backs no claim)")
    parser.add_argument("--shards", default=None, help="shard set or parent dir (default runs/shards or built)")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers for both data pipelines")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/pretrain.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    setup = dict(QUICK if args.quick else FULL)
    run = BenchRun("pretrain", quick=args.quick)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        shards = bundled_shards(args.shards, tmp)
        results = measure(shards, setup, args.workers, tmp)
    rate = {k: v["images_per_s"] for k, v in results.items()}
    ratios = {
        "full_gm_over_backbone": rate["full_gm"] / rate["backbone"],
        "full_ntxent_over_lightly_simclr": rate["full_ntxent"] / rate["lightly_simclr"],
        "full_gm_over_full_ntxent": rate["full_gm"] / rate["full_ntxent"],
    }
    run.target("full_gm_over_backbone", ratios["full_gm_over_backbone"], ">=", 0.85)
    run.target("full_ntxent_over_lightly_simclr", ratios["full_ntxent_over_lightly_simclr"], ">=", 1.0)
    setup.update(backbone=BACKBONE, in_chans=3, workers=args.workers, threads=torch.get_num_threads())
    setup["shards"] = args.shards or ("runs/shards" if (REPO / "runs" / "shards").is_dir() else "built: tiny profile")
    result = run.finish({"setup": setup, "results": results, "ratios": ratios}, args.out)
    print(json.dumps({"quick": args.quick, "rates": rate, "ratios": ratios, "met": result["met"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
