"""``python -m downstream [--config FILE] task=<task | shards:DIR> method=<key> weights=<source> [key=value ...]``.

``python -m downstream list-tasks`` lists the bundled tasks and how to use any shard set. A ``shards:<dir>`` task
needs no config file (the defaults fit a 2-D set); its kind (classification, multi-label, segmentation) is read
from the samples. Segmentation tasks and methods (``seg-*``, ``mask-guided``) are handed to
``python -m downstream.segmentation``, whose schema differs (``unet.*``, ``prompt.*``, ``centers.*``).

The method key and the task are checked before anything is loaded or written. Runs ``run_experiment`` once per
seed in ``seeds`` (``seed=<n>`` on the command line runs that seed only), each in
``<output_dir>/<task>/<method>/<weights>/<setting>/seed<n>``, prints mean ± std over seeds, and writes
``summary.json``. ``--eval DIR`` reloads a finished run's delta checkpoint and re-evaluates it on its test split.
Exit status: 0 ok, 1 when a run failed, 2 for a usage or config error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from downstream.config import DownstreamConfig
from downstream.inputs import adapt_images, input_spec_of
from downstream.metrics import METRIC_NAMES
from downstream.multilabel import MULTILABEL_METRICS
from downstream.registry import is_segmentation, method_task, resolve_key
from downstream.run import evaluate_split, load_delta, load_task_of, run_experiment
from downstream.runtime import resolve_device, strict_json_text
from downstream.segmentation.__main__ import main as segmentation_main
from downstream.segmentation.tasks import TASKS as SEGMENTATION_TASKS
from downstream.shard_tasks import detect_kind, is_shard_task, shard_dir, task_label
from downstream.splits import load_splits
from downstream.tasks import TASKS, TaskDataError
from lvmmed.config import ConfigError, load_config, to_yaml
from lvmmed.errors import EXIT_CODES_HELP, format_error
from lvmmed.stats import mean_std


def run_dir(cfg: DownstreamConfig, seed: int) -> Path:
    weights = Path((cfg.weights_name or cfg.weights).partition("=")[0]).name or "weights"
    sub = f"shot{cfg.shot}" if cfg.shot else f"frac{cfg.fraction:g}" if cfg.fraction < 1 else "full"
    return Path(cfg.output_dir) / task_label(cfg.task) / cfg.method / weights / sub / f"seed{seed}"


def list_tasks_text() -> str:
    """The ``list-tasks`` text: bundled classification and segmentation tasks, then how to add a shard set."""
    lines = ["Bundled classification tasks (python -m data_prep bundled --out runs/shards builds their shard sets):"]
    for name, spec in sorted(TASKS.items()):
        needs = f" [needs {spec.requires}]" if spec.requires else ""
        lines.append(f"  {name:<20} shard set {spec.shard_set:<16} {spec.description}{needs}")
    lines.append("Bundled segmentation tasks (method=seg-unet, seg-prompt-*, mask-guided):")
    for name, seg in sorted(SEGMENTATION_TASKS.items()):
        needs = f" [needs {seg.requires}]" if seg.requires else ""
        lines.append(f"  {name:<20} shard set {seg.shard_set:<16} {seg.description}{needs}")
    lines += [
        "Your own data: any shard set written by data_prep is a task, task=shards:<dir>:",
        "  python -m data_prep convert --format images --src <folder> --out <dir> [--labels labels.csv]",
        "  python -m downstream task=shards:<dir> method=linear weights=random backbone=resnet18",
        "  The kind comes from the samples: meta.label -> classification, meta.labels -> multi-label,",
        "  mask.npy -> segmentation (use method=seg-unet); task_kind=... chooses one. Splits: split_mode=shard",
        "  (the set's patient split), official (meta.official_split), group (fresh patient split per seed).",
        "  OOD test set: ood_shards=<another dir> or ood_center=<meta.center value>.",
    ]
    return "\n".join(lines)


def _reevaluate(directory: Path) -> int:
    import numpy as np

    cfg = load_config(DownstreamConfig, directory / "config.yaml")
    method = load_delta(directory, cfg)
    data = load_task_of(cfg)
    if data.multilabel:
        raise SystemExit("--eval re-evaluates single-label runs; multi-label thresholds live in result.json")
    test = load_splits(directory / "splits.json")["test"]
    device = resolve_device(cfg.device)
    x = adapt_images(data.images[test], input_spec_of(method, cfg), device)
    res = evaluate_split(method.to(device), x, np.asarray(data.labels[test]), cfg)
    print(json.dumps(res["metrics"], indent=1))
    return 0


def _peek(config: Path | None, overrides: list[str]) -> dict[str, str]:
    """``method``, ``task`` and ``task_kind`` from the YAML and the overrides (to pick the schema)."""
    import yaml

    values = yaml.safe_load(config.read_text()) if config is not None and config.is_file() else {}
    values = values if isinstance(values, dict) else {}
    for item in overrides:
        key, _, value = item.partition("=")
        if key in ("method", "task", "task_kind"):
            values[key] = value
    return {k: str(values.get(k, "")) for k in ("method", "task", "task_kind")}


def check_task_and_method(task: str, method: str, task_kind: str = "auto") -> str:
    """Checks the method key and that the task fits it, before any data loads; returns the task family.

    Raises:
        ValueError: Unknown method key, or a task of the other family (message says what to use instead).
    """
    try:
        resolve_key(method)
    except KeyError as err:
        raise ValueError(str(err.args[0])) from None
    family = "segmentation" if is_segmentation(method, task) else "classification"
    if family == "segmentation" and method_task(method) != "segmentation":
        raise ValueError(f"task {task!r} is a segmentation task; method {method!r} is not (use seg-unet)")
    if is_shard_task(task):
        kind = detect_kind(shard_dir(task), task_kind or "auto")
        if (kind == "segmentation") != (family == "segmentation"):
            hint = "a segmentation method such as seg-unet" if kind == "segmentation" else "a classification method"
            raise ValueError(f"{task_label(task)} is a {kind} shard set; method {method!r} is a {family} method: "
                             f"use {hint}")  # fmt: skip
    return family


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["list-tasks"]:
        print(list_tasks_text())
        return 0

    parser = argparse.ArgumentParser(
        prog="python -m downstream", description=__doc__.split("\n")[0], epilog=EXIT_CODES_HELP
    )
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--print-config", action="store_true")
    parser.add_argument("--eval", type=Path, default=None, help="re-evaluate a finished run directory")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.eval:
        return _reevaluate(args.eval)

    peek = _peek(args.config, args.overrides)
    try:
        family = check_task_and_method(peek["task"] or DownstreamConfig.task, peek["method"] or "linear",
                                       peek["task_kind"])  # fmt: skip
    except (ValueError, TaskDataError) as err:
        parser.error(str(err))
    if family == "segmentation":
        return segmentation_main([*(["--config", str(args.config)] if args.config else []), *args.overrides])
    try:
        cfg = load_config(DownstreamConfig, args.config, args.overrides)
    except (ConfigError, ValueError) as err:
        parser.error(str(err))
    if args.print_config:
        print(to_yaml(cfg))
        return 0
    return run_seeds(cfg, explicit_seed=any(o.startswith("seed=") for o in args.overrides))


def run_seeds(cfg: DownstreamConfig, explicit_seed: bool = False) -> int:
    """One ``run_experiment`` per seed, a mean ± std table and ``summary.json``; 1 when a run failed."""
    seeds = [cfg.seed] if explicit_seed else list(cfg.seeds)
    results = []
    for seed in seeds:
        cell = dataclasses.replace(cfg, seed=seed, output_dir=str(run_dir(cfg, seed)))
        res = run_experiment(cell)
        results.append(res)
        headline = res.get("headline_metric", "accuracy")
        status = res["status"] if res["status"] != "ok" else f"{headline}={res['metrics'][headline]:.3f}"
        print(f"seed {seed}: {status} ({res['seconds']:.1f}s) -> {cell.output_dir}", flush=True)
        if res["status"] != "ok":
            print(f"  error: {res['error']}", flush=True)
    ok = [r for r in results if r["status"] == "ok"]
    names = MULTILABEL_METRICS if ok and ok[0].get("task_kind") == "multilabel" else METRIC_NAMES
    summary = {"task": cfg.task, "method": cfg.method, "weights": cfg.weights, "seeds": seeds, "runs": len(results),
               "failed": len(results) - len(ok), "params": ok[0]["params"] if ok else None,
               "task_kind": ok[0].get("task_kind") if ok else None}  # fmt: skip
    print(f"\n{task_label(cfg.task)} | {cfg.method} | {cfg.weights} | {len(ok)}/{len(results)} seeds ok")
    for m in names if ok else ():  # no table of nan ± nan when every run failed
        mean, std = mean_std([r["metrics"][m] for r in ok])
        summary[m] = {"mean": mean, "std": std}
        print(f"  {m:<18} {mean:.4f} ± {std:.4f}")
    if ok and ok[0].get("per_label"):
        for label in ok[0]["per_label"]["auroc_per_label"]:
            mean, std = mean_std([r["per_label"]["auroc_per_label"][label] for r in ok])
            summary.setdefault("auroc_per_label", {})[label] = {"mean": mean, "std": std}
            print(f"  auroc[{label}]{'':<{max(0, 11 - len(label))}} {mean:.4f} ± {std:.4f}")
    if ok:
        p = ok[0]["params"]
        print(f"  trainable params   {p['trainable']:,} / {p['total']:,} ({p['trainable_pct']:.3f}%)")
    out = run_dir(cfg, seeds[0]).parent / "summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(strict_json_text(summary))
    failed = [r for r in results if r["status"] != "ok"]
    if failed:  # the error contract's one line, last on stderr
        first = failed[0]
        fix = first.get("fix") or f"see {first['output_dir']}/error.txt for the traceback"
        message = f"{len(failed)} of {len(results)} runs failed; seed {first['seed']}: {first['error']}"
        print(format_error("python -m downstream", message, fix), file=sys.stderr, flush=True)
    return 0 if not failed else 1


if __name__ == "__main__":
    from lvmmed.errors import run_cli

    raise SystemExit(run_cli(main, prog="python -m downstream"))
