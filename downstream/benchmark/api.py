"""``run_benchmark``: expand the matrix, run the missing cells, write the report.

Outputs in ``cfg.output_dir``::

    config.yaml          resolved BenchmarkConfig
    cells/<id>.json      one record per cell (atomic; the resume state)
    cells/<id>/          the cell's own run dir (result.json, resolved downstream config)
    results.csv          one row per cell, failures with their error
    summary.json         per-group mean/std/CI and the headline comparisons
    report.md            tables + figures
    weights_ablation_<task>.png, scaling_<task>.png, forgetting.png
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from downstream.benchmark import diagnostics, plots
from downstream.benchmark import report as rp
from downstream.benchmark.config import BenchmarkConfig
from downstream.benchmark.matrix import Cell, SkippedSource, expand
from downstream.benchmark.runner import CellStore, atomic_write_json, run_cells
from lvmmed.config import save_config


def run_benchmark(
    cfg: BenchmarkConfig,
    progress: Callable[[str], None] = print,
    run_fn: Callable[[str, list[str]], dict] | None = None,
) -> dict:
    """Runs the benchmark and writes the report; returns ``{counts, report, results_csv, seconds}``."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    cells, skipped = expand(cfg)
    for source in skipped:
        progress(f"weights {source.name!r} skipped: {source.reason}")
    progress(f"benchmark {cfg.name!r}: {len(cells)} cells, workers={cfg.workers}, output {out}")
    start = time.perf_counter()
    counts = run_cells(cfg, cells, progress, run_fn, metric_of=lambda record: rp.headline_metric(record, cfg.metric)[1])
    paths = write_report(cfg, cells, skipped)
    seconds = time.perf_counter() - start
    progress(
        f"done: {counts['ok']} ran ok, {counts['failed']} failed, {counts['skipped']} resumed "
        f"in {seconds:.0f}s; report: {paths['report']}"
    )
    return {"counts": counts, **{k: str(v) for k, v in paths.items()}, "seconds": seconds}


def _ablation_figures(agg: rp.Aggregate, out: Path) -> list[tuple[str, Path]]:
    figures = []
    for task in agg.cfg.tasks:
        groups: dict[str, dict[str, list[float]]] = defaultdict(dict)
        cis: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
        for method in agg.cfg.methods:
            name = rp.display_name(method.label, method.key)
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


def _scaling_figures(agg: rp.Aggregate, out: Path) -> list[tuple[str, Path]]:
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
                points[rp.display_name(method.label, method.key)] = (float(trainable), summary.mean)
        path = plots.plot_scaling(
            series,
            points,
            out / f"scaling_{task.name}.png",
            agg.metric(task.name),
            f"{task.name}: scaling law ({ref} weights)",
        )
        figures.append((f"Scaling law, {task.name}", path))
    return figures


def forgetting_rows(result: dict) -> list[dict]:
    """Old/new-center Dice per adaptation mode from a ``protocol=new_center`` result (its ``table``).

    Old-center values are averaged over the old centers. Returns ``[{mode, old_before, old_after, new_before,
    new_after, trainable_params}]``.
    """
    old = result.get("old_centers") or []
    rows = []
    for row in result.get("table") or []:
        befores = [row.get(f"{c}_dice_before") for c in old]
        afters = [row.get(f"{c}_dice_after") for c in old]
        if not afters or any(v is None for v in afters) or row.get("new_center_dice") is None:
            continue
        rows.append({
            "mode": row["mode"],
            "old_before": sum(b for b in befores if b is not None) / max(1, sum(b is not None for b in befores)),
            "old_after": sum(afters) / len(afters),
            "new_before": row.get("new_center_dice_before", float("nan")),
            "new_after": row["new_center_dice"],
            "trainable_params": row.get("trainable_params"),
        })  # fmt: skip
    return rows


def _forgetting(records: list[dict], out: Path) -> tuple[list[str], list[tuple[str, Path]]]:
    """Old/new-center retention of segmentation prompts (Saeed et al. 2023), averaged over seeds."""
    by_label: dict[str, list[dict]] = defaultdict(list)
    params: dict[str, int | None] = {}
    for record in records:
        if record.get("status") != "ok":
            continue
        for row in forgetting_rows(record.get("result") or {}):
            label = f"{row['mode']} ({record['cell']['weights']})"
            by_label[label].append(row)
            params[label] = row["trainable_params"]
    if not by_label:
        return [], []
    keys = ("old_before", "old_after", "new_before", "new_after")
    rows: list[dict] = []
    lines = [
        "## Segmentation: old-center retention after adapting to a new center",
        "",
        "Dice averaged over seeds; old = mean over the old centers; forgetting = old before − old after.",
        "",
        "| adaptation (weights) | old before | old after | forgetting | new before | new after | trainable | seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, items in sorted(by_label.items()):
        mean = {k: sum(float(i[k]) for i in items) / len(items) for k in keys}
        rows.append({"label": label, **mean})
        lines.append(
            f"| {label} | {rp._fmt(mean['old_before'])} | {rp._fmt(mean['old_after'])} | "
            f"{rp._fmt(mean['old_before'] - mean['old_after'])} | {rp._fmt(mean['new_before'])} | "
            f"{rp._fmt(mean['new_after'])} | {rp._fmt_count(params[label])} | {len(items)} |"
        )
    return [*lines, ""], [("Old/new-center retention", plots.plot_forgetting(rows, out / "forgetting.png"))]


def _skipped_lines(skipped: list[SkippedSource]) -> list[str]:
    if not skipped:
        return []
    lines = ["**Weight sources skipped:**", ""]
    lines += [f"- `{s.name}` ({s.source}): {s.reason}" for s in skipped]
    return [*lines, ""]


def write_report(cfg: BenchmarkConfig, cells: list[Cell], skipped: list[SkippedSource]) -> dict[str, Path]:
    """Aggregates the stored records of ``cells`` into results.csv, summary.json, report.md and PNGs."""
    out = Path(cfg.output_dir)
    records = CellStore(out).records(cells)
    agg = rp.Aggregate(cfg, cells, records)
    headline, findings = rp.headline_section(agg)
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
    ]
    skipped_names = {s.name for s in skipped}
    weights_notes = [f"- `{w.name}`: {w.note or w.source}" for w in cfg.weights if w.name not in skipped_names]
    lines += ["**Weight sources:**", "", *weights_notes, "", *rp.task_tables(agg)]
    figures = _ablation_figures(agg, out) + _scaling_figures(agg, out)
    diagnostic_lines, diagnostic_figures = diagnostics.section(
        records, out, next(iter(agg.metrics.values()), "accuracy")
    )
    lines += diagnostic_lines
    figures += diagnostic_figures
    forgetting_lines, forgetting_figures = _forgetting(records, out)
    lines += forgetting_lines
    figures += forgetting_figures
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{title}]({path.name})" for title, path in figures]
        lines.append("")
    lines += rp.paired_section(agg)
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
        "results_csv": rp.write_csv(agg.rows, out / "results.csv"),
        "summary_json": out / "summary.json",
    }
    atomic_write_json(paths["summary_json"], rp.summary_json(agg, findings))
    tmp = paths["report"].with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(paths["report"])
    return paths


def load_summary(output_dir: str | Path) -> dict:
    """Reads ``summary.json`` of a finished benchmark."""
    return json.loads((Path(output_dir) / "summary.json").read_text())
