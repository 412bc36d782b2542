"""``report.md`` assembled in one place (:func:`write_report`), with ``results.csv``, ``summary.json`` and the figures.

Sections, in order: counts and skipped weight sources, the headline comparison, weight notes, per-task tables
(with OOD, multi-label and per-class tables), the forgetting table, figures, paired comparisons, failed cells.
The tables are written by :mod:`downstream.benchmark.tables` from an :class:`~downstream.benchmark.aggregate.
Aggregate` of the stored cell records.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from downstream.benchmark import diagnostics, plots, power, tables
from downstream.benchmark.aggregate import Aggregate, display_name, summary_json, write_csv
from downstream.benchmark.config import BenchmarkConfig
from downstream.benchmark.matrix import Cell, SkippedSource
from downstream.benchmark.runner import CellStore, atomic_write_json


def _ablation_figures(agg: Aggregate, out: Path) -> list[tuple[str, Path]]:
    figures = []
    for task in agg.cfg.tasks:
        groups: dict[str, dict[str, list[float]]] = defaultdict(dict)
        cis: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
        for method in agg.cfg.methods:
            name = display_name(method.label, method.key)
            for spec in agg.cfg.weights:
                key = (task.name, "full", method.label, spec.name)
                summary = agg.summary(key)
                if summary is None:
                    continue
                groups[name][spec.name] = [agg.values[key][s] for s in sorted(agg.values[key])]
                cis[name][spec.name] = (
                    (summary.ci_low, summary.ci_high) if summary.n > 1 else (summary.mean, summary.mean)
                )
        if groups:
            path = plots.plot_weight_ablation(
                groups,
                cis,
                out / f"weights_ablation_{task.name}.png",
                agg.metric(task.name),
                f"{task.name}: weight sources (whiskers: 95% CI; dots: seeds)",
            )
            figures.append((f"Weight-source ablation, {task.name}", path))
    return figures


def _scaling_figures(agg: Aggregate, out: Path) -> list[tuple[str, Path]]:
    figures = []
    for task in agg.cfg.tasks:
        series: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
        for key, (sweep, _value) in agg.sweeps.items():
            summary = agg.summary(key)
            trainable = agg.params.get(key, (None, None))[0]
            if key[0] == task.name and summary is not None and trainable:
                series[sweep].append((float(trainable), summary.mean, summary.std if summary.n > 1 else 0.0))
        if not series:
            continue
        ref = agg.cfg.reference
        points = {}
        for method in agg.cfg.methods:
            key = (task.name, "full", method.label, ref)
            summary, trainable = agg.summary(key), agg.params.get(key, (None, None))[0]
            if summary is not None and trainable:
                points[display_name(method.label, method.key)] = (float(trainable), summary.mean)
        path = plots.plot_scaling(
            series,
            points,
            out / f"scaling_{task.name}.png",
            agg.metric(task.name),
            f"{task.name}: scaling law ({ref} weights)",
        )
        figures.append((f"Scaling law, {task.name}", path))
    return figures


def _skipped_lines(skipped: list[SkippedSource]) -> list[str]:
    if not skipped:
        return []
    lines = ["**Weight sources skipped:**", ""]
    lines += [f"- `{s.name}` ({s.source}): {' '.join(s.reason.split())}" for s in skipped]
    return [*lines, ""]


def write_report(cfg: BenchmarkConfig, cells: list[Cell], skipped: list[SkippedSource]) -> dict[str, Path]:
    """Aggregates the stored records of ``cells`` into results.csv, summary.json, report.md and PNGs."""
    out = Path(cfg.output_dir)
    records = CellStore(out).records(cells)
    agg = Aggregate(cfg, cells, records)
    headline, findings = tables.headline_section(agg)
    done = sum(r["status"] == "ok" for r in records)
    lines = [f"# Benchmark report: {cfg.name}", ""]
    if cfg.notes:
        lines += [cfg.notes.strip(), ""]
    lines += [
        f"Cells: {done} ok, {len(agg.failures)} failed, {len(cells) - len(records)} not run, of {len(cells)}. "
        f"Tasks: {', '.join(t.name for t in cfg.tasks)}. Seeds: {list(cfg.seeds)}. Metrics: {agg.metric_names}.",
        "",
        *_skipped_lines(skipped),
        *headline,
        *power.power_section(agg, records, cfg.alpha),
    ]
    skipped_names = {s.name for s in skipped}
    weights_notes = [f"- `{w.name}`: {w.note or w.source}" for w in cfg.weights if w.name not in skipped_names]
    lines += ["**Weight sources:**", "", *weights_notes, "", *tables.task_tables(agg)]
    figures = _ablation_figures(agg, out) + _scaling_figures(agg, out)
    diagnostic_lines, diagnostic_figures = diagnostics.section(records, out, next(iter(agg.metrics.values()), "?"))
    lines += diagnostic_lines
    figures += diagnostic_figures
    forgetting_lines, forgetting = tables.forgetting_section(records)
    lines += forgetting_lines
    if forgetting:
        figures.append(("Old/new-center retention", plots.plot_forgetting(forgetting, out / "forgetting.png")))
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{title}]({path.name})" for title, path in figures]
        lines.append("")
    lines += tables.paired_section(agg)
    if agg.failures:
        lines += ["## Failed cells", "", "| cell | error |", "|---|---|"]
        lines += [
            f"| {f['cell_id']} | {str(f['error']).splitlines()[0][:200].replace('|', '/')} |" for f in agg.failures
        ]
        lines += ["", "Tracebacks are in `cells/<cell>.json`; re-running the same command retries them.", ""]
    compute = sum(float(r.get("seconds") or 0) for r in records)
    lines += [f"Compute: {compute:.0f} s summed over cells. Per-cell records: `cells/`. All rows: `results.csv`.", ""]
    paths = {
        "report": out / "report.md",
        "results_csv": write_csv(agg.rows, out / "results.csv"),
        "summary_json": out / "summary.json",
    }
    atomic_write_json(paths["summary_json"], summary_json(agg, findings))
    tmp = paths["report"].with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(paths["report"])
    return paths


def load_summary(output_dir: str | Path) -> dict:
    """Reads ``summary.json`` of a finished benchmark."""
    return json.loads((Path(output_dir) / "summary.json").read_text())
