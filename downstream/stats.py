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
* :func:`bootstrap_mean_ci`: percentile CI of a mean over units (segmentation: one Dice per subject).

Seed-level summaries of a benchmark table cell (3-5 per-seed numbers):

* :func:`summarize`: mean, sample std (ddof=1) and the 95% CI of the mean, either Student-t
  (mean ± t_{0.975,n-1}·s/√n; default, honest at n = 3) or a percentile bootstrap over seeds (offered for larger
  seed counts; it under-covers at n = 3).
* :func:`paired`: the mean per-seed difference a − b with its t-interval and the two-sided p-value of a paired
  t-test, Wilcoxon signed-rank or exact sign-flip test. The sign-flip test's smallest p is 2/2^n (0.25 at 3 seeds).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class SeedSummary:
    """Mean ± std over seeds and the 95% CI of the mean (NaN bounds for a single seed)."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class PairedResult:
    """Paired difference a − b over shared seeds.

    ``p_value`` is None when there are fewer than 2 pairs, or when the difference is the same non-zero number on
    every seed (``degenerate``: both columns are deterministic given the split, e.g. a logistic-regression probe on
    two fixed weight sources, so the seeds are not replicates and a seed-level test says nothing).
    """

    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float | None
    degenerate: bool = False


def summarize(values: Sequence[float], ci_method: str = "t", n_boot: int = 2000, seed: int = 0) -> SeedSummary:
    """Mean, std (ddof=1) and 95% CI of the mean of per-seed values.

    Args:
        values: One number per seed.
        ci_method: ``t`` (Student-t interval) or ``bootstrap`` (percentile bootstrap over seeds).
        n_boot: Bootstrap resamples.
        seed: Bootstrap RNG seed (the report is deterministic).
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("summarize needs at least one value")
    mean, std = mean_std(x)
    if x.size < 2:
        return SeedSummary(1, mean, math.nan, math.nan, math.nan)
    if ci_method == "t":
        low, high = t_interval(x)
    elif ci_method == "bootstrap":
        rng = np.random.default_rng(seed)
        means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
        low, high = (float(v) for v in np.percentile(means, [2.5, 97.5]))
    else:
        raise ValueError(f"ci_method must be 't' or 'bootstrap', got {ci_method!r}")
    return SeedSummary(int(x.size), mean, std, float(low), float(high))


def paired(a: Sequence[float], b: Sequence[float], test: str = "ttest") -> PairedResult:
    """Paired comparison of a and b (same seeds, same order) via :func:`downstream.paired_test`.

    Args:
        a: Per-seed values of the first column.
        b: Per-seed values of the second column, aligned with ``a``.
        test: ``ttest``, ``wilcoxon`` or ``permutation``.

    Returns:
        The mean difference, its 95% t-interval and the two-sided p-value (None when n < 2 or degenerate; 1.0
        when every difference is zero).
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples must align, got {x.shape} and {y.shape}")
    d = x - y
    if d.size < 2:
        return PairedResult(int(d.size), float(d.mean()) if d.size else math.nan, math.nan, math.nan, None)
    low, high = t_interval(d)
    if np.ptp(d) == 0 and d[0] != 0:
        return PairedResult(int(d.size), float(d.mean()), float(low), float(high), None, degenerate=True)
    p = paired_test(x, y, method=test)["p_value"]
    return PairedResult(int(d.size), float(d.mean()), float(low), float(high), float(p) if math.isfinite(p) else 1.0)
