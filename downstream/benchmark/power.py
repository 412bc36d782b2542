"""The power note of a benchmark report: how large a difference each task × method can resolve.

Two limits, both computed from the run itself:

* **Over seeds.** The spread of random init (sample sd over its seeds) and the *minimal detectable difference*
  (MDD): the smallest true difference in mean that a two-sided two-sample t-test at ``alpha`` detects with
  probability ``power``, with ``n`` seeds per arm and that sd in both. Exact: the non-central t distribution
  (``scipy.stats.nct``) with ``2n − 2`` degrees of freedom and non-centrality ``Δ / (sd·√(2/n))``, solved for Δ.
  The report's verdicts use a *paired* test over the same seeds, whose sd is that of the per-seed differences; the
  two-sample MDD is the plan-ahead number (it needs only the random-init spread) and is conservative when a
  seed's split and init are shared by both arms.
* **Over test samples.** The smallest difference between two accuracies ``p`` measured on ``n_test`` independent
  samples that a two-proportion z-test at ``alpha`` detects with probability ``power``:
  ``(z_{1−α/2} + z_{power})·√(2p(1−p)/n_test)``. Both arms share one test set in a benchmark, so a paired
  (McNemar) comparison can resolve less; this is the plain binomial scale of the test set.

A task can tell two weight sources apart only when their difference exceeds both numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import optimize
from scipy import stats as sps

from lvmmed import stats as st

ACCURACY_METRICS = ("accuracy", "balanced_accuracy")


def t_test_power(diff: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided two-sample t-test (``n`` per arm, common ``sd``) against a true difference ``diff``."""
    df = 2 * n - 2
    crit = sps.t.ppf(1.0 - alpha / 2.0, df)
    ncp = diff / (sd * math.sqrt(2.0 / n))
    upper, lower = sps.nct.sf(crit, df, ncp), sps.nct.cdf(-crit, df, ncp)
    # scipy returns NaN for tail probabilities far below 1e-300 (large non-centrality): they are 0 / 1.
    upper = 1.0 if np.isnan(upper) else float(upper)
    return upper + (0.0 if np.isnan(lower) else float(lower))


def min_detectable_difference(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true difference the two-sample t-test detects with ``power`` (module docstring).

    Returns:
        The MDD in the metric's units; 0 when ``sd`` is 0 (no seed variance), NaN for fewer than 2 seeds.
    """
    if n < 2 or not math.isfinite(sd):
        return float("nan")
    if sd <= 0:
        return 0.0
    high = 1.0
    while t_test_power(high, 1.0, n, alpha) < power:  # bracket the root (power grows with the difference)
        high *= 2.0
    effect = optimize.brentq(lambda d: t_test_power(d, 1.0, n, alpha) - power, 1e-9, high, xtol=1e-10)
    return float(effect * sd)


def binomial_resolution(p: float, n_test: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest difference between two accuracies near ``p`` on ``n_test`` samples each, detectable with ``power``."""
    if n_test < 1 or not 0.0 <= p <= 1.0:
        return float("nan")
    z = sps.norm.ppf(1.0 - alpha / 2.0) + sps.norm.ppf(power)
    return float(z * math.sqrt(2.0 * p * (1.0 - p) / n_test))


def _n_test(records: Sequence[dict], task: str, method: str, weights: str) -> int | None:
    sizes = {
        int((r.get("result") or {}).get("n_test") or 0)
        for r in records
        if r.get("status") == "ok"
        and r["cell"].get("setting", "full") == "full"
        and (r["cell"].get("task"), r["cell"].get("method"), r["cell"].get("weights")) == (task, method, weights)
    }
    return max(sizes) if sizes else None


def power_rows(agg, records: Sequence[dict], alpha: float = 0.05, power: float = 0.8) -> list[dict]:
    """One row per task × method with a random-init column: its seeds, mean, sd, MDD, n_test and resolution."""
    randoms = [w.name for w in agg.cfg.weights if w.source in ("random", "none", "")]
    rows = []
    for key, per_seed in sorted(agg.values.items()):
        task, setting, method, weights = key
        if setting != "full" or weights not in randoms or not per_seed or key in agg.sweeps:
            continue
        values = [per_seed[s] for s in sorted(per_seed)]
        mean, sd = st.mean_std(values)
        metric = agg.metric(task)
        n_test = _n_test(records, task, method, weights)
        resolution = binomial_resolution(mean, n_test, alpha, power) if metric in ACCURACY_METRICS and n_test else None
        rows.append({
            "task": task, "method": method, "weights": weights, "metric": metric, "seeds": len(values),
            "mean": mean, "sd": sd, "mdd": min_detectable_difference(sd, len(values), alpha, power),
            "n_test": n_test, "test_resolution": resolution,
        })  # fmt: skip
    return rows


def _num(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"


def power_section(agg, records: Sequence[dict], alpha: float = 0.05, power: float = 0.8) -> list[str]:
    """The report's "What can this benchmark resolve?" section (empty without a random-init column)."""
    rows = power_rows(agg, records, alpha, power)
    if not rows:
        return []
    lines = [
        "## What can this benchmark resolve? (power note)",
        "",
        f"Per task × method: the spread of random init over its seeds, the minimal detectable difference (MDD) of a "
        f"two-sample t-test over that many seeds (α = {alpha}, power {power}, exact non-central t, from the measured "
        f"sd), and the binomial resolution of the test set (two-proportion z-test at the random-init accuracy, same "
        "α and power). A difference between weight sources is resolvable only above both.",
        "",
        "| task | method | metric | random init: seeds | mean ± sd | MDD over seeds | n_test | test-set resolution |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['task']} | {row['method']} | {row['metric']} | {row['seeds']} | {row['mean']:.3f} ± "
            f"{_num(row['sd'])} | {_num(row['mdd'])} | {row['n_test'] or 'n/a'} | {_num(row['test_resolution'])} |"
        )
    lines.append("")
    return lines
