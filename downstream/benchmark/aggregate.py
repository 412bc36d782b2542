"""Cell records → per-seed values per (task, setting, method, weights): :class:`Aggregate`, CSV and JSON summary.

Statistics (choices stated, configurable in :class:`~downstream.benchmark.config.BenchmarkConfig`):
    * A table cell is the mean ± sample std (ddof=1) over seeds of the headline metric, with the 95% CI of that
      mean computed from the per-seed numbers (Student-t by default: mean ± t_{0.975,n-1}·s/√n).
    * Comparisons are *paired*: two columns are compared only on the seeds both finished, which share splits and
      subsets; the test is a paired t-test on the per-seed differences (or an exact sign-flip test), and the 95% CI
      of the mean difference is the t-interval of those differences. With 3 seeds only large, consistent gaps are
      significant; the report says so instead of hiding it.
    * The per-run test-set bootstrap CI that ``run_experiment`` reports is kept in ``results.csv`` (``ci_low``,
      ``ci_high``) and shown for single-seed columns.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from downstream.benchmark.config import BenchmarkConfig
from downstream.benchmark.matrix import Cell
from lvmmed import stats as st

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


def column_rank(label: str, key: str) -> tuple[int, str]:
    return (ORDER.index(key) if key in ORDER else len(ORDER), label)


def headline_metric(record: dict, name: str = "auto") -> tuple[str, float | None]:
    """``(metric_name, value)`` of a record (``auto``: the run's own ``headline_metric`` (AUROC for multi-label
    tasks), else the first of accuracy / dice / auroc present)."""
    result = record.get("result") or {}
    metrics = result.get("metrics") or {}
    names = [name] if name != "auto" else [result.get("headline_metric") or METRIC_CANDIDATES[0], *METRIC_CANDIDATES]
    for candidate in names:
        value = metrics.get(candidate)
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            return candidate, float(value)
    return (name if name != "auto" else "metric"), None


def general_stream_is_random(method_key: str, result: dict) -> bool:
    """True for a GMoE-Adapter cell whose general stream was randomly initialised (no general weights file)."""
    if method_key != "gmoe-adapter":
        return False
    general = ((result.get("config") or {}).get("gmoe") or {}).get("general_weights", "random")
    return str(general) in ("", "random", "none")


def ood_metric(record: dict, metric: str) -> float | None:
    """The same metric on the task's OOD test set when the run reports one (``result["ood"]["metrics"]``)."""
    ood = (record.get("result") or {}).get("ood") or {}
    value = (ood.get("metrics") or {}).get(metric) if isinstance(ood, dict) else None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(float(value)) else None


def record_params(record: dict) -> tuple[int | None, int | None]:
    params = (record.get("result") or {}).get("params") or {}
    trainable, total = params.get("trainable"), params.get("total")
    return (int(trainable) if trainable is not None else None, int(total) if total is not None else None)


def fmt_count(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


def fmt(x: float | None, digits: int = 3) -> str:
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
        self.per_class: dict[tuple, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
        self.per_class_kind: dict[str, str] = {}
        self.random_general: set[tuple] = set()
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
            self.params[key] = record_params(record)
            ci = ((record.get("result") or {}).get("ci95") or {}).get(name)
            if isinstance(ci, (list, tuple)) and len(ci) == 2:
                self.sample_ci[key] = (float(ci[0]), float(ci[1]))
            row.update({"metric": name, "value": value, "ood_value": ood})
            row["trainable_params"], row["total_params"] = self.params[key]
            row["ci_low"], row["ci_high"] = self.sample_ci.get(key, (None, None))
            for mname, mvalue in ((record.get("result") or {}).get("metrics") or {}).items():
                if isinstance(mvalue, (int, float)):
                    row[f"m_{mname}"] = mvalue
            self._per_class(cell, key, record.get("result") or {})
            if general_stream_is_random(cell.method_key, record.get("result") or {}):
                self.random_general.add(key)
                row["general_stream"] = "random"
            self.rows.append(row)

    def _per_class(self, cell: Cell, key: tuple, result: dict) -> None:
        """Per-label AUROC (multi-label) or per-class Dice (segmentation) of one seed."""
        labels = (result.get("per_label") or {}).get("auroc_per_label")
        if labels:
            self.per_class_kind[cell.task] = "AUROC per label"
            for label, value in labels.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.per_class[key][label][cell.seed] = float(value)
            return
        classes = [
            k[len("dice_") :] for k in (result.get("metrics") or {}) if k.startswith("dice_") and k != "dice_mean"
        ]
        if classes:
            self.per_class_kind[cell.task] = "Dice per class"
            for name in classes:
                value = result["metrics"][f"dice_{name}"]
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.per_class[key][name][cell.seed] = float(value)

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
