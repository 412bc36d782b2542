"""``run_experiment(cfg)``: one downstream cell (task, method, weights, seed[, shot | fraction]) end to end.

Steps: the weights' own input settings (:func:`downstream.inputs.apply_weight_settings`) → load the task (a
bundled task of :mod:`downstream.tasks` or ``shards:<dir>``, :mod:`downstream.shard_tasks`) → split (index file
``splits.json``) → build the backbone (``lvmmed.create_backbone(backbone, in_chans, pretrained=weights,
img_size)``) and the method → adapt the images to what the method declares (:func:`downstream.inputs.
input_spec_of`) → fit (:func:`downstream.fitting.fit_method`) → test metrics with 95% bootstrap CIs (and the OOD
set's when the task has one) → ``result.json``, ``result.csv`` (one flat row), ``config.yaml``, ``splits.json`` and
the trainable delta ``delta.safetensors`` + ``delta.json`` (method key, weight reference, backbone).

Multi-label tasks (``meta.labels``) report per-label AUROC, macro AUROC, and F1 at per-label thresholds tuned on
val (:mod:`downstream.multilabel`).

Failures are recorded, not raised (:func:`downstream.runtime.recorded_run`): the result has ``status="failed"``
and ``error`` (``python -m downstream`` exits 1); a benchmark matrix therefore keeps going when one cell cannot run
(e.g. VPT on a ResNet).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from downstream import splits as splits_mod
from downstream.config import DownstreamConfig
from downstream.contract import Method
from downstream.fitting import fit_method, predict
from downstream.inputs import adapt_images, apply_weight_settings, check_cpu_cost, input_spec, input_spec_of
from downstream.metrics import METRIC_NAMES, classification_metrics
from downstream.multilabel import MULTILABEL_METRICS, multilabel_report, scalar_metrics, tune_thresholds
from downstream.registry import build_method
from downstream.runtime import build_backbone, recorded_run, resolve_device, seed_everything
from downstream.shard_tasks import is_shard_task, load_shard_task
from downstream.stats import bootstrap_ci
from downstream.tasks import TASKS, TaskData, load_task
from lvmmed.config import load_config
from lvmmed.errors import InputError


def prepare_inputs(images: np.ndarray, cfg: DownstreamConfig, device: torch.device) -> torch.Tensor:
    """[0, 1] (N, C, h, w) arrays → the run's input spec (:func:`downstream.inputs.input_spec`) on ``device``."""
    return adapt_images(images, input_spec(cfg), device)


def build_for(cfg: DownstreamConfig, num_classes: int) -> Method:
    """Backbone from the weight source (:func:`downstream.runtime.build_backbone`) + method, as the registry
    builds it."""
    return build_method(cfg.method, build_backbone(cfg), num_classes, cfg)


def load_task_of(cfg: DownstreamConfig) -> TaskData:
    """The task of a run: ``shards:<dir>`` or a bundled task."""
    if is_shard_task(cfg.task):
        return load_shard_task(cfg.task, cfg.task_kind, cfg.ood_shards, cfg.ood_center)
    if cfg.ood_shards or cfg.ood_center or cfg.task_kind not in ("auto", "classification"):
        raise ValueError("task_kind, ood_shards and ood_center apply to shards:<dir> tasks only")
    return load_task(cfg.task, cfg.data_root, cfg.patch_size, cfg.patch_stride, cfg.max_per_class, cfg.slab_width,
                     cfg.slab_gap)  # fmt: skip


def evaluate_split(
    method: Method,
    x: torch.Tensor,
    y: np.ndarray,
    cfg: DownstreamConfig,
    thresholds: np.ndarray | None = None,
    class_names: list[str] | None = None,
) -> dict[str, Any]:
    """Test metrics and bootstrap 95% CIs of ``method`` on prepared inputs ``x`` (plus the confusion matrix, or
    for a multi-label task (``thresholds`` given) the per-label AUROC/F1)."""
    if thresholds is not None:
        scores = predict(method, x, cfg, multilabel=True)
        report = multilabel_report(y, scores, thresholds, class_names)
        ci = bootstrap_ci(y, scores, n_boot=cfg.bootstrap, seed=cfg.seed,
                          metric_fn=lambda yy, pp: scalar_metrics(yy, pp, thresholds))  # fmt: skip
        per_label = {k: report[k] for k in ("auroc_per_label", "f1_per_label", "thresholds")}
        return {"n": len(y), "metrics": {k: report[k] for k in MULTILABEL_METRICS}, "per_label": per_label,
                "ci95": ci}  # fmt: skip
    probs = predict(method, x, cfg)
    full = classification_metrics(y, probs)
    return {
        "n": len(y),
        "metrics": {k: full[k] for k in METRIC_NAMES},
        "confusion": full["confusion"],
        "ci95": bootstrap_ci(y, probs, n_boot=cfg.bootstrap, seed=cfg.seed),
    }


def save_delta(method: Method, cfg: DownstreamConfig, out_dir: Path) -> Path:
    """Writes the trainable delta (safetensors) + a JSON reference to the backbone weights, atomically."""
    from safetensors.torch import save_file

    path = out_dir / "delta.safetensors"
    tmp = out_dir / "delta.safetensors.tmp"
    save_file({k: v.contiguous() for k, v in method.delta_state_dict().items()}, str(tmp))
    tmp.replace(path)
    ref = {
        "method": cfg.method,
        "backbone": cfg.backbone,
        "weights": cfg.weights,
        "in_chans": cfg.in_chans,
        "img_size": cfg.img_size,
        "num_classes": method.num_classes,
        "init_seed": cfg.seed,
        "tensors": method.declared_names,
    }
    (out_dir / "delta.json").write_text(json.dumps(ref, indent=1))
    return path


def load_delta(out_dir: str | Path, cfg: DownstreamConfig | None = None) -> Method:
    """Rebuilds a trained method from ``output_dir`` (its config.yaml) and its delta checkpoint."""
    from safetensors.torch import load_file

    out_dir = Path(out_dir)
    cfg = cfg or load_config(DownstreamConfig, out_dir / "config.yaml")
    ref = json.loads((out_dir / "delta.json").read_text())
    seed_everything(cfg.seed)  # random-init weights (and random GMoE general streams) are rebuilt from the seed
    method = build_for(cfg, ref["num_classes"])
    method.load_delta_state_dict(load_file(str(out_dir / "delta.safetensors")))
    return method.eval()


def reevaluate(directory: str | Path) -> dict[str, Any]:
    """Reloads a finished single-label run (``config.yaml`` + delta checkpoint) and returns its test metrics.

    Raises:
        ValueError: A multi-label run (its thresholds were tuned on val; ``result.json`` holds them).
    """
    directory = Path(directory)
    cfg = load_config(DownstreamConfig, directory / "config.yaml")
    method = load_delta(directory, cfg)
    data = load_task_of(cfg)
    if data.multilabel:
        raise ValueError("--eval re-evaluates single-label runs; multi-label thresholds live in result.json")
    test = splits_mod.load_splits(directory / "splits.json")["test"]
    device = resolve_device(cfg.device)
    x = adapt_images(data.images[test], input_spec_of(method, cfg), device)
    return evaluate_split(method.to(device), x, np.asarray(data.labels[test]), cfg)["metrics"]


def _flat_row(result: dict[str, Any]) -> dict[str, Any]:
    row = {k: result.get(k) for k in ("task", "task_kind", "method", "weights", "weights_name", "backbone", "seed",
                                      "shot", "fraction", "split_mode", "status", "n_train", "n_test",
                                      "seconds")}  # fmt: skip
    for k, v in (result.get("metrics") or {}).items():
        row[k] = v
        ci = (result.get("ci95") or {}).get(k)
        row[f"{k}_ci_low"], row[f"{k}_ci_high"] = (ci or [None, None])[:2]
    for k, v in ((result.get("per_label") or {}).get("auroc_per_label") or {}).items():
        row[f"auroc_{k}"] = v
    ood = result.get("ood") or {}
    for k, v in (ood.get("metrics") or {}).items():
        row[f"ood_{k}"] = v
    row.update({f"params_{k}": v for k, v in (result.get("params") or {}).items()})
    return row


def check_class_coverage(labels: np.ndarray, idx: dict[str, np.ndarray], class_names: list[str]) -> None:
    """Refuses splits that cannot give a meaningful score: fewer than two classes to train on, or val/test
    classes that the training split never shows (a head would score them by chance, e.g. accuracy 1.0 when an
    untrained head happens to predict the only test class).

    Raises:
        InputError: With the classes per split and how to re-split.
    """
    name = lambda c: class_names[c] if 0 <= c < len(class_names) else str(c)  # noqa: E731
    present = {split: sorted({int(c) for c in labels[i]}) for split, i in idx.items()}
    fix = (
        "re-split with split_mode=group (or random), add images of the missing classes, or check the set's "
        "labels (python -m data_prep inspect)"
    )
    if len(present.get("train", [])) < 2:
        raise InputError(
            f"the training split has {len(present.get('train', []))} class(es) "
            f"({', '.join(name(c) for c in present.get('train', []))}); classification needs at least two",
            fix,
        )
    for split in ("val", "test"):
        unseen = sorted(set(present.get(split, [])) - set(present["train"]))
        if unseen:
            raise InputError(
                f"the {split} split has classes that the training split lacks: {', '.join(name(c) for c in unseen)} "
                f"(train: {', '.join(name(c) for c in present['train'])})",
                fix,
            )


def run_experiment(cfg: DownstreamConfig) -> dict[str, Any]:
    """Runs one cell and writes its outputs to ``cfg.output_dir``; returns the result dict.

    The dict is flat-ish: ``task, task_kind, method, weights, weights_name, backbone, seed, shot, fraction,
    split_mode, split ("test"), n_train, n_val, n_test, num_classes, class_names, input {in_chans, img_size, mean,
    std}, metrics {accuracy, balanced_accuracy, macro_f1, auroc} (multi-label: {auroc, macro_f1, accuracy} and
    ``per_label`` {auroc_per_label, f1_per_label, thresholds}), headline_metric, ci95 {metric: [low, high]},
    confusion, val_metrics, best_hparams, grid, ood (None or {source, n, metrics, ci95, ...}), params {trainable,
    total, trainable_pct, backbone, param_multiple}, seconds, train_seconds, status ("ok" | "failed"), error,
    output_dir``.
    """
    cfg = apply_weight_settings(cfg)
    header = {
        "task": cfg.task, "method": cfg.method, "weights": cfg.weights, "weights_name": cfg.weights_name or cfg.weights,
        "backbone": cfg.backbone, "seed": cfg.seed, "shot": cfg.shot, "fraction": cfg.fraction,
        "split_mode": cfg.split_mode, "split": "test",
    }  # fmt: skip
    return recorded_run(cfg, header, _run, _flat_row)


def _run(cfg: DownstreamConfig, out_dir: Path) -> dict[str, Any]:
    seed_everything(cfg.seed)
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads()))))
    device = resolve_device(cfg.device)
    data = load_task_of(cfg)
    multilabel = data.multilabel
    if multilabel and cfg.shot:
        raise ValueError("k-shot is defined per class; a multi-label task takes fraction=<f> instead")
    estimate = check_cpu_cost(cfg, device, len(data.labels))
    idx = splits_mod.make_splits(data.strata, data.groups, data.splits, cfg.split_mode, cfg.seed, cfg.val_frac,
                                 cfg.test_frac, cfg.shot, cfg.fraction, data.official)  # fmt: skip
    ood_data = data.ood
    ood_is_test = not is_shard_task(cfg.task) and TASKS[cfg.task].ood_is_test
    if ood_is_test:
        idx["test"] = np.zeros(0, dtype=np.int64)  # the primary test set is the OOD source
    info = {"task": cfg.task, "source": data.source, "mode": cfg.split_mode, "seed": cfg.seed, "shot": cfg.shot,
            "fraction": cfg.fraction}  # fmt: skip
    splits_mod.save_splits(out_dir / "splits.json", idx, info)
    if not multilabel:
        check_class_coverage(data.labels, idx, data.class_names)
    seed_everything(cfg.seed)
    method = build_for(cfg, data.num_classes).to(device)
    spec = input_spec_of(method, cfg)
    xs = {k: adapt_images(data.images[v], spec, device) for k, v in idx.items()}
    ys = {k: torch.as_tensor(data.labels[v], device=device) for k, v in idx.items()}
    record: dict[str, Any] = {}
    best = fit_method(method, cfg, xs, ys, record, multilabel)
    out: dict[str, Any] = {
        "task_kind": data.kind, "n_train": len(idx["train"]), "n_val": len(idx["val"]), "n_test": len(idx["test"]),
        "num_classes": data.num_classes, "class_names": data.class_names, "source": data.source,
        "input": spec.as_dict(), "headline_metric": "auroc" if multilabel else "accuracy",
        "params": best.parameter_report(), **record,
    }  # fmt: skip
    if estimate is not None:
        out["cost_estimate"] = estimate
    thresholds = None
    if len(idx["val"]):
        val_scores = predict(best, xs["val"], cfg, multilabel)
        y_val = ys["val"].cpu().numpy()
        if multilabel:
            thresholds = tune_thresholds(y_val, val_scores)
            out["val_metrics"] = {k: v for k, v in multilabel_report(y_val, val_scores, thresholds).items()
                                  if k in MULTILABEL_METRICS}  # fmt: skip
        else:
            out["val_metrics"] = classification_metrics(y_val, val_scores, with_confusion=False)
    if multilabel and thresholds is None:
        thresholds = np.full(data.num_classes, 0.5)
    evaluate = lambda x, y: evaluate_split(best, x, y, cfg, thresholds, data.class_names)  # noqa: E731
    ood_eval = None
    if ood_data is not None:
        ood_eval = {"source": ood_data.source, **evaluate(adapt_images(ood_data.images, spec, device), ood_data.labels)}
    keys = ("metrics", "ci95", "per_label" if multilabel else "confusion")
    if ood_is_test:
        if ood_eval is None:
            raise RuntimeError(f"task {cfg.task} needs its OOD shard set")
        out.update({k: ood_eval[k] for k in keys})
        out["n_test"], out["split"], out["test_source"] = ood_eval["n"], "ood", ood_eval["source"]
        out["ood"] = None
    else:
        test = evaluate(xs["test"], data.labels[idx["test"]])
        out.update({k: test[k] for k in keys})
        out["test_source"] = data.source
        out["ood"] = ood_eval
    if cfg.save_delta:
        save_delta(best, cfg, out_dir)
    return out
