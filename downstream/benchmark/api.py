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

import time
from collections.abc import Callable
from pathlib import Path

from downstream.benchmark.aggregate import headline_metric
from downstream.benchmark.config import BenchmarkConfig
from downstream.benchmark.matrix import expand
from downstream.benchmark.report import load_summary, write_report
from downstream.benchmark.runner import run_cells
from lvmmed.config import save_config


def run_benchmark(
    cfg: BenchmarkConfig,
    progress: Callable[[str], None] = print,
    run_fn: Callable[[str, list[str]], dict] | None = None,
) -> dict:
    """Runs the benchmark and writes the report; returns ``{counts, report, results_csv, seconds}``."""
    cells, skipped = expand(cfg)  # unknown method keys fail here, before anything is written
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    for source in skipped:
        progress(f"weights {source.name!r} skipped: {source.reason}")
    progress(f"benchmark {cfg.name!r}: {len(cells)} cells, workers={cfg.workers}, output {out}")
    start = time.perf_counter()
    counts = run_cells(cfg, cells, progress, run_fn, metric_of=lambda record: headline_metric(record, cfg.metric)[1])
    paths = write_report(cfg, cells, skipped)
    seconds = time.perf_counter() - start
    progress(
        f"done: {counts['ok']} ran ok, {counts['failed']} failed, {counts['skipped']} resumed "
        f"in {seconds:.0f}s; report: {paths['report']}"
    )
    return {"counts": counts, **{k: str(v) for k, v in paths.items()}, "seconds": seconds}


__all__ = ["load_summary", "run_benchmark", "write_report"]
