"""Resumable, failure-tolerant execution of benchmark cells.

Every finished cell is one JSON file ``<output_dir>/cells/<cell_id>.json``, written atomically (temp file, fsync,
rename), so an interrupted benchmark loses at most the cells that were running. On restart a cell is skipped when
its record says ``status: ok`` *and* its fingerprint equals the current cell's (a config edit re-runs exactly the
changed cells). A cell that raises is recorded with ``status: failed``, the error and the traceback, and the rest
of the matrix continues; ``retry_failed`` decides whether a resume tries it again.

Cells run in this process (``workers=1``) or in a ``ProcessPoolExecutor`` with the ``spawn`` start method (safe
with torch threads) and ``threads_per_worker`` intra-op threads each, so 2 workers × 1 thread on a 2-core machine.
Each cell runs one seed of the downstream pipeline: the config class and run function of the cell's task family
(:data:`downstream.pipeline.CONFIGS` / :data:`~downstream.pipeline.RUNNERS`, e.g. ``DownstreamConfig`` +
``downstream.run.run_experiment``) on a config built from the benchmark's base YAML, its overrides and the cell's
own keys (:func:`cell_overrides`).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from downstream.benchmark.config import BenchmarkConfig
from downstream.benchmark.matrix import Cell
from downstream.pipeline import CONFIGS, RUNNERS
from downstream.registry import is_segmentation
from lvmmed.config import load_config

CELLS_DIR = "cells"
Progress = Callable[[str], None]


def atomic_write_json(path: Path, payload: Any) -> None:
    """Writes JSON via a temp file, fsync and rename: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        json.dump(payload, handle, indent=1, sort_keys=True, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class CellStore:
    """One JSON record per cell under ``<root>/cells``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.dir = self.root / CELLS_DIR

    def record_path(self, cell: Cell) -> Path:
        return self.dir / f"{cell.cell_id}.json"

    def run_dir(self, cell: Cell) -> Path:
        return self.dir / cell.cell_id

    def load(self, cell: Cell) -> dict | None:
        """The stored record, or None when absent or unreadable (a torn file is treated as not run)."""
        path = self.record_path(cell)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def is_done(self, cell: Cell, retry_failed: bool = True) -> bool:
        record = self.load(cell)
        if record is None or record.get("fingerprint") != cell.fingerprint:
            return False
        return record.get("status") == "ok" or (record.get("status") == "failed" and not retry_failed)

    def write(self, cell: Cell, record: dict) -> None:
        atomic_write_json(self.record_path(cell), record)

    def records(self, cells: Sequence[Cell]) -> list[dict]:
        """Current records of ``cells`` (stale or missing ones omitted)."""
        out = []
        for cell in cells:
            record = self.load(cell)
            if record is not None and record.get("fingerprint") == cell.fingerprint:
                out.append(record)
        return out


def cell_overrides(cell: Cell, run_dir: Path) -> list[str]:
    """The ``DownstreamConfig`` overrides of one cell.

    Order: ``progress=false`` (the runner prints one line per cell; a config may turn it back on), then the
    benchmark/task/method overrides, then the cell's own keys, which always win.
    """
    keys = [
        f"task={cell.task_key or cell.task}",
        f"method={cell.method_key}",
        f"weights={cell.weights_source}",
        f"weights_name={cell.weights}",
        f"seed={cell.seed}",
        f"output_dir={run_dir}",
    ]
    if cell.shot:
        keys.append(f"shot={cell.shot}")
    if cell.fraction < 1.0:
        keys.append(f"fraction={cell.fraction}")
    return ["progress=false", *cell.overrides, *keys]


def _default_run_fn(base_config: str, overrides: list[str]) -> dict:
    """Builds the run config and runs one experiment, through the pipeline's task-family tables.

    The family is ``segmentation`` when :func:`downstream.registry.is_segmentation` says so for the cell's method
    and task, else ``classification``; :data:`downstream.pipeline.CONFIGS` gives its config class
    (``DownstreamConfig`` / ``SegmentationConfig``) and :data:`downstream.pipeline.RUNNERS` its run function
    (``run_experiment`` / ``run_segmentation``). Both are lazy registry entries, so MONAI loads only in a process
    that runs a segmentation cell.
    """
    keys = dict(o.split("=", 1) for o in overrides)
    family = "segmentation" if is_segmentation(keys.get("method", ""), keys.get("task", "")) else "classification"
    return RUNNERS.get(family)(load_config(CONFIGS.get(family), resolve_path(base_config), overrides))


def resolve_path(path: str) -> Path | None:
    """A config path as given, or relative to the repository root when it does not exist from the cwd."""
    if not path:
        return None
    candidate = Path(path)
    if candidate.exists() or candidate.is_absolute():
        return candidate
    repo_relative = Path(__file__).resolve().parents[2] / candidate
    return repo_relative if repo_relative.exists() else candidate


def execute_cell(
    cell: Cell,
    base_config: str,
    store_root: str,
    run_fn: Callable[[str, list[str]], dict] | None = None,
) -> dict:
    """Runs one cell and returns its record; never raises for a failing experiment.

    Args:
        cell: The cell.
        base_config: Base DownstreamConfig YAML ("" for defaults).
        store_root: Benchmark output dir (the cell runs in ``cells/<cell_id>/``).
        run_fn: ``(base_config, overrides) -> result dict``; default :func:`_default_run_fn`.

    Returns:
        ``{cell, fingerprint, status, seconds, result | error + traceback}``.
    """
    store = CellStore(store_root)
    run_dir = store.run_dir(cell)
    base_config = cell.base_config or base_config
    overrides = cell_overrides(cell, run_dir)
    record: dict[str, Any] = {
        "cell": cell.as_row(),
        "fingerprint": cell.fingerprint,
        "overrides": overrides,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    start = time.perf_counter()
    try:
        result = (run_fn or _default_run_fn)(base_config, overrides)
        if not isinstance(result, dict):
            raise TypeError(f"run_experiment returned {type(result).__name__}, expected a dict")
        status = str(result.get("status", "ok"))
        record["status"] = "ok" if status in ("ok", "done", "success") else "failed"
        if record["status"] == "failed":
            record["error"] = str(result.get("error") or f"experiment reported status {status!r}")
            error_file = run_dir / "error.txt"  # run_experiment records its own traceback there
            if error_file.is_file():
                record["traceback"] = error_file.read_text()[-20000:]
        record["result"] = result
    except Exception as err:  # a failed cell is data, not a crash of the matrix
        record["status"] = "failed"
        record["error"] = f"{type(err).__name__}: {err}"
        record["traceback"] = traceback.format_exc()
    record["seconds"] = round(time.perf_counter() - start, 3)
    return record


def _init_worker(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def _describe(record: dict, metric_of: Callable[[dict], float | None]) -> str:
    if record["status"] != "ok":
        return f"FAILED ({record.get('error', '?')[:120]})"
    value = metric_of(record)
    shown = "n/a" if value is None else f"{value:.4f}"
    return f"ok {shown}"


def run_cells(
    cfg: BenchmarkConfig,
    cells: Sequence[Cell],
    progress: Progress = print,
    run_fn: Callable[[str, list[str]], dict] | None = None,
    metric_of: Callable[[dict], float | None] | None = None,
) -> dict[str, int]:
    """Runs every cell that is not done yet; returns counts ``{total, skipped, ok, failed}``.

    Args:
        cfg: Benchmark config (output_dir, workers, threads, retry_failed, base_config).
        cells: The expanded matrix.
        progress: Receives one line per cell.
        run_fn: Replaces the downstream call (used by tools that wrap other runners); must be picklable for
            ``workers > 1``.
        metric_of: Extracts the headline metric from a record, for the progress line.
    """
    store = CellStore(cfg.output_dir)
    metric_of = metric_of or (lambda _record: None)
    todo = [c for c in cells if not store.is_done(c, cfg.retry_failed)]
    counts = {"total": len(cells), "skipped": len(cells) - len(todo), "ok": 0, "failed": 0}
    if counts["skipped"]:
        progress(f"resume: {counts['skipped']}/{len(cells)} cells already done, {len(todo)} to run")
    start = time.perf_counter()

    def finish(index: int, cell: Cell, record: dict) -> None:
        store.write(cell, record)
        counts[record["status"] if record["status"] in ("ok", "failed") else "failed"] += 1
        done = counts["ok"] + counts["failed"]
        elapsed = time.perf_counter() - start
        eta = elapsed / done * (len(todo) - done)
        progress(
            f"[{done}/{len(todo)}] {cell.cell_id}: {_describe(record, metric_of)} "
            f"({record['seconds']:.1f}s, eta {eta:.0f}s)"
        )

    threads = cfg.threads_per_worker or max(1, (os.cpu_count() or 1) // cfg.workers)
    if cfg.workers == 1 or len(todo) <= 1:
        for index, cell in enumerate(todo):
            finish(index, cell, execute_cell(cell, cfg.base_config, cfg.output_dir, run_fn))
        return counts

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=cfg.workers, mp_context=context, initializer=_init_worker, initargs=(threads,)
    ) as pool:
        futures = {
            pool.submit(execute_cell, cell, cfg.base_config, cfg.output_dir, run_fn): (i, cell)
            for i, cell in enumerate(todo)
        }
        for future in as_completed(futures):
            index, cell = futures[future]
            try:
                record = future.result()
            except BrokenProcessPool as err:  # a worker died (e.g. out of memory): record and go on
                record = {
                    "cell": cell.as_row(),
                    "fingerprint": cell.fingerprint,
                    "status": "failed",
                    "error": f"worker process died: {err}",
                    "seconds": 0.0,
                }
            finish(index, cell, record)
    return counts
