"""Seed-level statistics of a benchmark table cell, built on :mod:`downstream.stats`.

A table cell holds a handful of per-seed numbers (3-5). This module only packages the seed-level tools of
:mod:`downstream.stats` (``mean_std``, ``t_interval``, ``paired_test``) into the two summaries the report needs;
the test-sample bootstrap of a single run stays in ``downstream.stats`` and is reported per run.

* :func:`summarize`: mean, sample std (ddof=1) and the 95% CI of the mean, either Student-t
  (mean ± t_{0.975,n-1}·s/√n; default, honest at n = 3) or a percentile bootstrap over seeds (offered for larger
  seed counts; it under-covers at n = 3).
* :func:`paired`: the mean per-seed difference a − b with its t-interval and the two-sided p-value of a paired
  t-test, Wilcoxon signed-rank or exact sign-flip test. The sign-flip test's smallest p is 2/2^n (0.25 at 3 seeds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from downstream import stats


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
    mean, std = stats.mean_std(x)
    if x.size < 2:
        return SeedSummary(1, mean, math.nan, math.nan, math.nan)
    if ci_method == "t":
        low, high = stats.t_interval(x)
    elif ci_method == "bootstrap":
        rng = np.random.default_rng(seed)
        means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
        low, high = (float(v) for v in np.percentile(means, [2.5, 97.5]))
    else:
        raise ValueError(f"ci_method must be 't' or 'bootstrap', got {ci_method!r}")
    return SeedSummary(int(x.size), mean, std, float(low), float(high))


def paired(a: Sequence[float], b: Sequence[float], test: str = "ttest") -> PairedResult:
    """Paired comparison of a and b (same seeds, same order) via :func:`downstream.stats.paired_test`.

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
    low, high = stats.t_interval(d)
    if np.ptp(d) == 0 and d[0] != 0:
        return PairedResult(int(d.size), float(d.mean()), float(low), float(high), None, degenerate=True)
    p = stats.paired_test(x, y, method=test)["p_value"]
    return PairedResult(int(d.size), float(d.mean()), float(low), float(high), float(p) if math.isfinite(p) else 1.0)
