"""Report figures (matplotlib, Agg backend: no display needed).

* :func:`plot_weight_ablation`: grouped bars, one group per method, one bar per weight source, error bars = 95% CI
  over seeds, seed points overlaid (so 3 seeds are visibly 3 numbers).
* :func:`plot_scaling`: Med-VTAB's scaling law, metric against log10(#tunable parameters), one series per sweep
  (VPT tokens, adapter width), plus the fixed method columns as labelled points.
* :func:`plot_forgetting`: old-center vs new-center score of segmentation prompts (Saeed et al. 2023), before
  and after adapting to the new center, one arrow per method.

Every function takes plain data (already aggregated) and a path, and returns the written path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_weight_ablation(
    groups: Mapping[str, Mapping[str, Sequence[float]]],
    cis: Mapping[str, Mapping[str, tuple[float, float]]],
    path: Path,
    metric: str,
    title: str,
) -> Path:
    """Grouped bars: ``groups[method][weights] = per-seed values``; ``cis[method][weights] = (lo, hi)``."""
    methods = list(groups)
    sources: list[str] = []
    for per_method in groups.values():
        sources += [w for w in per_method if w not in sources]
    width = 0.8 / max(len(sources), 1)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.6 * len(methods) + 2.5), 3.6))
    colors = plt.get_cmap("tab10")
    for j, source in enumerate(sources):
        xs, means, lows, highs = [], [], [], []
        for i, method in enumerate(methods):
            values = groups[method].get(source)
            if not values:
                continue
            x = i + (j - (len(sources) - 1) / 2) * width
            mean = float(np.mean(values))
            lo, hi = cis[method][source]
            xs.append(x)
            means.append(mean)
            lows.append(mean - lo)
            highs.append(hi - mean)
            ax.scatter([x] * len(values), values, s=10, color="black", zorder=3)
        ax.bar(xs, means, width=width * 0.95, color=colors(j), label=source, alpha=0.85)
        ax.errorbar(xs, means, yerr=[lows, highs], fmt="none", ecolor="black", capsize=3, lw=1)
    ax.set_xticks(range(len(methods)), methods)
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def plot_scaling(
    series: Mapping[str, Sequence[tuple[float, float, float]]],
    points: Mapping[str, tuple[float, float]],
    path: Path,
    metric: str,
    title: str,
) -> Path:
    """``series[name] = [(trainable_params, mean, std), ...]``; ``points[label] = (trainable_params, mean)``."""
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for name, rows in series.items():
        rows = sorted(r for r in rows if r[0] > 0)
        if not rows:
            continue
        params, means, stds = (np.asarray(v, dtype=float) for v in zip(*rows))
        ax.errorbar(params, means, yerr=stds, marker="o", capsize=3, label=f"{name} sweep")
    for label, (params, mean) in points.items():
        if params > 0:
            ax.scatter([params], [mean], marker="s", color="gray", zorder=3)
            ax.annotate(label, (params, mean), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("tunable parameters (log scale)")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    if series:
        ax.legend(fontsize=8, frameon=False)
    return _save(fig, path)


def plot_forgetting(rows: Sequence[Mapping[str, float | str]], path: Path, metric: str = "dice") -> Path:
    """Old- vs new-center score per method.

    ``rows`` items: ``{"label", "old_before", "old_after", "new_before", "new_after"}`` (NaN allowed for
    missing "before" values). An arrow goes from before to after adaptation; points below the diagonal forgot
    the old center more than they gained on the new one.
    """
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    colors = plt.get_cmap("tab10")
    for i, row in enumerate(rows):
        ob, oa = float(row.get("old_before", np.nan)), float(row["old_after"])
        nb, na = float(row.get("new_before", np.nan)), float(row["new_after"])
        ax.scatter([na], [oa], color=colors(i), label=str(row["label"]), zorder=3)
        if np.isfinite(ob) and np.isfinite(nb):
            ax.annotate("", xy=(na, oa), xytext=(nb, ob), arrowprops={"arrowstyle": "->", "color": colors(i)})
            ax.scatter([nb], [ob], color=colors(i), marker="x")
    ax.plot([0, 1], [0, 1], ls=":", color="gray", lw=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"new center {metric}")
    ax.set_ylabel(f"old center {metric}")
    ax.set_title("Segmentation prompts: old-center retention", fontsize=10)
    ax.legend(fontsize=7, frameon=False, loc="lower left")
    return _save(fig, path)
