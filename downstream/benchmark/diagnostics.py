"""Method diagnostics for the benchmark report: training curves, chance/divergence flags, chosen hyper-parameters.

Reads what :mod:`downstream.tuning` records in every cell result (``tuning.candidates[].curve``, ``flags``,
``best_hparams``) and writes

* one small PNG per task × method (``curves_<task>_<method>.png``): val metric and train loss against steps, one
  line per cell (weights × seed) for the chosen candidate (other candidates faint), chance level dashed;
* a table with the chosen hyper-parameters next to every number and the flags: ``chance`` (chosen val within
  ``tuning.chance_margin`` of the best constant prediction), ``diverged`` (a candidate hit a non-finite loss),
  ``collapsed`` (a candidate's val fell back to chance after being above it);
* :func:`order_checks`: paired-over-seeds comparisons of two methods under the same weights (e.g. MoVL vs LP).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

FLAG_WORDS = ("chance", "diverged", "collapsed")


def _result(record: dict) -> dict:
    return record.get("result") or {}


def cell_flags(record: dict) -> list[str]:
    """Flag words of one cell (empty when fine or when the method has no tuning record)."""
    flags = _result(record).get("flags") or {}
    out = []
    if flags.get("val_at_chance"):
        out.append("chance")
    if flags.get("diverged"):
        out.append(f"diverged ({len(flags['diverged'])} cand.)")
    if flags.get("collapsed"):
        out.append(f"collapsed ({len(flags['collapsed'])} cand.)")
    return out


def hparams_text(record: dict) -> str:
    """Chosen hyper-parameters, short: ``lr=0.5 wd=0 head_lr=0.01 movl.weight=0.1 @step 40`` or ``initial``."""
    hp = _result(record).get("best_hparams") or {}
    if not hp:
        return ""
    if hp.get("initial"):
        return "initial state"
    skip = {"lr_base", "head_lr_base", "step"}
    parts = [f"{k}={_num(v)}" for k, v in hp.items() if k not in skip]
    if "step" in hp:
        parts.append(f"@{hp['step']}")
    return " ".join(parts)


def _num(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def plot_curves(records: Sequence[dict], path: Path, title: str) -> Path | None:
    """Val metric (top) and train loss (bottom) against steps for every tuned cell of one task × method."""
    tuned = [r for r in records if (_result(r).get("tuning") or {}).get("candidates")]
    if not tuned:
        return None
    fig, (ax_val, ax_loss) = plt.subplots(2, 1, figsize=(5.2, 4.6), sharex=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    weights = sorted({r["cell"]["weights"] for r in tuned})
    chance = None
    for record in tuned:
        tuning = _result(record)["tuning"]
        colour = colours[weights.index(record["cell"]["weights"]) % len(colours)]
        chance = tuning.get("chance_val", chance)
        for cand in tuning["candidates"]:
            chosen = cand["name"] == tuning["chosen"]
            pts = [(p["step"], p["val"]) for p in cand["curve"] if p["val"] is not None]
            loss = [(p["step"], p["train_loss"]) for p in cand["curve"] if p["train_loss"] is not None]
            style = {"color": colour, "alpha": 0.9 if chosen else 0.2, "lw": 1.4 if chosen else 0.8}
            if pts:
                ax_val.plot(*zip(*pts), marker="o", ms=2, **style)
            if loss:
                ax_loss.plot(*zip(*[(s, v if math.isfinite(v) else float("nan")) for s, v in loss]), **style)
    if chance is not None:
        ax_val.axhline(chance, ls="--", color="grey", lw=0.8, label="chance")
    for i, name in enumerate(weights):
        ax_val.plot([], [], color=colours[i % len(colours)], label=name)
    ax_val.set_ylabel(_result(tuned[0])["tuning"].get("metric", "val"))
    ax_val.legend(fontsize=7, loc="best")
    ax_val.set_title(title, fontsize=9)
    ax_loss.set_ylabel("train loss")
    ax_loss.set_xlabel("step (faint: candidates not chosen)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _metric(record: dict, name: str, split: str = "test") -> float | None:
    source = _result(record).get("metrics" if split == "test" else "val_metrics") or {}
    value = source.get(name)
    return float(value) if isinstance(value, (int, float)) else None


def section(records: Sequence[dict], out_dir: Path, metric: str = "accuracy") -> tuple[list[str], list[tuple]]:
    """Report lines (chosen hyper-parameters + flags per cell) and the curve figures ``[(title, path)]``."""
    ok = [r for r in records if r.get("status") == "ok" and "cell" in r]
    if not ok:
        return [], []
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for record in ok:
        groups[(record["cell"]["task"], record["cell"]["method"])].append(record)
    figures = []
    for (task, method), items in sorted(groups.items()):
        path = plot_curves(items, out_dir / f"curves_{task}_{method}.png", f"{task} / {method}")
        if path is not None:
            figures.append((f"Training curves, {task} / {method}", path))
    lines = [
        "## Method diagnostics",
        "",
        f"Test {metric} and val `select_metric` of the chosen state, the chosen hyper-parameters (lrs after the "
        "batch/256 scaling; `initial state` = no candidate beat the starting point on val) and flags.",
        "",
        "| task | method | weights | seed | test | val (chosen) | val (initial) | chosen | flags |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for record in sorted(ok, key=lambda r: (r["cell"]["task"], r["cell"]["method"], r["cell"]["weights"],
                                            r["cell"]["seed"])):  # fmt: skip
        cell, tuning = record["cell"], _result(record).get("tuning") or {}
        hp = hparams_text(record) or ", ".join(f"{k}={_num(v)}" for k, v in (_result(record).get("best_hparams")
                                                                            or {}).items())  # fmt: skip
        val = tuning.get("chosen_val")
        lines.append(
            f"| {cell['task']} | {cell['method']} | {cell['weights']} | {cell['seed']} | "
            f"{_fmt(_metric(record, metric))} | {_fmt(val)} | {_fmt(tuning.get('initial_val'))} | {hp} | "
            f"{', '.join(cell_flags(record)) or '–'} |"
        )
    flagged = sum(bool(cell_flags(r)) for r in ok)
    lines += ["", f"Flagged cells: {flagged} of {len(ok)}.", ""]
    return lines, figures


def _fmt(x: float | None) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.3f}"


def order_checks(agg: Any, checks: Sequence[tuple[str, str, Sequence[str]]]) -> list[str]:
    """Paired comparisons ``a ≥ b`` per task and weight source (``checks``: (a label, b label, weight names)).

    A line per (task, check, weights): per-seed Δ = a − b, its mean, how many seeds a ≥ b, and whether the order
    holds on the mean (the paired test's p from ``agg.compare``).
    """
    lines = [
        "| task | order | weights | seeds | mean Δ | seeds with a ≥ b | p | holds (mean Δ ≥ 0) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task in agg.cfg.tasks:
        for a, b, weights in checks:
            for w in weights:
                ka, kb = (task.name, "full", a, w), (task.name, "full", b, w)
                va, vb = agg.values.get(ka, {}), agg.values.get(kb, {})
                seeds = sorted(set(va) & set(vb))
                if not seeds:
                    continue
                diffs = [va[s] - vb[s] for s in seeds]
                mean = sum(diffs) / len(diffs)
                result = agg.compare(ka, kb)
                p = getattr(result, "p_value", None)
                lines.append(
                    f"| {task.name} | {a} ≥ {b} | {w} | {len(seeds)} | {mean:+.3f} | "
                    f"{sum(d >= 0 for d in diffs)}/{len(seeds)} | {_fmt(p)} | {'yes' if mean >= 0 else '**no**'} |"
                )
    return lines


def val_transfer(records: Sequence[dict], metric: str = "accuracy", reference: str = "linear") -> list[str]:
    """Does a val gain carry over to test? One row per task, over the cells whose chosen state is a trained one.

    For each such cell: the val gain of the chosen state over the method's starting point (``select_metric``) and
    the test gain over the ``reference`` column (the probe) with the same weights and seed. When the val gains are
    large and the test gains negative, the val split does not predict the test split (e.g. different slabs of
    one template holding different mixtures of the classes), and no selection rule on val can fix that.
    """
    from scipy.stats import spearmanr

    ok = [r for r in records if r.get("status") == "ok" and "cell" in r]
    ref = {(r["cell"]["task"], r["cell"]["weights"], r["cell"]["seed"]): _metric(r, metric)
           for r in ok if r["cell"]["method"] == reference}  # fmt: skip
    rows: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for record in ok:
        cell, tuning = record["cell"], _result(record).get("tuning") or {}
        if cell["method"] == reference or tuning.get("chosen", "initial") == "initial":
            continue
        base = ref.get((cell["task"], cell["weights"], cell["seed"]))
        test, chosen, initial = _metric(record, metric), tuning.get("chosen_val"), tuning.get("initial_val")
        if None in (base, test, chosen, initial):
            continue
        rows[(cell["task"], cell["method"])].append((float(chosen) - float(initial), test - base))
    if not rows:
        return []
    lines = [
        f"Trained states that replaced their starting point: their val gain over it against their test gain over "
        f"`{reference}` (test {metric}), same weights and seed; ρ is Spearman's between the two gains. VP's starting "
        "point is the untrained prompt with a fresh head (near chance), so its val gains are large by construction.",
        "",
        "| task | method | cells | mean val gain | mean test gain vs probe | test gain ≥ 0 | Spearman ρ |",
        "|---|---|---|---|---|---|---|",
    ]
    for (task, method), pairs in sorted(rows.items()):
        val_gain, test_gain = [p[0] for p in pairs], [p[1] for p in pairs]
        rho = spearmanr(val_gain, test_gain).statistic if len(pairs) > 2 else float("nan")
        lines.append(
            f"| {task} | {method} | {len(pairs)} | {sum(val_gain) / len(pairs):+.3f} | "
            f"{sum(test_gain) / len(pairs):+.3f} | "
            f"{sum(g >= 0 for g in test_gain)}/{len(pairs)} | {_fmt(float(rho))} |"
        )
    return lines
