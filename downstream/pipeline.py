"""One downstream run pipeline for both task families: config class, seed loop, ``summary.json``, re-evaluation.

The method's declared ``task`` (:mod:`downstream.contract`) names its family; each family has a config class
(a :class:`~downstream.run_config.RunConfig`), a function that runs one seed and writes its run directory, and a
function that re-tests a finished run from its ``config.yaml`` and delta checkpoint:

=================  ============================================  ==============================================
family             config                                        run / re-evaluate
=================  ============================================  ==============================================
classification     :class:`downstream.config.DownstreamConfig`   :func:`downstream.run.run_experiment` /
                                                                 :func:`downstream.run.reevaluate`
segmentation       ``downstream.segmentation.config.``            ``downstream.segmentation.run.``
                   ``SegmentationConfig``                        ``run_segmentation`` / ``reevaluate``
=================  ============================================  ==============================================

All three are lazy :class:`lvmmed.registry.Registry` entries (the segmentation modules import MONAI).
:func:`run_seeds` runs one seed after the other, each in :meth:`RunConfig.run_dir
<downstream.run_config.RunConfig.run_dir>` (``<output_dir>/<task>/<method>/<weights>/<setting>/seed<n>``), and
writes ``summary.json`` next to the seed directories, with one schema for both families (:func:`summarise`).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from downstream.registry import method_task
from downstream.run_config import RunConfig
from downstream.runtime import strict_json_text
from downstream.shard_tasks import task_label
from lvmmed.errors import format_error
from lvmmed.registry import Registry
from lvmmed.stats import mean_std

CONFIGS: Registry[type[RunConfig]] = Registry("task family")
RUNNERS: Registry[Callable[[Any], dict[str, Any]]] = Registry("task family")
REEVALUATORS: Registry[Callable[[Path], dict[str, Any]]] = Registry("task family")
CONFIGS.register("classification", "downstream.config:DownstreamConfig")
CONFIGS.register("segmentation", "downstream.segmentation.config:SegmentationConfig")
RUNNERS.register("classification", "downstream.run:run_experiment")
RUNNERS.register("segmentation", "downstream.segmentation.run:run_segmentation")
REEVALUATORS.register("classification", "downstream.run:reevaluate")
REEVALUATORS.register("segmentation", "downstream.segmentation.run:reevaluate")


def family_of_run(directory: Path) -> str:
    """The task family of a finished run directory, from the ``method`` of its ``config.yaml``."""
    file = Path(directory) / "config.yaml"
    if not file.is_file():
        raise FileNotFoundError(f"{directory} is not a run directory: it has no config.yaml")
    values = yaml.safe_load(file.read_text()) or {}
    return method_task(str(values.get("method") or "linear"))


def reevaluate(directory: str | Path) -> dict[str, Any]:
    """Re-tests a finished run (either family) from its ``config.yaml`` and delta; returns its test metrics."""
    directory = Path(directory)
    return REEVALUATORS.get(family_of_run(directory))(directory)


def summarise(cfg: RunConfig, seeds: list[int], results: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``summary.json`` of a seed loop, the same keys for both families.

    Returns:
        ``{task, method, weights, seeds, runs, failed, params (of the first ok run), task_kind
        (classification, multilabel or segmentation), <metric>: {mean, std} for every metric of the runs'
        ``metrics`` block, auroc_per_label (multi-label only)}``; no metric entries when every run failed.
    """
    ok = [r for r in results if r["status"] == "ok"]
    summary: dict[str, Any] = {
        "task": cfg.task, "method": cfg.method, "weights": cfg.weights, "seeds": seeds, "runs": len(results),
        "failed": len(results) - len(ok), "params": ok[0].get("params") if ok else None,
        "task_kind": ok[0].get("task_kind", cfg.TASK_FAMILY) if ok else None,
    }  # fmt: skip
    names = list(dict.fromkeys(name for r in ok for name in r.get("metrics") or {}))
    for name in names:
        mean, std = mean_std([(r.get("metrics") or {}).get(name) for r in ok])
        summary[name] = {"mean": mean, "std": std}
    if ok and ok[0].get("per_label"):
        for label in ok[0]["per_label"]["auroc_per_label"]:
            mean, std = mean_std([r["per_label"]["auroc_per_label"][label] for r in ok])
            summary.setdefault("auroc_per_label", {})[label] = {"mean": mean, "std": std}
    return summary


def _seed_line(seed: int, result: dict[str, Any]) -> str:
    metrics = result.get("metrics") or {}
    headline = result.get("headline_metric") or next(iter(metrics), "")
    value = metrics.get(headline)
    status = result["status"] if result["status"] != "ok" or value is None else f"{headline}={value:.3f}"
    return f"seed {seed}: {status} ({result['seconds']:.1f}s) -> {result['output_dir']}"


def _print_summary(summary: dict[str, Any], label: str, n_ok: int) -> None:
    print(f"\n{label} | {summary['method']} | {summary['weights']} | {n_ok}/{summary['runs']} seeds ok")
    skip = {"task", "method", "weights", "seeds", "runs", "failed", "params", "task_kind", "auroc_per_label"}
    for name, value in summary.items():
        if name not in skip:
            print(f"  {name:<18} {value['mean']:.4f} ± {value['std']:.4f}")
    for label_name, value in (summary.get("auroc_per_label") or {}).items():
        print(f"  auroc[{label_name}]{'':<{max(0, 11 - len(label_name))}} {value['mean']:.4f} ± {value['std']:.4f}")
    if summary["params"]:
        p = summary["params"]
        print(f"  trainable params   {p['trainable']:,} / {p['total']:,} ({p['trainable_pct']:.3f}%)")


def run_seeds(
    cfg: RunConfig,
    run_one: Callable[[Any], dict[str, Any]],
    explicit_seed: bool = False,
    prog: str = "python -m downstream",
) -> int:
    """One ``run_one`` per seed, a mean ± std table and ``summary.json``; returns 1 when a run failed, else 0.

    Args:
        cfg: The run config; ``seeds`` are run (``seed`` only when ``explicit_seed``), each with ``seed`` and
            ``output_dir`` set to that seed's :meth:`~downstream.run_config.RunConfig.run_dir`.
        run_one: Runs one seed's config and returns its result (``status``, ``metrics``, ``seconds``...).
        explicit_seed: ``seed=<n>`` was given on the command line.
        prog: The command named in the error contract's last line.
    """
    seeds = [cfg.seed] if explicit_seed else list(cfg.seeds)
    results = []
    for seed in seeds:
        result = run_one(dataclasses.replace(cfg, seed=seed, output_dir=str(cfg.run_dir(seed))))
        results.append(result)
        print(_seed_line(seed, result), flush=True)
        if result["status"] != "ok":
            print(f"  error: {result['error']}", flush=True)
    summary = summarise(cfg, seeds, results)
    ok = [r for r in results if r["status"] == "ok"]
    _print_summary(summary, task_label(cfg.task), len(ok))
    out = cfg.run_dir(seeds[0]).parent / "summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(strict_json_text(summary))
    failed = [r for r in results if r["status"] != "ok"]
    if failed:  # the error contract's one line, last on stderr
        first = failed[0]
        fix = first.get("fix") or f"see {first['output_dir']}/error.txt for the traceback"
        message = f"{len(failed)} of {len(results)} runs failed; seed {first['seed']}: {first['error']}"
        print(format_error(prog, message, fix), file=sys.stderr, flush=True)
    return 0 if not failed else 1
