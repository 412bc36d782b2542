"""``python -m downstream --config configs/downstream/<task>.yaml method=<key> weights=<source> [key=value ...]``.

Segmentation tasks and methods (``seg-*``, ``mask-guided``) are handed to ``python -m downstream.segmentation``,
whose schema differs (``unet.*``, ``prompt.*``, ``centers.*``).

Runs ``run_experiment`` once per seed in ``seeds`` (``seed=<n>`` on the command line runs that seed only), each in
``<output_dir>/<task>/<method>/<weights>/seed<n>``, prints a table with mean ± std over seeds, and writes
``summary.json``. ``--eval DIR`` reloads a finished run's delta checkpoint and re-evaluates it on its test split.
Exits non-zero when any run failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from downstream.config import DownstreamConfig
from downstream.metrics import METRIC_NAMES
from downstream.stats import mean_std
from lvmmed.config import ConfigError, load_config


def run_dir(cfg: DownstreamConfig, seed: int) -> Path:
    weights = Path(cfg.weights_name or cfg.weights).name or "weights"
    sub = f"shot{cfg.shot}" if cfg.shot else f"frac{cfg.fraction:g}" if cfg.fraction < 1 else "full"
    return Path(cfg.output_dir) / cfg.task / cfg.method / weights / sub / f"seed{seed}"


def _reevaluate(directory: Path) -> int:
    import numpy as np

    from downstream.run import evaluate_split, load_delta, prepare_inputs
    from downstream.runtime import resolve_device
    from downstream.splits import load_splits
    from downstream.tasks import load_task

    cfg = load_config(DownstreamConfig, directory / "config.yaml")
    method = load_delta(directory, cfg)
    data = load_task(cfg.task, cfg.data_root, cfg.patch_size, cfg.patch_stride, cfg.max_per_class)
    test = load_splits(directory / "splits.json")["test"]
    device = resolve_device(cfg.device)
    res = evaluate_split(
        method.to(device), prepare_inputs(data.images[test], cfg, device), np.asarray(data.labels[test]), cfg
    )
    print(json.dumps(res["metrics"], indent=1))
    return 0


def _method_and_task(config: Path | None, overrides: list[str]) -> tuple[str, str]:
    """Peeks at ``method`` and ``task`` (YAML, then overrides) to pick the classification or segmentation schema."""
    import yaml

    values = yaml.safe_load(config.read_text()) if config is not None and config.is_file() else {}
    values = values if isinstance(values, dict) else {}
    for item in overrides:
        key, _, value = item.partition("=")
        if key in ("method", "task"):
            values[key] = value
    return str(values.get("method", "")), str(values.get("task", ""))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m downstream", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--print-config", action="store_true")
    parser.add_argument("--eval", type=Path, default=None, help="re-evaluate a finished run directory")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.eval:
        return _reevaluate(args.eval)
    from downstream.registry import is_segmentation

    if is_segmentation(*_method_and_task(args.config, args.overrides)):
        from downstream.segmentation.__main__ import main as segmentation_main

        return segmentation_main(argv)
    try:
        cfg = load_config(DownstreamConfig, args.config, args.overrides)
    except ConfigError as err:
        parser.error(str(err))
    if args.print_config:
        from lvmmed.config import to_yaml

        print(to_yaml(cfg))
        return 0
    seeds = [cfg.seed] if any(o.startswith("seed=") for o in args.overrides) else list(cfg.seeds)
    from downstream.run import run_experiment

    results = []
    for seed in seeds:
        cell = dataclasses.replace(cfg, seed=seed, output_dir=str(run_dir(cfg, seed)))
        res = run_experiment(cell)
        results.append(res)
        status = res["status"] if res["status"] != "ok" else f"acc={res['metrics']['accuracy']:.3f}"
        print(f"seed {seed}: {status} ({res['seconds']:.1f}s) -> {cell.output_dir}", flush=True)
    ok = [r for r in results if r["status"] == "ok"]
    summary = {"task": cfg.task, "method": cfg.method, "weights": cfg.weights, "seeds": seeds, "runs": len(results),
               "failed": len(results) - len(ok), "params": ok[0]["params"] if ok else None}  # fmt: skip
    print(f"\n{cfg.task} | {cfg.method} | {cfg.weights} | {len(ok)}/{len(results)} seeds ok")
    for m in METRIC_NAMES:
        mean, std = mean_std([r["metrics"][m] for r in ok])
        summary[m] = {"mean": mean, "std": std}
        print(f"  {m:<18} {mean:.4f} ± {std:.4f}")
    if ok:
        p = ok[0]["params"]
        print(f"  trainable params   {p['trainable']:,} / {p['total']:,} ({p['trainable_pct']:.3f}%)")
    out = run_dir(cfg, seeds[0]).parent / "summary.json"
    out.write_text(json.dumps(summary, indent=1, default=float))
    return 0 if len(ok) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
