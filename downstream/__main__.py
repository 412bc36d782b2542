"""``python -m downstream [--config FILE] task=<task | shards:DIR> method=<key> weights=<source> [key=value ...]``.

One command for both task families. The method's declared task (:mod:`downstream.contract`; a bundled
segmentation task or a mask shard set when no method is given) picks the config: ``DownstreamConfig`` for
classification and multi-label methods, ``SegmentationConfig`` for ``seg-*``, ``mask-guided`` and registered
segmentation methods (``unet.*``, ``prompt.*``, ``centers.*``...). ``python -m downstream list-tasks`` lists the
bundled tasks and how to use any shard set; a ``shards:<dir>`` task needs no config file (its kind is read from
the samples).

The method key and the task are checked before anything is loaded or written. Runs one seed after the other
(:func:`downstream.pipeline.run_seeds`; ``seed=<n>`` on the command line, or ``--single``, runs that seed only),
each in ``<output_dir>/<task>/<method>/<weights>/<setting>/seed<n>``, prints mean ± std over seeds, and writes
``summary.json`` next to the seed directories (one schema for both families). ``--eval DIR`` reloads a finished
run's delta checkpoint and re-evaluates it on its test split. ``python -m downstream.segmentation`` is this
command (kept for existing scripts). Exit status: 0 ok, 1 when a run failed, 2 for a usage or config error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml

from downstream.pipeline import CONFIGS, RUNNERS, reevaluate, run_seeds
from downstream.registry import is_segmentation, method_task
from downstream.runtime import strict_json_text
from downstream.segmentation.tasks import TASKS as SEGMENTATION_TASKS
from downstream.shard_tasks import detect_kind, is_shard_task, shard_dir, task_label
from downstream.tasks import TASKS, TaskDataError
from lvmmed.config import ConfigError, load_config, to_yaml
from lvmmed.errors import EXIT_CODES_HELP, run_cli


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


def _peek(config: Path | None, overrides: list[str]) -> dict[str, str]:
    """``method``, ``task`` and ``task_kind`` from the YAML and the overrides (to pick the schema)."""
    values = yaml.safe_load(config.read_text()) if config is not None and config.is_file() else {}
    values = values if isinstance(values, dict) else {}
    for item in overrides:
        key, _, value = item.partition("=")
        if key in ("method", "task", "task_kind"):
            values[key] = value
    return {k: str(values.get(k, "")) for k in ("method", "task", "task_kind")}


def check_task_and_method(task: str, method: str, task_kind: str = "auto", default: str = "classification") -> str:
    """Checks the method key and that the task fits it, before any data loads; returns the task family.

    Args:
        task: The task ("" = the family's default task).
        method: The method key ("" = the family's default method; the family then comes from the task).
        task_kind: The ``task_kind`` of a ``shards:`` task.
        default: The family when neither a method nor a segmentation task says otherwise.

    Raises:
        ValueError: Unknown method key (the message names the closest one), or a task of the other family (the
            message says what to use instead).
    """
    if method:
        family = method_task(method)
    else:
        family = "segmentation" if task and is_segmentation("", task) else "classification" if task else default
    task = task or CONFIGS.get(family).task
    method = method or CONFIGS.get(family).method
    if family == "classification" and is_segmentation("", task):
        raise ValueError(f"task {task!r} is a segmentation task; method {method!r} is not (use seg-unet)")
    if family == "segmentation" and not is_shard_task(task) and not is_segmentation("", task):
        raise ValueError(f"task {task!r} is a classification task; method {method!r} is a segmentation method "
                         "(use a segmentation task such as seg_tissue; python -m downstream list-tasks)")  # fmt: skip
    if is_shard_task(task):
        kind = detect_kind(shard_dir(task), task_kind or "auto")
        if (kind == "segmentation") != (family == "segmentation"):
            hint = "a segmentation method such as seg-unet" if kind == "segmentation" else "a classification method"
            raise ValueError(f"{task_label(task)} is a {kind} shard set; method {method!r} is a {family} method: "
                             f"use {hint}")  # fmt: skip
    return family


def main(argv: list[str] | None = None, prog: str = "python -m downstream", default: str = "classification") -> int:
    """The CLI; ``default`` is the family of a command line that names neither a method nor a task."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["list-tasks"]:
        print(list_tasks_text())
        return 0
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0], epilog=EXIT_CODES_HELP)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--print-config", action="store_true")
    parser.add_argument("--eval", type=Path, default=None, help="re-evaluate a finished run directory")
    parser.add_argument("--single", action="store_true", help="run the config's seed only (as seed=<n> does)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args(argv)  # flags anywhere: key=value --single key=value
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.eval:
        try:
            metrics = reevaluate(args.eval)
        except (ConfigError, ValueError, FileNotFoundError) as err:  # not a run dir, or one --eval cannot re-test
            parser.error(str(err))
        print(strict_json_text(metrics))
        return 0
    peek = _peek(args.config, args.overrides)
    try:
        family = check_task_and_method(peek["task"], peek["method"], peek["task_kind"], default)
        cfg = load_config(CONFIGS.get(family), args.config, args.overrides)
    except (ConfigError, ValueError, TaskDataError) as err:
        parser.error(str(err))
    if args.print_config:
        print(to_yaml(cfg))
        return 0
    explicit_seed = args.single or any(o.startswith("seed=") for o in args.overrides)
    return run_seeds(cfg, RUNNERS.get(family), explicit_seed, prog)


if __name__ == "__main__":
    raise SystemExit(run_cli(main, prog="python -m downstream"))
