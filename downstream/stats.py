"""Statistics for downstream results: mean ± std over seeds, bootstrap CIs over test samples, paired tests.

* :func:`mean_std`: sample std (ddof=1) over seeds; one seed gives std 0.
* :func:`bootstrap_ci`: percentile 95% CI of every metric, resampling test samples with replacement (B = 1000 by
  default; seeded, so CIs are reproducible). Resamples where a metric is undefined (e.g. AUROC without both classes)
  are skipped for that metric.
* :func:`t_interval`: Student-t CI of a mean over seeds.
* :func:`paired_test`: compares two methods on the same seeds/splits: paired t-test, Wilcoxon signed-rank, or an
  exact sign-flip permutation test (all two-sided).
* :func:`paired_bootstrap`: CI and two-sided p-value of the metric difference of two prediction sets on the same
  test samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import product

import numpy as np
from scipy import stats as sps

from downstream.metrics import METRIC_NAMES, classification_metrics


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample std) ignoring NaNs; std is 0 for a single value."""
    arr = np.asarray([v for v in values if v is not None and not np.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean (degenerate at one value)."""
    mean, std = mean_std(values)
    n = sum(1 for v in values if v is not None and not np.isnan(v))
    if n < 2:
        return mean, mean
    half = sps.t.ppf(0.5 + level / 2, n - 1) * std / np.sqrt(n)
    return float(mean - half), float(mean + half)


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


def paired_test(a: Sequence[float], b: Sequence[float], method: str = "ttest") -> dict[str, float]:
    """Two-sided paired test of a vs b (same seeds/splits): ``ttest``, ``wilcoxon`` or ``permutation``.

    Returns:
        ``{"mean_diff", "statistic", "p_value", "n"}`` (p = 1 when all differences are zero).
    """
    a_arr, b_arr = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a_arr.shape != b_arr.shape or a_arr.size < 2:
        raise ValueError("paired_test needs two equally long sequences of at least 2 values")
    d = a_arr - b_arr
    out = {"mean_diff": float(d.mean()), "n": int(d.size)}
    if np.allclose(d, 0):
        return {**out, "statistic": 0.0, "p_value": 1.0}
    if method == "ttest":
        res = sps.ttest_rel(a_arr, b_arr)
        return {**out, "statistic": float(res.statistic), "p_value": float(res.pvalue)}
    if method == "wilcoxon":
        res = sps.wilcoxon(a_arr, b_arr)
        return {**out, "statistic": float(res.statistic), "p_value": float(res.pvalue)}
    if method == "permutation":
        if d.size > 16:
            raise ValueError("exact permutation test is limited to 16 pairs")
        observed = abs(d.mean())
        flips = np.array(list(product([1.0, -1.0], repeat=d.size)))
        null = np.abs((flips * d).mean(1))
        return {**out, "statistic": float(d.mean()), "p_value": float((null >= observed - 1e-12).mean())}
    raise ValueError(f"unknown paired test {method!r}")


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
