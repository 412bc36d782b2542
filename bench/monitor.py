"""Cost of the online k-NN monitor (``pretrain/monitor.py``) against the training step it rides on, in one run.

Setup: the ``tiny_cpu`` preset as it is (``configs/pretrain/tiny_cpu.yaml``: ViT-Tiny/16 at 64 px, 1 channel,
batch 32, GM loss, one DataLoader worker) on the bundled shards (``runs/shards`` if present, else built with
``data_prep.bundled``, profile ``tiny``), with the monitor's defaults (k=20, T=0.07, ``max_samples`` 500 per split)
on the ``mni152`` tissue patches (mask labels: 16 px patches, stride 8; memory = train split, scored on val). One
in-process training run evaluates more often than the default interval, to time more evaluations; from its
``metrics.csv``:

* ``eval_seconds``: median wall time of one evaluation (``monitor_seconds``) after the first; the first (before
  step 1) is listed apart since it pays first-call costs;
* ``step_seconds``: median seconds per optimiser step over the log windows after the first
  (``images_per_step / images_per_s``; the step timing excludes the monitor): the baseline, from the same run;
* ``overhead_at_default``: ``eval_seconds / (eval_every × step_seconds)`` at the default ``eval_every`` (50): the
  fraction the monitor adds to training time. Target: ≤ 0.10.

Also, outside the run, on a fresh backbone: the set-up cost (read the eval set and cache its inputs, once per run)
and one evaluation split into feature extraction, k-NN vote and, for ``monitor.linear_probe=true``, the probe fit
(scikit-learn imported beforehand; a run pays that import in its first evaluation).
``--quick``: 6 steps, an evaluation every 3 (under a minute on an idle 2-core machine; backs no claim).

Usage: ``python bench/monitor.py [--quick] [--shards DIR] [--out bench/results/monitor.json]``.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import torch
from accelerate.state import AcceleratorState, GradientState

from bench._common import BenchRun
from bench._shards import bundled_shards
from lvmmed.config import load_config
from lvmmed.probes import knn_accuracy, linear_probe_accuracy, pooled_features
from pretrain.__main__ import main as train
from pretrain.config import PretrainConfig
from pretrain.meta_arch import SSLMetaArch
from pretrain.monitor import load_eval_tensors

REPO = Path(__file__).resolve().parents[1]

PRESET = REPO / "configs/pretrain/tiny_cpu.yaml"
FULL = {"max_steps": 100, "eval_every": 10}
QUICK = {"max_steps": 6, "eval_every": 3}
TARGET = 0.10


def _overrides(shards: Path) -> list[str]:
    return [f"data.shards=[{shards}]", f"monitor.eval_set={shards / 'mni152'}", "trackers=[]"]


def training_run(shards: Path, setup: dict, tmp: Path) -> dict:
    """One monitored run of the preset; per-evaluation and per-step seconds from its metrics.csv."""
    out = tmp / "run"
    argv = ["--config", str(PRESET), f"output_dir={out}", "resume=never", f"max_steps={setup['max_steps']}",
            f"monitor.eval_every={setup['eval_every']}", "checkpoint_every=0", "export_at_end=false",
            *_overrides(shards)]  # fmt: skip
    started = time.perf_counter()
    try:
        train(argv)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    wall = time.perf_counter() - started
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    evals = [(int(r["step"]), float(r["monitor_seconds"]), float(r["monitor_knn_acc"])) for r in rows
             if r.get("monitor_seconds")]  # fmt: skip

    cfg = load_config(PretrainConfig, str(PRESET), [])
    images_per_step = cfg.data.batch_size * cfg.optim.grad_accum_steps
    windows = [images_per_step / float(r["images_per_s"]) for r in rows if r.get("images_per_s")][1:]
    return {
        "wall_seconds": wall,
        "eval_steps": [s for s, _, _ in evals],
        "eval_seconds_each": [round(t, 4) for _, t, _ in evals],
        "knn_acc_each": [round(a, 4) for _, _, a in evals],
        "first_eval_seconds": evals[0][1],
        "eval_seconds": statistics.median(t for _, t, _ in evals[1:]),
        "step_seconds": statistics.median(windows),
        "log_windows": len(windows),
        "default_eval_every": cfg.monitor.eval_every,
        "max_samples": cfg.monitor.max_samples,
    }


def breakdown(shards: Path) -> dict:
    """Set-up and the parts of one evaluation, on a fresh (random-init) backbone of the preset."""
    cfg = load_config(PretrainConfig, str(PRESET), _overrides(shards))
    for module in ("sklearn.neighbors", "sklearn.linear_model"):  # imported before timing: a run pays the
        importlib.import_module(module)  # imports once, in its first evaluation's time

    t0 = time.perf_counter()
    data = load_eval_tensors(cfg)
    t1 = time.perf_counter()
    backbone = SSLMetaArch.from_config(cfg).backbone
    t2 = time.perf_counter()
    train = pooled_features(backbone, data.train_x, cfg.monitor.batch_size)
    test = pooled_features(backbone, data.test_x, cfg.monitor.batch_size)
    t3 = time.perf_counter()
    knn = knn_accuracy(train, data.train_y, test, data.test_y, data.num_classes, cfg.monitor.k, cfg.monitor.temperature)
    t4 = time.perf_counter()
    probe = linear_probe_accuracy(train.numpy(), data.train_y.numpy(), test.numpy(), data.test_y.numpy())
    t5 = time.perf_counter()
    return {
        "eval_set": data.name,
        "labels": data.kind,
        "train_samples": len(data.train_y),
        "test_samples": len(data.test_y),
        "classes": data.num_classes,
        "setup_seconds": t1 - t0,
        "feature_seconds": t3 - t2,
        "knn_seconds": t4 - t3,
        "linear_probe_seconds": t5 - t4,
        "random_init_knn_acc": knn,
        "random_init_lp_acc": probe,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 steps, an evaluation every 3 (< 1 min; no claim)")
    parser.add_argument("--shards", default=None, help="parent of the bundled sets (default runs/shards or built)")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/monitor.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    setup = dict(QUICK if args.quick else FULL)
    run = BenchRun("monitor", quick=args.quick)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        shards = bundled_shards(args.shards, tmp, present="mni152")
        parts = breakdown(shards)
        training = training_run(shards, setup, tmp)
    every = training["default_eval_every"]
    overhead = training["eval_seconds"] / (every * training["step_seconds"])
    ratios = {
        "overhead_at_default": overhead,
        "eval_over_step": training["eval_seconds"] / training["step_seconds"],
        "linear_probe_over_eval": parts["linear_probe_seconds"] / training["eval_seconds"],
    }
    run.target("overhead_at_default", overhead, "<=", TARGET)
    setup.update(preset="configs/pretrain/tiny_cpu.yaml", threads=torch.get_num_threads())
    setup["shards"] = args.shards or ("runs/shards" if shards == REPO / "runs" / "shards" else "built: tiny profile")
    result = run.finish({"setup": setup, "eval_set": parts, "training": training, "ratios": ratios}, args.out)
    print(json.dumps({"quick": args.quick, "ratios": ratios, "met": result["met"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
