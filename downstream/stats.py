"""Bootstrap statistics over *test samples* of one downstream run (seed-level statistics: :mod:`lvmmed.stats`).

* :func:`bootstrap_ci`: percentile 95% CI of every metric, resampling test samples with replacement (B = 1000 by
  default; seeded, so CIs are reproducible). Resamples where a metric is undefined (e.g. AUROC without both classes)
  are skipped for that metric.
* :func:`paired_bootstrap`: CI and two-sided p-value of the metric difference of two prediction sets on the same
  test samples.
* :func:`bootstrap_mean_ci`: percentile CI of a mean over units (segmentation: one Dice per subject).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from downstream.metrics import METRIC_NAMES, classification_metrics


def bootstrap_ci(
    y_true: np.ndarray,
    probs: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    metric_fn: Callable[[np.ndarray, np.ndarray], dict] | None = None,
) -> dict[str, list[float]]:
    """Percentile CIs ``{metric: [low, high]}`` over bootstrap resamples of the test samples."""
    fn = metric_fn or (lambda y, p: classification_metrics(y, p, with_confusion=False))
    y_true, probs = np.asarray(y_true), np.asarray(probs)
    if n_boot <= 0 or len(y_true) == 0:
        return {}
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(n_boot):
        idx = rng.integers(0, len(y_true), len(y_true))
        for k, v in fn(y_true[idx], probs[idx]).items():
            if isinstance(v, float) and not np.isnan(v):
                draws.setdefault(k, []).append(v)
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    return {k: [float(np.percentile(v, lo)), float(np.percentile(v, hi))] for k, v in draws.items() if v}


def bootstrap_mean_ci(values: Sequence[float], n_boot: int, seed: int, level: float = 0.95) -> list[float] | None:
    """Percentile CI of the mean of ``values`` (one per resampled unit, e.g. per subject) via :func:`bootstrap_ci`.

    Non-finite values are dropped; None when fewer than 2 values remain or ``n_boot`` is 0.
    """
    vals = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if n_boot <= 0 or vals.size < 2:
        return None
    ci = bootstrap_ci(
        vals, vals, n_boot=n_boot, seed=seed, level=level, metric_fn=lambda y, _p: {"mean": float(np.mean(y))}
    )
    return ci.get("mean")


def paired_bootstrap(
    y_true: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray, metric: str = "accuracy",
    n_boot: int = 1000, seed: int = 0, level: float = 0.95,
) -> dict[str, float]:  # fmt: skip
    """Bootstrap of metric(a) − metric(b) on the same resampled test samples: diff, CI and two-sided p."""
    if metric not in METRIC_NAMES:
        raise ValueError(f"metric must be one of {METRIC_NAMES}")
    rng = np.random.default_rng(seed)

    def m(y: np.ndarray, p: np.ndarray) -> float:
        return classification_metrics(y, p, with_confusion=False)[metric]

    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y_true), len(y_true))
        diffs.append(m(y_true[idx], probs_a[idx]) - m(y_true[idx], probs_b[idx]))
    arr = np.asarray([d for d in diffs if not np.isnan(d)])
    observed = m(y_true, probs_a) - m(y_true, probs_b)
    p = 2 * min((arr <= 0).mean(), (arr >= 0).mean()) if arr.size else float("nan")
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    return {"diff": float(observed), "ci_low": float(np.percentile(arr, lo)), "ci_high": float(np.percentile(arr, hi)),
            "p_value": float(min(p, 1.0))}  # fmt: skip
