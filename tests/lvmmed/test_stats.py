"""Seed-level statistics (``lvmmed.stats``) of the benchmark and ablation reports, checked against hand computations
and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from lvmmed import stats as st


def test_t_interval_matches_hand_computation():
    """The table's CI columns come from the per-seed numbers: compare with a hand-computed t interval."""
    # values 0.80, 0.90, 0.85: mean 0.85, s = 0.05, t_{0.975, 2} = 4.302653 -> half width 0.05 * 4.302653 / sqrt(3)
    summary = st.summarize([0.80, 0.90, 0.85])
    half = 4.302652729749464 * 0.05 / math.sqrt(3)
    assert summary.n == 3
    assert summary.mean == pytest.approx(0.85)
    assert summary.std == pytest.approx(0.05)
    assert summary.ci_low == pytest.approx(0.85 - half, abs=1e-9)
    assert summary.ci_high == pytest.approx(0.85 + half, abs=1e-9)


def test_single_seed_has_no_interval_and_empty_is_an_error():
    one = st.summarize([0.7])
    assert one.n == 1 and one.mean == 0.7 and math.isnan(one.std) and math.isnan(one.ci_low)
    with pytest.raises(ValueError):
        st.summarize([])


def test_bootstrap_interval_lies_within_the_data_range():
    summary = st.summarize([0.6, 0.7, 0.8, 0.9, 0.65], ci_method="bootstrap", n_boot=4000)
    assert 0.6 <= summary.ci_low < summary.mean < summary.ci_high <= 0.9


def test_paired_ttest_uses_per_seed_differences():
    a, b = [0.81, 0.86, 0.90], [0.70, 0.78, 0.80]
    diffs = [0.11, 0.08, 0.10]
    result = st.paired(a, b)
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    t_stat = mean / (sd / math.sqrt(3))
    # two-sided p of t with 2 df: 1 - t^2/(t^2+2) ... closed form for df=2: p = 1 - |t| / sqrt(t^2 + 2)
    p_hand = 1 - abs(t_stat) / math.sqrt(t_stat**2 + 2)
    assert result.n == 3
    assert result.mean_diff == pytest.approx(mean)
    assert result.p_value == pytest.approx(p_hand, rel=1e-6)
    half = 4.302652729749464 * sd / math.sqrt(3)
    assert (result.ci_low, result.ci_high) == pytest.approx((mean - half, mean + half))


def test_paired_permutation_is_exact_and_limited_by_seed_count():
    result = st.paired([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], test="permutation")
    assert result.p_value == pytest.approx(2 / 8)  # only the all-positive and all-negative flips are as extreme
    same = st.paired([0.5, 0.6], [0.5, 0.6])
    assert same.p_value == 1.0 and same.mean_diff == 0.0


def test_paired_rejects_misaligned_inputs():
    with pytest.raises(ValueError):
        st.paired([0.1, 0.2], [0.1])


def test_a_difference_identical_on_every_seed_is_not_a_seed_level_significance():
    # a deterministic probe on two fixed weight sources: the seeds are not replicates
    result = st.paired([0.55, 0.55, 0.55], [0.53, 0.53, 0.53])
    assert result.degenerate and result.p_value is None
    assert result.mean_diff == pytest.approx(0.02)


def test_mean_std_t_interval_and_paired_tests():
    assert st.mean_std([0.5]) == (0.5, 0.0)
    mean, std = st.mean_std([0.7, 0.8, 0.9, float("nan")])
    assert mean == pytest.approx(0.8) and std == pytest.approx(0.1)
    lo, _ = st.t_interval([0.7, 0.8, 0.9])
    assert lo == pytest.approx(0.8 - sps.t.ppf(0.975, 2) * 0.1 / np.sqrt(3))
    a, b = [0.81, 0.83, 0.80, 0.85, 0.84], [0.78, 0.80, 0.79, 0.80, 0.81]
    assert st.paired_test(a, b, "ttest")["p_value"] == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert st.paired_test(a, b, "wilcoxon")["p_value"] == pytest.approx(sps.wilcoxon(a, b).pvalue)
    perm = st.paired_test(a, b, "permutation")
    assert perm["p_value"] == pytest.approx(2 / 32)  # all 5 differences positive: only ± all-flips as extreme
    assert st.paired_test(a, a)["p_value"] == 1.0
    with pytest.raises(ValueError):
        st.paired_test([1.0], [2.0])
