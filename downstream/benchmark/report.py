"""Aggregation of cell records into ``results.csv``, ``summary.json`` and ``report.md`` (+ PNGs).

Statistics (choices stated, configurable in :class:`BenchmarkConfig`):
    * A table cell is the mean ± sample std (ddof=1) over seeds of the headline metric, with the 95% CI of that
      mean computed from the per-seed numbers (Student-t by default: mean ± t_{0.975,n-1}·s/√n).
    * Comparisons are *paired*: two columns are compared only on the seeds both finished, which share splits and
      subsets; the test is a paired t-test on the per-seed differences (or an exact sign-flip test), and the 95% CI
      of the mean difference is the t-interval of those differences. With 3 seeds only large, consistent gaps are
      significant; the report says so instead of hiding it.
    * The per-run test-set bootstrap CI that ``run_experiment`` reports is kept in ``results.csv`` (``ci_low``,
      ``ci_high``) and shown for single-seed columns.

The first table of the report answers the project's question: did our pretraining (``reference_weights``) beat
each other weight source (random init, SimCLR/NT-Xent, general) on held-out data, per task and method.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from downstream.benchmark import stats_seeds as st
from downstream.benchmark.config import BenchmarkConfig
from downstream.benchmark.matrix import Cell

# Column order of the results table: LP | MLP | VP | MoVL | VPT-s | VPT-d | Adapter | LoRA | GMoE | FF.
DISPLAY = {
    "linear": "LP",
    "mlp": "MLP",
    "vp-pad": "VP",
    "vp-fixed": "VP-fixed",
    "vp-random": "VP-random",
    "movl": "MoVL",
    "vpt-shallow": "VPT-s",
    "vpt-deep": "VPT-d",
    "adapter": "Adapter",
    "lora": "LoRA",
    "gmoe-adapter": "GMoE",
    "finetune": "FF",
}
ORDER = list(DISPLAY)
METRIC_CANDIDATES = ("accuracy", "acc", "top1", "dice", "mean_dice", "dice_mean", "auroc")


def display_name(label: str, key: str) -> str:
    """Column title: the paper abbreviation for a plain registry key, else the configured label."""
    return DISPLAY.get(label, label) if label == key else label


def _column_rank(label: str, key: str) -> tuple[int, str]:
    return (ORDER.index(key) if key in ORDER else len(ORDER), label)


def headline_metric(record: dict, name: str = "auto") -> tuple[str, float | None]:
    """``(metric_name, value)`` of a record (``auto``: first of accuracy / dice / auroc present)."""
    metrics = (record.get("result") or {}).get("metrics") or {}
    names = [name] if name != "auto" else list(METRIC_CANDIDATES)
    for candidate in names:
        value = metrics.get(candidate)
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            return candidate, float(value)
    return (name if name != "auto" else "metric"), None


def ood_metric(record: dict, metric: str) -> float | None:
    """The same metric on the task's OOD test set when the run reports one (``result["ood"]["metrics"]``)."""
    ood = (record.get("result") or {}).get("ood") or {}
    value = (ood.get("metrics") or {}).get(metric) if isinstance(ood, dict) else None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(float(value)) else None


def _params(record: dict) -> tuple[int | None, int | None]:
    params = (record.get("result") or {}).get("params") or {}
    trainable, total = params.get("trainable"), params.get("total")
    return (int(trainable) if trainable is not None else None, int(total) if total is not None else None)


def _fmt_count(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


class Aggregate:
    """Per-(task, setting, method, weights) per-seed values, parameter counts and failures."""

    def __init__(self, cfg: BenchmarkConfig, cells: Sequence[Cell], records: Sequence[dict]):
        self.cfg = cfg
        self.metrics: dict[str, str] = {}
        self.values: dict[tuple, dict[int, float]] = defaultdict(dict)
        self.ood: dict[tuple, dict[int, float]] = defaultdict(dict)
        self.params: dict[tuple, tuple[int | None, int | None]] = {}
        self.sample_ci: dict[tuple, tuple[float, float]] = {}
        self.keys: dict[str, str] = {}
        self.sweeps: dict[tuple, tuple[str, str]] = {}
        self.failures: list[dict] = []
        by_id = {c.cell_id: c for c in cells}
        self.rows: list[dict] = []
        for record in records:
            cell = by_id.get(record["cell"]["cell_id"])
            if cell is None:
                continue
            key = (cell.task, cell.setting, cell.method, cell.weights)
            self.keys[cell.method] = cell.method_key
            if cell.sweep:
                self.sweeps[key] = (cell.sweep, cell.sweep_value)
            row = {**cell.as_row(), "status": record["status"], "seconds": record.get("seconds")}
            if record["status"] != "ok":
                self.failures.append({**row, "error": record.get("error", "")})
                row["error"] = record.get("error", "")
                self.rows.append(row)
                continue
            name, value = headline_metric(record, cfg.metric)
            if value is not None:
                self.metrics.setdefault(cell.task, name)
                self.values[key][cell.seed] = value
            ood = ood_metric(record, name)
            if ood is not None:
                self.ood[key][cell.seed] = ood
            self.params[key] = _params(record)
            ci = ((record.get("result") or {}).get("ci95") or {}).get(name)
            if isinstance(ci, (list, tuple)) and len(ci) == 2:
                self.sample_ci[key] = (float(ci[0]), float(ci[1]))
            row.update({"metric": name, "value": value, "ood_value": ood})
            row["trainable_params"], row["total_params"] = self.params[key]
            row["ci_low"], row["ci_high"] = self.sample_ci.get(key, (None, None))
            for mname, mvalue in ((record.get("result") or {}).get("metrics") or {}).items():
                if isinstance(mvalue, (int, float)):
                    row[f"m_{mname}"] = mvalue
            self.rows.append(row)

    def metric(self, task: str) -> str:
        """Headline metric name of a task (``accuracy``, ``dice_mean``...)."""
        return self.metrics.get(task, "metric")

    @property
    def metric_names(self) -> str:
        return ", ".join(f"{m} ({t})" for t, m in self.metrics.items()) or "n/a"

    def summary(self, key: tuple, source: str = "id") -> st.SeedSummary | None:
        per_seed = (self.values if source == "id" else self.ood).get(key)
        if not per_seed:
            return None
        return st.summarize([per_seed[s] for s in sorted(per_seed)], self.cfg.ci_method, self.cfg.bootstrap_samples)

    def compare(self, a: tuple, b: tuple) -> st.PairedResult | None:
        """Paired comparison a − b on the seeds both finished."""
        va, vb = self.values.get(a, {}), self.values.get(b, {})
        seeds = sorted(set(va) & set(vb))
        if not seeds:
            return None
        return st.paired([va[s] for s in seeds], [vb[s] for s in seeds], self.cfg.paired_test)


def _cell_text(agg: Aggregate, key: tuple) -> str:
    summary = agg.summary(key)
    if summary is None:
        return "failed" if any(f["method"] == key[2] and f["weights"] == key[3] for f in agg.failures) else ""
    text = f"{summary.mean:.3f} ± {_fmt(summary.std)}"
    if summary.n > 1:
        text += f"<br>[{summary.ci_low:.3f}, {summary.ci_high:.3f}]"
    elif key in agg.sample_ci:
        lo, hi = agg.sample_ci[key]
        text += f"<br>[{lo:.3f}, {hi:.3f}]*"
    trainable, total = agg.params.get(key, (None, None))
    text += f"<br><sub>{_fmt_count(trainable)} / {_fmt_count(total)} params</sub>"
    return text


def _verdict(result: st.PairedResult, alpha: float, ours: str, ci_a=None, ci_b=None) -> str:
    """Verdict of a paired comparison; for seed-deterministic pairs, from the runs' test-set bootstrap CIs."""
    if result.degenerate:
        if ci_a is None or ci_b is None:
            return "n/a: identical on every seed (no seed variance), no test-set CIs"
        if ci_a[0] > ci_b[1] or ci_a[1] < ci_b[0]:
            word = "better" if result.mean_diff > 0 else "worse"
            return f"**{ours} {word}** (same on every seed; test-set 95% CIs disjoint)"
        return "no significant difference (same on every seed; test-set 95% CIs overlap)"
    if result.n < 2 or result.p_value is None:
        return "n/a: 1 seed (see the test-set CIs below)"
    if result.p_value < alpha:
        return f"**{ours} better**" if result.mean_diff > 0 else f"**{ours} worse**"
    return "no significant difference"


def headline_section(agg: Aggregate) -> tuple[list[str], list[dict]]:
    """The first table: reference weights vs every other source, per task × method (full setting)."""
    cfg, ours = agg.cfg, agg.cfg.reference
    lines = [
        f"## Did our pretraining help? ({ours} vs the other weight sources, held-out test split)",
        "",
        f"Paired over seeds ({cfg.paired_test}, α = {cfg.alpha}); Δ = {ours} − other, with its 95% CI. A difference "
        "that is identical on every seed (a deterministic method on fixed weights and splits) is judged from the "
        "runs' test-set bootstrap CIs instead.",
        "",
        f"| task | metric | method | {ours} | other source | other | Δ [95% CI] | p | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    findings: list[dict] = []
    methods = [m for m in cfg.methods]
    for task in cfg.tasks:
        for method in sorted(methods, key=lambda m: _column_rank(m.label, m.key)):
            ref_key = (task.name, "full", method.label, ours)
            ref = agg.summary(ref_key)
            if ref is None:
                continue
            for spec in cfg.weights:
                if spec.name == ours:
                    continue
                other_key = (task.name, "full", method.label, spec.name)
                other = agg.summary(other_key)
                comparison = agg.compare(ref_key, other_key)
                if other is None or comparison is None:
                    continue
                verdict = _verdict(
                    comparison, cfg.alpha, ours, agg.sample_ci.get(ref_key), agg.sample_ci.get(other_key)
                )
                findings.append(
                    {
                        "task": task.name,
                        "method": method.label,
                        "other": spec.name,
                        "diff": comparison.mean_diff,
                        "p": comparison.p_value,
                        "verdict": verdict,
                    }
                )
                lines.append(
                    f"| {task.name} | {agg.metric(task.name)} | {display_name(method.label, method.key)} "
                    f"| {ref.mean:.3f} ± {_fmt(ref.std)} "
                    f"| {spec.name} | {other.mean:.3f} ± {_fmt(other.std)} | {comparison.mean_diff:+.3f} "
                    f"[{_fmt(comparison.ci_low)}, {_fmt(comparison.ci_high)}] | {_fmt(comparison.p_value)} "
                    f"| {verdict} |"
                )
    if not findings:
        lines.append("| – | – | – | – | – | – | – | – | no paired results yet |")
    lines.append("")
    for spec in cfg.weights:
        mine = [f for f in findings if f["other"] == spec.name]
        if not mine:
            continue
        better = sum(f["diff"] > 0 for f in mine)
        significant = sum("better" in f["verdict"] for f in mine)
        worse = sum("worse" in f["verdict"] for f in mine)
        lines.append(
            f"- **{ours} vs {spec.name}:** higher mean in {better}/{len(mine)} task×method pairs; significantly "
            f"better in {significant}, significantly worse in {worse}."
        )
    lines.append("")
    return lines, findings


def task_tables(agg: Aggregate) -> list[str]:
    """Per task and setting: methods as columns, weight sources as rows."""
    cfg = agg.cfg
    lines = ["## Results per task", ""]
    lines.append(
        "Each cell: the task's metric, mean ± std over seeds, [95% CI of the mean from the per-seed numbers "
        "(* = test-set bootstrap of a single run)], trainable / total parameters."
    )
    lines.append("")
    settings = sorted({k[1] for k in agg.values} | {k[1] for k in agg.params}, key=lambda s: (s != "full", s))
    for task in cfg.tasks:
        for setting in settings:
            columns = sorted(
                {k[2] for k in agg.params if k[0] == task.name and k[1] == setting and k not in agg.sweeps},
                key=lambda label: _column_rank(label, agg.keys.get(label, label)),
            )
            if not columns:
                continue
            heads = [display_name(c, agg.keys.get(c, c)) for c in columns]
            lines += [
                f"### {task.name} ({setting}; {agg.metric(task.name)})",
                "",
                "| weights | " + " | ".join(heads) + " |",
            ]
            lines.append("|---" * (len(columns) + 1) + "|")
            for spec in cfg.weights:
                cells = [_cell_text(agg, (task.name, setting, c, spec.name)) for c in columns]
                if any(cells):
                    lines.append(f"| {spec.name} | " + " | ".join(cells) + " |")
            lines.append("")
            if any(k[0] == task.name and k[1] == setting for k in agg.ood):
                lines += _ood_table(agg, task.name, setting, columns)
    return lines


def _ood_table(agg: Aggregate, task: str, setting: str, columns: list[str]) -> list[str]:
    lines = [
        f"#### {task} ({setting}): in-distribution vs OOD",
        "",
        "| weights | method | ID | OOD | gap |",
        "|---|---|---|---|---|",
    ]
    for spec in agg.cfg.weights:
        for column in columns:
            key = (task, setting, column, spec.name)
            id_sum, ood_sum = agg.summary(key), agg.summary(key, "ood")
            if id_sum is None or ood_sum is None:
                continue
            lines.append(
                f"| {spec.name} | {display_name(column, agg.keys.get(column, column))} | "
                f"{id_sum.mean:.3f} ± {_fmt(id_sum.std)} | "
                f"{ood_sum.mean:.3f} ± {_fmt(ood_sum.std)} | {id_sum.mean - ood_sum.mean:+.3f} |"
            )
    return [*lines, ""]


def paired_section(agg: Aggregate) -> list[str]:
    """Every method pair under the same weights, and every weights pair under the same method."""
    lines = [
        "## Paired comparisons",
        "",
        "| task | setting | A | B | n | Δ (A − B) [95% CI] | p | significant |",
        "|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted(k for k in agg.values if k not in agg.sweeps)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            same_method = a[2] == b[2]
            same_weights = a[3] == b[3]
            if a[:2] != b[:2] or same_method == same_weights:
                continue
            result = agg.compare(a, b)
            if result is None or result.n < 2:
                continue
            if result.degenerate:
                flag = "n/a (same Δ on every seed)"
            else:
                flag = "yes" if result.p_value is not None and result.p_value < agg.cfg.alpha else "no"
            lines.append(
                f"| {a[0]} | {a[1]} | {a[2]}/{a[3]} | {b[2]}/{b[3]} | {result.n} | {result.mean_diff:+.3f} "
                f"[{_fmt(result.ci_low)}, {_fmt(result.ci_high)}] | {_fmt(result.p_value)} | {flag} |"
            )
    if len(lines) == 4:
        return ["## Paired comparisons", "", "None: paired tests need at least 2 seeds that both columns finished.", ""]
    tests = len(lines) - 4
    expected = tests * agg.cfg.alpha
    lines += [
        "",
        f"{tests} comparisons at α = {agg.cfg.alpha} each, uncorrected: about {expected:.1f} would be flagged by "
        "chance if no difference were real.",
        "",
    ]
    return lines


def write_csv(rows: list[dict], path: Path) -> Path:
    """One row per cell (failures included, with their error)."""
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in columns})
    return path


def summary_json(agg: Aggregate, findings: list[dict]) -> dict[str, Any]:
    """Machine-readable aggregate (``summary.json``)."""
    groups = []
    for key in sorted(agg.values):
        summary = agg.summary(key)
        if summary is None:
            continue
        trainable, total = agg.params.get(key, (None, None))
        seeds = sorted(agg.values[key])
        groups.append(
            {
                "task": key[0],
                "setting": key[1],
                "method": key[2],
                "weights": key[3],
                "seeds": seeds,
                "values": [agg.values[key][s] for s in seeds],
                "mean": summary.mean,
                "std": summary.std,
                "ci95": [summary.ci_low, summary.ci_high],
                "trainable_params": trainable,
                "total_params": total,
            }
        )
    return {
        "metrics": agg.metrics,
        "reference": agg.cfg.reference,
        "groups": groups,
        "headline": findings,
        "failures": agg.failures,
    }
