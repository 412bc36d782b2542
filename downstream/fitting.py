"""Fitting one method on a task's train split, with model selection on val.

* ``fit_mode == "features"`` (linear probe, logistic regression): features cached once, C swept on val (one
  binary probe per label for multi-label tasks); a method that declares ``fits_itself_on_features`` (``knn``)
  is handed the cached train features instead of a probe;
* otherwise, with ``tuning.enabled`` (default; single-label tasks), the per-method search of
  :mod:`downstream.tuning` (grid chosen on val, early stopping, the initial state kept as a candidate); without it,
  the fixed lr × wd grid (``optim.lr_scale_grid`` × ``optim.wd_grid``): every cell trains a fresh copy
  of the method on train and is scored on val (``optim.select_metric``); the best cell is kept (or retrained on
  train+val with ``optim.refit_on_trainval``). Methods with ``init_head_from_probe`` get the logistic-regression
  probe as their initial head first (MoVL ``init=lp``).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any

import numpy as np
import torch

from downstream.contract import Method
from downstream.features import frozen_features
from downstream.methods.linear import ProbeFit, fit_logistic_probe
from downstream.metrics import classification_metrics
from downstream.multilabel import fit_multilabel_probe, multilabel_report, predict_sigmoid
from downstream.train_loop import predict_probs, train_method
from downstream.tuning import tune


def score(y: np.ndarray, probs: np.ndarray, metric: str, multilabel: bool = False) -> float:
    """Validation score of ``metric`` (multi-label: ``auroc`` or ``macro_f1``; others fall back to ``auroc``)."""
    if multilabel:
        value = multilabel_report(y, probs)[metric if metric in ("auroc", "macro_f1") else "auroc"]
    else:
        value = classification_metrics(y, probs, with_confusion=False)[metric]
    return -1.0 if np.isnan(value) else float(value)


def predict(method: Method, x: torch.Tensor, cfg: Any, multilabel: bool = False) -> np.ndarray:
    """Softmax probabilities, or sigmoid scores for a multi-label task."""
    return (predict_sigmoid if multilabel else predict_probs)(method, x, cfg.optim.eval_batch_size)


def _probe(train_x, train_y, val_x, val_y, num_classes: int, c_grid, cfg: Any, multilabel: bool) -> ProbeFit:
    if multilabel:
        return fit_multilabel_probe(train_x, train_y, val_x, val_y, c_grid, cfg.linear.max_iter, cfg.linear.standardize)
    metric = cfg.optim.select_metric
    return fit_logistic_probe(train_x, train_y, num_classes, val_x, val_y, c_grid, lambda y, p: score(y, p, metric),
                              cfg.linear.max_iter, cfg.linear.standardize)  # fmt: skip


def with_optim(cfg: Any, lr_scale: float, wd: float) -> Any:
    """``cfg`` with one lr-scale × weight-decay cell of the grid."""
    return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr_scale=lr_scale, weight_decay=wd))


def fit_method(method: Method, cfg: Any, xs: dict[str, torch.Tensor], ys: dict[str, torch.Tensor],
               out: dict[str, Any], multilabel: bool = False) -> Method:  # fmt: skip
    """Fits ``method`` (probe or grid search); fills ``out`` with the selection record; returns the chosen model."""
    metric = cfg.optim.select_metric
    y_np = {k: v.cpu().numpy() for k, v in ys.items()}
    if method.fit_mode == "features" or method.init_head_from_probe:
        t = time.perf_counter()
        feats = {k: frozen_features(method, xs[k], cfg.optim.eval_batch_size) for k in ("train", "val")}
        out["feature_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        fit_x, fit_y = feats["train"], y_np["train"]
        if method.fits_itself_on_features and method.fit_mode == "features" and not multilabel:
            if cfg.optim.refit_on_trainval:
                fit_x, fit_y = np.concatenate([fit_x, feats["val"]]), np.concatenate([fit_y, y_np["val"]])
            out["best_hparams"] = method.fit_on_features(fit_x, fit_y)
            out["train_seconds"] = out["feature_seconds"] + time.perf_counter() - t
            return method
        probe = _probe(fit_x, fit_y, feats["val"], y_np["val"], method.num_classes, cfg.linear.c_grid, cfg, multilabel)
        if method.fit_mode == "features" and cfg.optim.refit_on_trainval:
            fit_x, fit_y = np.concatenate([fit_x, feats["val"]]), np.concatenate([fit_y, y_np["val"]])
            refit = _probe(fit_x, fit_y, None, None, method.num_classes, [probe.c], cfg, multilabel)
            refit.val_scores, probe = probe.val_scores, refit
        method.load_probe(probe.weight, probe.bias)
        out["probe"] = {"C": probe.c, "val_scores": {str(k): v for k, v in probe.val_scores.items()}}
        out["probe_seconds"] = time.perf_counter() - t
        if method.fit_mode == "features":
            out["best_hparams"] = {"C": probe.c}
            out["train_seconds"] = out["feature_seconds"] + out["probe_seconds"]
            return method
    if cfg.tuning.enabled and not multilabel:  # per-method grid on val, early stopping, initial state kept
        return tune(method, cfg, {k: xs[k] for k in ("train", "val")}, {k: ys[k] for k in ("train", "val")}, out)
    grid, best, best_score = [], None, -np.inf
    t0 = time.perf_counter()
    has_val = len(ys["val"]) > 0
    for lr_scale in cfg.optim.lr_scale_grid:
        for wd in cfg.optim.wd_grid:
            cell_cfg = with_optim(cfg, float(lr_scale), float(wd))
            model = copy.deepcopy(method)
            info = train_method(model, xs["train"], ys["train"], cell_cfg, seed=cfg.seed, progress=cfg.progress,
                                desc=f"{cfg.method} lr×{lr_scale} wd={wd}")  # fmt: skip
            value = (score(y_np["val"], predict(model, xs["val"], cfg, multilabel), metric, multilabel)
                     if has_val else float("nan"))  # fmt: skip
            grid.append({"lr_scale": float(lr_scale), "weight_decay": float(wd), f"val_{metric}": value,
                         "train_loss": info["final_loss"], "loss_terms": info["loss_terms"],
                         "steps": info["steps"], "seconds": info["seconds"]})  # fmt: skip
            if best is None or (has_val and value > best_score):
                best, best_score, best_hp = model, value, (float(lr_scale), float(wd))
    out["grid"] = grid
    out["best_hparams"] = {"lr_scale": best_hp[0], "weight_decay": best_hp[1]}
    if cfg.optim.refit_on_trainval and has_val:
        best = copy.deepcopy(method)
        x_all = torch.cat([xs["train"], xs["val"]])
        y_all = torch.cat([ys["train"], ys["val"]])
        train_method(best, x_all, y_all, with_optim(cfg, *best_hp), seed=cfg.seed, progress=cfg.progress,
                     desc=f"{cfg.method} refit")  # fmt: skip
    out["train_seconds"] = time.perf_counter() - t0 + out.get("feature_seconds", 0.0) + out.get("probe_seconds", 0.0)
    return best
