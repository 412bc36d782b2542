"""The conversion engine: a process pool over input tasks, ordered atomic writing, failure report, manifest.

A :class:`~data_prep.tasks.Task` is one input unit (a DICOM file or series, a NIfTI volume, a 2-D image, a
bundled template). Its ``processor`` names a function ``"module:function"`` that returns encoded samples. With
``workers <= 1`` the tasks run here (:func:`~data_prep.tasks.run_one`) and :class:`~data_prep.writer.ShardSetWriter`
streams their samples into the shards; with a pool they run in worker processes that also write their samples
into the shards (:mod:`data_prep.pool_writer`). Either way the samples are placed in task order, so shards are
deterministic, byte-identical between the two modes and resumable. A failing task is recorded in
``failures.json`` with its relative path and reason and the run goes on; the caller decides the exit status from
:attr:`RunResult.failure_fraction`.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lvmmed.config import ConfigError
from lvmmed.data.shards import MANIFEST_NAME

from .manifest import build_manifest, write_failures, write_manifest
from .patient_split import assign_splits
from .pool_writer import write_pooled
from .tasks import Task, run_one
from .writer import ShardSetWriter, read_journal

ERROR_KINDS = ("error", "missing_mask")  # failure kinds that count against max_failure_fraction


@dataclass
class RunResult:
    """What a conversion produced."""

    root: Path
    manifest: dict[str, Any]
    failures: list[dict[str, str]]
    n_tasks: int  # input files (a task holds one file, or every file of a DICOM series; a volume cut into axis tasks
    # is one file)
    written: int
    resumed: int
    seconds: float
    already_complete: bool = False
    failed_files: int | None = None  # input files lost; None: one per error entry

    @property
    def errors(self) -> list[dict[str, str]]:
        return [f for f in self.failures if f.get("kind") in ERROR_KINDS]

    @property
    def failure_fraction(self) -> float:
        """Input files lost / input files: a series whose every slice failed counts all its files, one corrupt slice
        of a 500-slice series counts one (not a whole task, as when the denominator counted series)."""
        failed = len(self.errors) if self.failed_files is None else self.failed_files
        return min(1.0, failed / max(self.n_tasks, 1))


def _pool_context(tasks: list[Task], start_method: str):
    # auto = fork (cheapest start; the workers never run torch ops, whose OpenMP pool is not fork-safe once used),
    # spawn where fork does not exist. forkserver/spawn are available for embedding in torch-heavy processes.
    method = start_method if start_method != "auto" else ("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    ctx = mp.get_context(method)
    if method == "forkserver":
        modules = {"data_prep.pool_writer", *(t.processor.split(":")[0] for t in tasks)}
        ctx.set_forkserver_preload(sorted(modules))
    return ctx


def _write_tasks(
    tasks: list[Task], cfg: dict[str, Any], workers: int, writer: ShardSetWriter, on_result: Callable[..., None]
) -> list[dict[str, Any]]:
    """Runs every task, writes its samples in task order, calls ``on_result(index, n_samples, failures)`` per task
    in task order; returns the completed shard records (:meth:`ShardSetWriter.close`)."""
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            index, samples, failures = run_one((task, cfg))
            for sample in samples:
                writer.write(sample)
            on_result(index, len(samples), failures)
        return writer.close()
    n_workers = min(workers, len(tasks))
    ctx = _pool_context(tasks, cfg.get("start_method", "auto"))
    return write_pooled(ctx, n_workers, tasks, cfg, writer, on_result, window=2 * n_workers)


_NOT_IN_FINGERPRINT = ("workers", "max_failure_fraction", "start_method")  # do not change the shards


def fingerprint(cfg: dict[str, Any], tasks: list[Task], extra: Any = None) -> str:
    """Hash of the config, the task list and the input sizes: equal fingerprints make a run resumable."""
    output_cfg = {k: v for k, v in cfg.items() if k not in _NOT_IN_FINGERPRINT}
    digest = hashlib.sha256(json.dumps(output_cfg, sort_keys=True, default=str).encode())
    for t in tasks:
        sizes = [Path(p).stat().st_size if Path(p).is_file() else -1 for p in t.paths]
        digest.update(json.dumps([t.index, t.processor, t.display, t.params, t.splits, sizes], default=str).encode())
    digest.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def run_tasks(
    tasks: list[Task],
    cfg: dict[str, Any],
    out: str | Path,
    *,
    name: str,
    source: str,
    modality: str | list[str],
    label_names: list[str] | None = None,
    mask_labels: list[str] | None = None,
    workers: int = 2,
    overwrite: bool = False,
    progress: bool = True,
    extra_manifest: dict[str, Any] | None = None,
) -> RunResult:
    """Converts ``tasks`` into a shard set at ``out``.

    Args:
        tasks: Planned inputs (sorted; ``groups`` set).
        cfg: Resolved config as a plain dict (``shard_maxcount``, ``shard_maxsize``, ``split_fractions``,
            ``split_method`` are read here; the whole dict is passed to processors and saved in the manifest).
        out: Output directory.
        name, source, modality, label_names, mask_labels: Manifest fields.
        workers: Worker processes (<= 1: in-process).
        overwrite: Discard a previous (different) run in ``out`` instead of resuming / refusing.
        progress: Show a tqdm bar on stderr.
        extra_manifest: Extra manifest keys (notes, caveats).

    Returns:
        A :class:`RunResult`; the manifest is written even when some inputs failed.
    """
    from tqdm import tqdm

    start = time.perf_counter()
    out = Path(out)
    if cfg["split_method"] == "official":
        split_of = official_splits(tasks, cfg["split_fractions"])
    else:
        split_of = assign_splits([g for t in tasks for g in t.groups], cfg["split_fractions"], cfg["split_method"])
    for t in tasks:
        t.splits = {g: split_of[g] for g in t.groups}
    fp = fingerprint(cfg, tasks, [name, source, modality, label_names, mask_labels])
    manifest_file = out / MANIFEST_NAME
    journal = read_journal(out) if out.is_dir() else None
    if not overwrite and manifest_file.is_file() and journal and journal.get("fingerprint") == fp:
        manifest = json.loads(manifest_file.read_text())
        if manifest.get("fingerprint") == fp:
            failures = json.loads((out / "failures.json").read_text()) if (out / "failures.json").is_file() else []
            return RunResult(
                out, manifest, failures, n_tasks=manifest.get("input_files", len(tasks)), written=0,
                resumed=manifest["counts"]["total"], seconds=0.0, already_complete=True,
                failed_files=manifest.get("failed_files"),  # the fraction the run that wrote the set reported
            )  # fmt: skip
    if manifest_file.is_file():
        manifest_file.unlink()  # the set is incomplete again until this run writes a new manifest
    writer = ShardSetWriter(out, fp, int(cfg["shard_maxcount"]), float(cfg["shard_maxsize"]), overwrite=overwrite)
    failures: list[dict[str, str]] = []
    failed_files, files_of = 0, {t.index: max(1, len(t.paths)) for t in tasks}
    # A volume cut into axis tasks (data_prep.plan_volumes) is one input file: counted by its first task, lost once.
    axis_source = {t.index: t.params["source_index"] for t in tasks if "axis_rank" in t.params}
    n_inputs = sum(files_of[t.index] for t in tasks if not t.params.get("axis_rank", 0))
    lost_sources: set[int] = set()
    bar = tqdm(total=len(tasks), desc=f"data_prep {name}", unit="file", disable=not progress, leave=False)

    def on_result(index: int, n_samples: int, task_failures: list[dict[str, str]]) -> None:
        nonlocal failed_files
        failures.extend(task_failures)
        n_errors = sum(1 for f in task_failures if f.get("kind") in ERROR_KINDS)
        if not (n_errors and not n_samples):
            failed_files += n_errors
        elif axis_source.get(index) not in lost_sources:
            failed_files += files_of.get(index, 1)
            if index in axis_source:
                lost_sources.add(axis_source[index])
        bar.update(1)

    try:
        shards = _write_tasks(tasks, cfg, workers, writer, on_result)
    except BaseException:  # interrupted / crashed: keep completed shards for resume, never finish partial ones
        writer.abort()
        raise
    finally:
        bar.close()
    write_failures(out, failures)
    n_errors = sum(1 for f in failures if f["kind"] in ERROR_KINDS)
    extra = {"fingerprint": fp, "skipped": len(failures) - n_errors, "input_files": n_inputs,
             "failed_files": failed_files, **(extra_manifest or {})}  # fmt: skip
    manifest = build_manifest(
        name, shards, cfg, source, modality, label_names, mask_labels, failures=n_errors, extra=extra
    )
    write_manifest(out, manifest)
    written = sum(writer.written.values())
    return RunResult(
        out, manifest, failures, n_tasks=n_inputs, written=written, resumed=writer.resumed,
        seconds=time.perf_counter() - start, failed_files=failed_files,
    )  # fmt: skip


def official_splits(tasks: list[Task], fractions: list[float]) -> dict[str, str]:
    """``{group: split}`` from the release's official split (``params["official_split"]`` of every task).

    Official test and val stay as they are. When the release has no val split, val is cut from the official
    train groups by rank (:func:`~data_prep.patient_split.assign_splits`) at ``val / (train + val)``.

    Raises:
        ConfigError: a task without an official split, or a patient the release puts in two official splits.
    """
    official: dict[str, str] = {}
    conflicts = set()
    for t in tasks:
        split = t.params.get("official_split")
        if split is None:
            raise ConfigError(f"split_method=official: {t.display} has no official split (use rank or threshold)")
        for g in t.groups:
            if official.setdefault(g, split) != split:
                conflicts.add(g)
    if conflicts:
        raise ConfigError(f"split_method=official: {len(conflicts)} patients are in more than one official split; "
                          "use split_method=rank to keep every patient in one split")  # fmt: skip
    out = dict(official)
    if "val" not in official.values():
        train = [g for g, s in official.items() if s == "train"]
        out.update(assign_splits(train, [fractions[0], fractions[1], 0.0], "rank"))
    return out


def task_dict(task: Task) -> dict[str, Any]:
    """JSON-safe view of a task (debugging; contains local paths, never write it into a shard set)."""
    return asdict(task)
