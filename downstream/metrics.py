"""Classification metrics in numpy: accuracy, balanced accuracy, macro-F1, macro one-vs-rest AUROC, confusion.

Written in numpy (not by calling sklearn per metric) so that bootstrap CIs over thousands of resamples stay cheap;
``tests/downstream/test_metrics.py`` checks every value against sklearn. Conventions (sklearn's):

* balanced accuracy: mean recall over the classes present in ``y_true``;
* macro-F1: mean F1 over the classes present in ``y_true`` or ``y_pred`` (F1 = 0 when undefined);
* AUROC: macro average of one-vs-rest AUROCs (Mann–Whitney U with average ranks for ties) over the classes that
  have both positives and negatives in ``y_true``; NaN when none has. Binary tasks give the usual AUROC.
* multi-label (``y_true`` of shape (N, C) in {0, 1}, scores = sigmoid probabilities): per-label AUROC and its macro
  mean, per-label F1 at 0.5, subset accuracy.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

METRIC_NAMES = ("accuracy", "balanced_accuracy", "macro_f1", "auroc")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, C) logits (max-subtracted, so large logits do not overflow)."""
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted class."""
    flat = np.asarray(y_true, np.int64) * num_classes + np.asarray(y_pred, np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def binary_auroc(positive: np.ndarray, scores: np.ndarray) -> float:
    """AUROC of ``scores`` for boolean ``positive`` (NaN without both classes)."""
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def macro_auroc(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Macro one-vs-rest AUROC over the classes with positives and negatives (binary: AUROC of class 1)."""
    if probs.shape[1] == 2:
        return binary_auroc(y_true == 1, probs[:, 1])
    values = [binary_auroc(y_true == c, probs[:, c]) for c in range(probs.shape[1])]
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def from_confusion(cm: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro-F1 from a confusion matrix."""
    tp = np.diag(cm).astype(np.float64)
    true_n, pred_n = cm.sum(1).astype(np.float64), cm.sum(0).astype(np.float64)
    total = cm.sum()
    present = true_n > 0
    recall = np.divide(tp, true_n, out=np.zeros_like(tp), where=true_n > 0)
    precision = np.divide(tp, pred_n, out=np.zeros_like(tp), where=pred_n > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    used = present | (pred_n > 0)
    return {
        "accuracy": float(tp.sum() / total) if total else float("nan"),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else float("nan"),
        "macro_f1": float(f1[used].mean()) if used.any() else float("nan"),
    }


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, with_confusion: bool = True) -> dict:
    """All metrics of single-label predictions.

    Args:
        y_true: (N,) integer labels.
        probs: (N, C) class probabilities (argmax = prediction).
        with_confusion: Add ``confusion`` (nested lists).
    """
    y_true = np.asarray(y_true, np.int64)
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or len(probs) != len(y_true):
        raise ValueError(f"probs must be (N, C) with N={len(y_true)}, got {probs.shape}")
    cm = confusion(y_true, probs.argmax(1), probs.shape[1])
    out: dict = from_confusion(cm)
    out["auroc"] = macro_auroc(y_true, probs)
    if with_confusion:
        out["confusion"] = cm.tolist()
    return out


def multilabel_metrics(y_true: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict:
    """Per-label AUROC and F1, their macro means, and subset accuracy for (N, C) binary targets."""
    y_true = np.asarray(y_true).astype(bool)
    pred = np.asarray(probs) >= threshold
    aurocs = [binary_auroc(y_true[:, c], probs[:, c]) for c in range(y_true.shape[1])]
    f1s = []
    for c in range(y_true.shape[1]):
        tp = float((pred[:, c] & y_true[:, c]).sum())
        denom = float(pred[:, c].sum() + y_true[:, c].sum())
        f1s.append(2 * tp / denom if denom else 0.0)
    valid = [a for a in aurocs if not np.isnan(a)]
    return {
        "accuracy": float((pred == y_true).all(1).mean()),
        "macro_f1": float(np.mean(f1s)),
        "auroc": float(np.mean(valid)) if valid else float("nan"),
        "auroc_per_label": aurocs,
        "f1_per_label": f1s,
    }
