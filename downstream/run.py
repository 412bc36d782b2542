"""``run_experiment(cfg)``: one downstream cell (task, method, weights, seed[, shot | fraction]) end to end.

Steps: load the task arrays → split (index file ``splits.json``) → build the backbone
(``lvmmed.create_backbone(backbone, in_chans, pretrained=weights, img_size)``) and the method → fit:

* ``fit_mode == "features"`` (linear probe, logistic regression): features cached once, C swept on val;
* otherwise, with ``tuning.enabled`` (default), the per-method search of :mod:`downstream.tuning` (grid chosen on
  val, early stopping, the initial state kept as a candidate); without it, the fixed lr × wd grid
  (``optim.lr_scale_grid`` × ``optim.wd_grid``): every cell trains a fresh copy of the method on train and is
  scored on val (``optim.select_metric``); the best cell is kept (or retrained on train+val with
  ``optim.refit_on_trainval``). Methods with ``init_head_from_probe`` get the logistic-regression probe as their
  initial head first (MoVL ``init=lp``);

→ test metrics with 95% bootstrap CIs (and the OOD set's when the task has one) → ``result.json``,
``result.csv`` (one flat row), ``config.yaml``, ``splits.json`` and the trainable delta ``delta.safetensors`` +
``delta.json`` (method key, weight reference, backbone) in ``output_dir``.

Failures are recorded, not raised: the result has ``status="failed"`` and ``error`` (``python -m downstream`` exits
non-zero); a benchmark matrix therefore keeps going when one cell cannot run (e.g. VPT on a ResNet).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from downstream import splits as splits_mod
from downstream.config import DownstreamConfig
from downstream.contract import Method
from downstream.features import frozen_features
from downstream.methods.linear import fit_logistic_probe
from downstream.metrics import METRIC_NAMES, classification_metrics
from downstream.registry import build_method
from downstream.runtime import recorded_run, resolve_device, seed_everything
from downstream.stats import bootstrap_ci
from downstream.tasks import TASKS, TaskData, load_task
from downstream.train_loop import predict_probs, train_method
from downstream.tuning import tune
from lvmmed.data.channels import match_channels

log = logging.getLogger(__name__)


def prepare_inputs(images: np.ndarray, cfg: DownstreamConfig, device: torch.device) -> torch.Tensor:
    """[0, 1] (N, C, h, w) arrays → normalised (N, in_chans, img_size, img_size) float tensors on ``device``."""
    x = torch.as_tensor(np.ascontiguousarray(images), dtype=torch.float32)
    if x.shape[-1] != cfg.img_size or x.shape[-2] != cfg.img_size:
        x = F.interpolate(x, size=(cfg.img_size, cfg.img_size), mode="bilinear", align_corners=False)
    x = match_channels(x, cfg.in_chans)
    return ((x - cfg.norm_mean) / cfg.norm_std).to(device)


def build_for(cfg: DownstreamConfig, num_classes: int) -> Method:
    """Backbone from the weight source + method, as the registry builds it."""
    from lvmmed import create_backbone

    weights = None if cfg.weights in ("", "random", "none") else cfg.weights
    backbone = create_backbone(cfg.backbone, in_chans=cfg.in_chans, pretrained=weights, img_size=cfg.img_size)
    return build_method(cfg.method, backbone, num_classes, cfg)


def _score(y: np.ndarray, probs: np.ndarray, metric: str) -> float:
    value = classification_metrics(y, probs, with_confusion=False)[metric]
    return -1.0 if np.isnan(value) else float(value)


def _with_optim(cfg: DownstreamConfig, lr_scale: float, wd: float) -> DownstreamConfig:
    return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr_scale=lr_scale, weight_decay=wd))


def _fit(method: Method, cfg: DownstreamConfig, xs: dict[str, torch.Tensor], ys: dict[str, torch.Tensor],
         out: dict[str, Any]) -> Method:  # fmt: skip
    """Fits ``method`` (probe or grid search); fills ``out`` with the selection record; returns the chosen model."""
    metric = cfg.optim.select_metric
    y_np = {k: v.cpu().numpy() for k, v in ys.items()}
    if method.fit_mode == "features" or method.init_head_from_probe:
        t = time.perf_counter()
        feats = {k: frozen_features(method, xs[k], cfg.optim.eval_batch_size) for k in ("train", "val")}
        out["feature_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        fit_x, fit_y = feats["train"], y_np["train"]
        if method.fit_mode == "features" and cfg.optim.refit_on_trainval:
            probe0 = fit_logistic_probe(fit_x, fit_y, method.num_classes, feats["val"], y_np["val"],
                                        cfg.linear.c_grid, lambda y, p: _score(y, p, metric), cfg.linear.max_iter,
                                        cfg.linear.standardize)  # fmt: skip
            fit_x, fit_y = np.concatenate([fit_x, feats["val"]]), np.concatenate([fit_y, y_np["val"]])
            probe = fit_logistic_probe(
                fit_x,
                fit_y,
                method.num_classes,
                None,
                None,
                [probe0.c],
                max_iter=cfg.linear.max_iter,
                standardize=cfg.linear.standardize,
            )
            probe.val_scores = probe0.val_scores
        else:
            probe = fit_logistic_probe(fit_x, fit_y, method.num_classes, feats["val"], y_np["val"],
                                       cfg.linear.c_grid, lambda y, p: _score(y, p, metric), cfg.linear.max_iter,
                                       cfg.linear.standardize)  # fmt: skip
        method.load_probe(probe.weight, probe.bias)
        out["probe"] = {"C": probe.c, "val_scores": {str(k): v for k, v in probe.val_scores.items()}}
        out["probe_seconds"] = time.perf_counter() - t
        if method.fit_mode == "features":
            out["best_hparams"] = {"C": probe.c}
            out["train_seconds"] = out["feature_seconds"] + out["probe_seconds"]
            return method
    if cfg.tuning.enabled:  # per-method grid on val, early stopping, initial state kept (downstream.tuning)
        return tune(method, cfg, {k: xs[k] for k in ("train", "val")}, {k: ys[k] for k in ("train", "val")}, out)
    grid, best, best_score = [], None, -np.inf
    t0 = time.perf_counter()
    has_val = len(ys["val"]) > 0
    for lr_scale in cfg.optim.lr_scale_grid:
        for wd in cfg.optim.wd_grid:
            cell_cfg = _with_optim(cfg, float(lr_scale), float(wd))
            model = copy.deepcopy(method)
            info = train_method(model, xs["train"], ys["train"], cell_cfg, seed=cfg.seed, progress=cfg.progress,
                                desc=f"{cfg.method} lr×{lr_scale} wd={wd}")  # fmt: skip
            score = (_score(y_np["val"], predict_probs(model, xs["val"], cfg.optim.eval_batch_size), metric)
                     if has_val else float("nan"))  # fmt: skip
            grid.append({"lr_scale": float(lr_scale), "weight_decay": float(wd), f"val_{metric}": score,
                         "train_loss": info["final_loss"], "loss_terms": info["loss_terms"],
                         "steps": info["steps"], "seconds": info["seconds"]})  # fmt: skip
            if best is None or (has_val and score > best_score):
                best, best_score, best_hp = model, score, (float(lr_scale), float(wd))
    out["grid"] = grid
    out["best_hparams"] = {"lr_scale": best_hp[0], "weight_decay": best_hp[1]}
    if cfg.optim.refit_on_trainval and has_val:
        best = copy.deepcopy(method)
        x_all = torch.cat([xs["train"], xs["val"]])
        y_all = torch.cat([ys["train"], ys["val"]])
        train_method(best, x_all, y_all, _with_optim(cfg, *best_hp), seed=cfg.seed, progress=cfg.progress,
                     desc=f"{cfg.method} refit")  # fmt: skip
    out["train_seconds"] = time.perf_counter() - t0 + out.get("feature_seconds", 0.0) + out.get("probe_seconds", 0.0)
    return best


def evaluate_split(method: Method, x: torch.Tensor, y: np.ndarray, cfg: DownstreamConfig) -> dict[str, Any]:
    """Test metrics, confusion matrix and bootstrap 95% CIs of ``method`` on prepared inputs ``x``."""
    probs = predict_probs(method, x, cfg.optim.eval_batch_size)
    full = classification_metrics(y, probs)
    return {
        "n": len(y),
        "metrics": {k: full[k] for k in METRIC_NAMES},
        "confusion": full["confusion"],
        "ci95": bootstrap_ci(y, probs, n_boot=cfg.bootstrap, seed=cfg.seed),
    }


def save_delta(method: Method, cfg: DownstreamConfig, out_dir: Path) -> Path:
    """Writes the trainable delta (safetensors) + a JSON reference to the backbone weights, atomically."""
    from safetensors.torch import save_file

    path = out_dir / "delta.safetensors"
    tmp = out_dir / "delta.safetensors.tmp"
    save_file({k: v.contiguous() for k, v in method.delta_state_dict().items()}, str(tmp))
    tmp.replace(path)
    ref = {
        "method": cfg.method,
        "backbone": cfg.backbone,
        "weights": cfg.weights,
        "in_chans": cfg.in_chans,
        "img_size": cfg.img_size,
        "num_classes": method.num_classes,
        "init_seed": cfg.seed,
        "tensors": method.declared_names,
    }
    (out_dir / "delta.json").write_text(json.dumps(ref, indent=1))
    return path


def load_delta(out_dir: str | Path, cfg: DownstreamConfig | None = None) -> Method:
    """Rebuilds a trained method from ``output_dir`` (its config.yaml) and its delta checkpoint."""
    from safetensors.torch import load_file

    from lvmmed.config import load_config

    out_dir = Path(out_dir)
    cfg = cfg or load_config(DownstreamConfig, out_dir / "config.yaml")
    ref = json.loads((out_dir / "delta.json").read_text())
    seed_everything(cfg.seed)  # random-init weights (and random GMoE general streams) are rebuilt from the seed
    method = build_for(cfg, ref["num_classes"])
    method.load_delta_state_dict(load_file(str(out_dir / "delta.safetensors")))
    return method.eval()


def _flat_row(result: dict[str, Any]) -> dict[str, Any]:
    row = {k: result.get(k) for k in ("task", "method", "weights", "weights_name", "backbone", "seed", "shot",
                                      "fraction", "split_mode", "status", "n_train", "n_test", "seconds")}  # fmt: skip
    for k, v in (result.get("metrics") or {}).items():
        row[k] = v
        ci = (result.get("ci95") or {}).get(k)
        row[f"{k}_ci_low"], row[f"{k}_ci_high"] = (ci or [None, None])[:2]
    ood = result.get("ood") or {}
    for k, v in (ood.get("metrics") or {}).items():
        row[f"ood_{k}"] = v
    row.update({f"params_{k}": v for k, v in (result.get("params") or {}).items()})
    return row


def run_experiment(cfg: DownstreamConfig) -> dict[str, Any]:
    """Runs one cell and writes its outputs to ``cfg.output_dir``; returns the result dict.

    The dict is flat-ish: ``task, method, weights, weights_name, backbone, seed, shot, fraction, split_mode,
    split ("test"), n_train, n_val, n_test, num_classes, metrics {accuracy, balanced_accuracy, macro_f1, auroc},
    ci95 {metric: [low, high]}, confusion, val_metrics, best_hparams, grid, ood (None or {source, n, metrics, ci95,
    confusion}), params {trainable, total, trainable_pct, backbone, param_multiple}, seconds, train_seconds,
    status ("ok" | "failed"), error, output_dir``.
    """
    header = {
        "task": cfg.task, "method": cfg.method, "weights": cfg.weights, "weights_name": cfg.weights_name or cfg.weights,
        "backbone": cfg.backbone, "seed": cfg.seed, "shot": cfg.shot, "fraction": cfg.fraction,
        "split_mode": cfg.split_mode, "split": "test",
    }  # fmt: skip
    return recorded_run(cfg, header, _run, _flat_row)


def _run(cfg: DownstreamConfig, out_dir: Path) -> dict[str, Any]:
    seed_everything(cfg.seed)
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads()))))
    data: TaskData = load_task(cfg.task, cfg.data_root, cfg.patch_size, cfg.patch_stride, cfg.max_per_class)
    idx = splits_mod.make_splits(data.labels, data.groups, data.splits, cfg.split_mode, cfg.seed, cfg.val_frac,
                                 cfg.test_frac, cfg.shot, cfg.fraction)  # fmt: skip
    ood_data = data.ood
    ood_is_test = TASKS[cfg.task].ood_is_test
    if ood_is_test:
        idx["test"] = np.zeros(0, dtype=np.int64)  # the primary test set is the OOD source
    info = {"task": cfg.task, "source": data.source, "mode": cfg.split_mode, "seed": cfg.seed, "shot": cfg.shot,
            "fraction": cfg.fraction}  # fmt: skip
    splits_mod.save_splits(out_dir / "splits.json", idx, info)
    device = resolve_device(cfg.device)
    xs = {k: prepare_inputs(data.images[v], cfg, device) for k, v in idx.items()}
    ys = {k: torch.as_tensor(data.labels[v], device=device) for k, v in idx.items()}
    seed_everything(cfg.seed)
    method = build_for(cfg, data.num_classes).to(device)
    record: dict[str, Any] = {}
    best = _fit(method, cfg, xs, ys, record)
    out: dict[str, Any] = {
        "n_train": len(idx["train"]), "n_val": len(idx["val"]), "n_test": len(idx["test"]),
        "num_classes": data.num_classes, "class_names": data.class_names, "source": data.source,
        "params": best.parameter_report(), **record,
    }  # fmt: skip
    if len(idx["val"]):
        val_probs = predict_probs(best, xs["val"], cfg.optim.eval_batch_size)
        out["val_metrics"] = classification_metrics(ys["val"].cpu().numpy(), val_probs, with_confusion=False)
    ood_eval = None
    if ood_data is not None:
        x_ood = prepare_inputs(ood_data.images, cfg, device)
        ood_eval = {"source": ood_data.source, **evaluate_split(best, x_ood, ood_data.labels, cfg)}
    if ood_is_test:
        if ood_eval is None:
            raise RuntimeError(f"task {cfg.task} needs its OOD shard set")
        out.update({k: ood_eval[k] for k in ("metrics", "ci95", "confusion")})
        out["n_test"], out["split"], out["test_source"] = ood_eval["n"], "ood", ood_eval["source"]
        out["ood"] = None
    else:
        test = evaluate_split(best, xs["test"], data.labels[idx["test"]], cfg)
        out.update({k: test[k] for k in ("metrics", "ci95", "confusion")})
        out["test_source"] = data.source
        out["ood"] = ood_eval
    if cfg.save_delta:
        save_delta(best, cfg, out_dir)
    return out
