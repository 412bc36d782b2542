"""Multi-label tasks (``meta.labels`` multi-hot vectors): sigmoid scores, per-label probes, tuned thresholds, metrics.

* Training: the methods' task loss is BCE-with-logits when the target is a float matrix of the logits' shape
  (:func:`downstream.contract.cross_entropy_loss`), so every SGD method trains unchanged.
* Linear probe (``linear.solver=logreg``): one binary logistic regression per label on the cached features, each
  with its own C chosen on val by that label's AUROC (one-vs-rest, as in CheXpert/ChestX-ray14 linear probes).
* Scores: sigmoid of the logits. Thresholds: per label, the one maximising F1 on val (candidates: the val scores;
  0.5 when val has no positive), then applied to test.
* Metrics: per-label AUROC and F1, their macro means (AUROC over labels with both classes in the test set), and
  subset accuracy (every label right).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from downstream.contract import Method
from downstream.methods.linear import ProbeFit, fit_logistic_probe
from downstream.metrics import binary_auroc

MULTILABEL_METRICS = ("auroc", "macro_f1", "accuracy")


@torch.no_grad()
def predict_sigmoid(method: Method, x: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Sigmoid scores (N, C) in eval mode."""
    method.eval()
    out = [torch.sigmoid(Method.logits_of(method(x[i : i + batch_size])).float()).cpu()
           for i in range(0, len(x), batch_size)]  # fmt: skip
    return torch.cat(out).numpy() if out else np.zeros((0, method.num_classes))


def fit_multilabel_probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray | None, val_y: np.ndarray | None,
                         c_grid, max_iter: int = 1000, standardize: bool = True) -> ProbeFit:  # fmt: skip
    """One binary logistic-regression probe per label; returns the stacked (C, D) head on raw features.

    A label with a single class in train gets a constant logit (the log-odds of its train prevalence, clipped).
    """
    labels = train_y.shape[1]
    weight = np.zeros((labels, train_x.shape[1]), dtype=np.float32)
    bias = np.zeros(labels, dtype=np.float32)
    chosen: dict[float, float] = {}
    for c in range(labels):
        y = (train_y[:, c] > 0.5).astype(np.int64)
        if len(np.unique(y)) < 2:
            p = float(np.clip(y.mean(), 1e-3, 1 - 1e-3))
            bias[c] = np.log(p / (1 - p))
            continue
        yv = None if val_y is None else (val_y[:, c] > 0.5).astype(np.int64)
        fit = fit_logistic_probe(train_x, y, 2, val_x, yv, c_grid,
                                 lambda t, probs: _finite(binary_auroc(t.astype(bool), probs[:, 1])),
                                 max_iter, standardize)  # fmt: skip
        weight[c] = (fit.weight[1] - fit.weight[0]).numpy()
        bias[c] = float(fit.bias[1] - fit.bias[0])
        chosen[float(c)] = fit.c
    return ProbeFit(torch.from_numpy(weight), torch.from_numpy(bias), float(np.median(list(chosen.values()) or [1.0])),
                    {k: v for k, v in chosen.items()})  # fmt: skip


def _finite(value: float) -> float:
    return -1.0 if np.isnan(value) else float(value)


def tune_thresholds(y_val: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per-label threshold maximising F1 on val (0.5 for a label without val positives)."""
    out = np.full(scores.shape[1], 0.5)
    for c in range(scores.shape[1]):
        truth = y_val[:, c] > 0.5
        if not truth.any():
            continue
        best = -1.0
        for t in np.unique(scores[:, c]):
            f1 = _f1(truth, scores[:, c] >= t)
            if f1 > best:
                best, out[c] = f1, float(t)
    return out


def _f1(truth: np.ndarray, pred: np.ndarray) -> float:
    tp = float((truth & pred).sum())
    denom = float(truth.sum() + pred.sum())
    return 2 * tp / denom if denom else 0.0


def multilabel_report(y_true: np.ndarray, scores: np.ndarray, thresholds: np.ndarray | None = None,
                      names: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Per-label AUROC/F1 (F1 at ``thresholds``, default 0.5), their macro means, subset accuracy."""
    truth = np.asarray(y_true) > 0.5
    thresholds = np.full(truth.shape[1], 0.5) if thresholds is None else np.asarray(thresholds)
    pred = scores >= thresholds[None]
    names = names or [f"label_{i}" for i in range(truth.shape[1])]
    aurocs = [binary_auroc(truth[:, c], scores[:, c]) for c in range(truth.shape[1])]
    f1s = [_f1(truth[:, c], pred[:, c]) for c in range(truth.shape[1])]
    valid = [a for a in aurocs if not np.isnan(a)]
    return {
        "auroc": float(np.mean(valid)) if valid else float("nan"),
        "macro_f1": float(np.mean(f1s)),
        "accuracy": float((pred == truth).all(1).mean()) if len(truth) else float("nan"),
        "auroc_per_label": {n: float(a) for n, a in zip(names, aurocs)},
        "f1_per_label": {n: float(f) for n, f in zip(names, f1s)},
        "thresholds": {n: float(t) for n, t in zip(names, thresholds)},
    }


def scalar_metrics(y_true: np.ndarray, scores: np.ndarray, thresholds: np.ndarray) -> dict[str, float]:
    """The scalar metrics of :func:`multilabel_report` (for bootstrap CIs)."""
    report = multilabel_report(y_true, scores, thresholds)
    return {k: report[k] for k in MULTILABEL_METRICS}
