"""The power note: minimal detectable differences over seeds and the binomial resolution of a test set."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats as sps

from downstream.benchmark.power import (
    binomial_resolution,
    min_detectable_difference,
    power_rows,
    power_section,
    t_test_power,
)


@pytest.mark.parametrize(("n", "effect"), [(64, 0.50), (26, 0.80), (393, 0.20)])
def test_mdd_matches_cohens_sample_size_table(n, effect):
    """Cohen (1988), two-sample t, α = 0.05 two-sided, power 0.8: n per group 393 / 64 / 26 for d = 0.2 / 0.5 / 0.8."""
    assert min_detectable_difference(1.0, n) == pytest.approx(effect, abs=0.01)
    assert min_detectable_difference(0.02, n) == pytest.approx(0.02 * min_detectable_difference(1.0, n))


def test_mdd_at_three_seeds_has_the_stated_power_in_simulation():
    """At n = 3 the MDD is 3.07 sd; two-sample t-tests on simulated seeds at that difference reject 80% of the time."""
    mdd = min_detectable_difference(1.0, 3)
    assert mdd == pytest.approx(3.07, abs=0.01)
    rng = np.random.default_rng(0)
    a, b = rng.normal(mdd, 1.0, (40000, 3)), rng.normal(0.0, 1.0, (40000, 3))
    rejected = sps.ttest_ind(a, b, axis=1).pvalue < 0.05
    assert rejected.mean() == pytest.approx(0.80, abs=0.01)
    assert t_test_power(mdd, 1.0, 3) == pytest.approx(0.80, abs=1e-6)
    assert min_detectable_difference(0.0, 3) == 0.0 and math.isnan(min_detectable_difference(1.0, 1))


def test_binomial_resolution_is_the_two_proportion_z_formula():
    assert binomial_resolution(0.5, 1000) == pytest.approx((1.959964 + 0.841621) * math.sqrt(0.5 / 1000), rel=1e-5)
    assert binomial_resolution(0.5, 4000) == pytest.approx(binomial_resolution(0.5, 1000) / 2)
    assert binomial_resolution(1.0, 100) == 0.0 and math.isnan(binomial_resolution(0.5, 0))


def _agg():
    weights = [SimpleNamespace(name="random", source="random"), SimpleNamespace(name="ours", source="/x/export")]
    values = {
        ("t", "full", "linear", "random"): {0: 0.50, 1: 0.52, 2: 0.54},
        ("t", "full", "linear", "ours"): {0: 0.60, 1: 0.61, 2: 0.62},
        ("t", "5shot", "linear", "random"): {0: 0.3, 1: 0.4},
    }
    return SimpleNamespace(cfg=SimpleNamespace(weights=weights), values=values, sweeps={}, metric=lambda t: "accuracy")


def test_power_rows_and_section_come_from_the_random_init_cells():
    records = [{"status": "ok", "cell": {"task": "t", "method": "linear", "weights": "random", "setting": "full"},
                "result": {"n_test": 800}}]  # fmt: skip
    rows = power_rows(_agg(), records)
    assert len(rows) == 1  # only the full setting of the random-init source
    row = rows[0]
    assert row["seeds"] == 3 and row["mean"] == pytest.approx(0.52) and row["sd"] == pytest.approx(0.02)
    assert row["mdd"] == pytest.approx(0.02 * 3.0709, rel=1e-3)
    assert row["n_test"] == 800 and row["test_resolution"] == pytest.approx(binomial_resolution(0.52, 800))
    text = "\n".join(power_section(_agg(), records))
    assert "| t | linear | accuracy | 3 | 0.520 ± 0.020 | 0.061 | 800 | 0.070 |" in text
    no_random = SimpleNamespace(**{**vars(_agg()), "cfg": SimpleNamespace(weights=_agg().cfg.weights[1:])})
    assert power_section(no_random, records) == []
