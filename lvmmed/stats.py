"""Seed-level statistics shared by the stages: mean ± std over seeds, the Student-t interval, one paired test.

A result that is quoted is a handful of per-seed numbers (3-5 pretraining or evaluation seeds); both the
pretraining ablation report (``pretrain.ablation_report``) and the downstream benchmark report
(``downstream.benchmark``) summarise and compare them with the functions here, so that the two reports cannot
disagree about what a confidence interval or a p-value is.

* :func:`mean_std`: mean and sample std (ddof=1) ignoring NaNs; one value gives std 0.
* :func:`t_interval`: Student-t interval of a mean, mean ± t_{(1+level)/2, n-1}·s/√n.
* :func:`paired_test`: two-sided paired test of two aligned samples: paired t-test (``scipy.stats.ttest_rel``),
  Wilcoxon signed-rank (``scipy.stats.wilcoxon``) or an exact sign-flip permutation test.
* :func:`summarize`: mean, sample std and the 95% CI of the mean of per-seed values, either Student-t (default,
  honest at n = 3) or a percentile bootstrap over seeds (offered for larger seed counts; it under-covers at n = 3).
* :func:`paired`: the mean per-seed difference a − b with its t-interval and the p-value of :func:`paired_test`.
  The sign-flip test's smallest p is 2/2^n (0.25 at 3 seeds).

Bootstrap intervals over *test samples* depend on the task's metrics and live with them
(``downstream.stats``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np
from scipy import stats as sps

PAIRED_TESTS = ("ttest", "wilcoxon", "permutation")
"""The ``method`` names :func:`paired_test` (and :func:`paired`) accept."""
CI_METHODS = ("t", "bootstrap")
"""The ``ci_method`` names :func:`summarize` accepts."""


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample std) ignoring NaNs; std is 0 for a single value, both NaN for none."""
    arr = np.asarray([v for v in values if v is not None and not np.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """(low, high) Student-t interval of the mean of the non-NaN values (degenerate ``(mean, mean)`` below 2)."""
    mean, std = mean_std(values)
    n = sum(1 for v in values if v is not None and not np.isnan(v))
    if n < 2:
        return mean, mean
    half = sps.t.ppf(0.5 + level / 2, n - 1) * std / np.sqrt(n)
    return float(mean - half), float(mean + half)


def paired_test(a: Sequence[float], b: Sequence[float], method: str = "ttest") -> dict[str, float]:
    """Two-sided paired test of a vs b (same seeds/splits): ``ttest``, ``wilcoxon`` or ``permutation``.

    Returns:
        ``{"mean_diff", "statistic", "p_value", "n"}`` (p = 1 when all differences are zero, up to
        ``numpy.allclose``).

    Raises:
        ValueError: unequal lengths, fewer than 2 pairs, an unknown method, or more than 16 pairs for the exact
            permutation test.
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


@dataclass(frozen=True)
class SeedSummary:
    """Mean ± std over seeds and the 95% CI of the mean (NaN std and bounds for a single seed)."""

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

    Raises:
        ValueError: no values, or an unknown ``ci_method``.
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
    """Paired comparison of a and b (same seeds, same order) via :func:`paired_test`.

    Args:
        a: Per-seed values of the first column.
        b: Per-seed values of the second column, aligned with ``a``.
        test: ``ttest``, ``wilcoxon`` or ``permutation``.

    Returns:
        The mean difference, its 95% t-interval and the two-sided p-value (None when n < 2 or degenerate; 1.0
        when every difference is zero).

    Raises:
        ValueError: ``a`` and ``b`` differ in shape.
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
