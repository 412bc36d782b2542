"""What every downstream run does around its body: seeds, device, the recorded result.

:func:`recorded_run` is the one preamble and epilogue of ``run_experiment`` (classification) and
``run_segmentation``: it applies the weights' own input settings (:func:`downstream.inputs.apply_weight_settings`),
writes the resolved ``config.yaml``, runs the body, records a failure instead of raising (``status="failed"``,
``error``, traceback in ``error.txt``; a benchmark matrix keeps going), and writes ``result.json`` (atomically) and
a one-row ``result.csv``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import platform
import random
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from downstream.inputs import apply_weight_settings
from lvmmed.config import save_config, to_dict
from lvmmed.errors import classify
from lvmmed.models import create_backbone

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_backbone(cfg: Any) -> torch.nn.Module:
    """The run's backbone: ``lvmmed.create_backbone(backbone, in_chans, pretrained=weights, img_size)`` (random
    init for ``weights=random``; weights are never downloaded)."""
    return create_backbone(cfg.backbone, in_chans=cfg.in_chans, pretrained=cfg.weights, img_size=cfg.img_size)


def machine_info() -> dict[str, Any]:
    """Python/torch versions, CPU count, threads and CUDA availability (recorded with segmentation results)."""
    return {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}  # fmt: skip


def json_default(obj: Any) -> Any:
    """JSON encoder fallback for NumPy scalars/arrays and tensors."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, torch.Tensor | np.ndarray):
        return obj.tolist()
    if isinstance(obj, float | int):
        return float(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def strict_json(obj: Any) -> Any:
    """``obj`` with every NaN/inf float as ``None`` (JSON ``null``), NumPy and tensor values as Python ones.

    ``json.dumps`` would write a bare ``NaN`` token (an undefined metric, e.g. AUROC on a one-class test split),
    which strict JSON readers (``jq``, JavaScript, pandas with ``orient``) reject.
    """
    if isinstance(obj, dict):
        return {key: strict_json(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(value) for value in obj]
    if isinstance(obj, torch.Tensor | np.ndarray | np.generic):
        return strict_json(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def strict_json_text(obj: Any) -> str:
    """Indented strict JSON of ``obj`` (see :func:`strict_json`)."""
    return json.dumps(strict_json(obj), indent=1, default=json_default, allow_nan=False)


def write_result_files(result: dict[str, Any], row: dict[str, Any], out_dir: Path) -> None:
    """``result.json`` (atomic) and the one-row ``result.csv``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "result.json.tmp"
    tmp.write_text(strict_json_text(result))
    tmp.replace(out_dir / "result.json")
    with open(out_dir / "result.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)


def recorded_run(
    cfg: Any,
    header: dict[str, Any],
    body: Callable[[Any, Path], dict[str, Any]],
    flat_row: Callable[[dict[str, Any]], dict[str, Any]],
    extra: Callable[[], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Runs ``body(cfg, out_dir)`` inside the shared preamble/epilogue; never raises for a failing body.

    Args:
        cfg: The run config (``output_dir``, ``weights``, ``norm_*`` are read).
        header: The identifying fields of the result (task, method, weights...), written even on failure.
        body: Does the work; returns the fields to merge into the result.
        flat_row: Maps the finished result to the one-row ``result.csv``.
        extra: Fields added after the body (e.g. :func:`machine_info`).

    Returns:
        ``{**header, status ("ok" | "failed"), error, output_dir, **body(...), seconds, config}``.
    """
    start = time.perf_counter()
    cfg = apply_weight_settings(cfg)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out_dir / "config.yaml")
    result: dict[str, Any] = {**header, "status": "running", "error": "", "output_dir": str(out_dir)}
    try:
        result.update(body(cfg, out_dir))
        result["status"] = "ok"
    except Exception as err:  # recorded for the benchmark matrix; the CLIs turn it into exit status 1
        known = classify(err)
        result["status"], result["error"] = "failed", f"{type(err).__name__}: {err}"
        result["fix"] = known[2] if known else ""  # the error contract's remedy, for the CLI's final line
        (out_dir / "error.txt").write_text(traceback.format_exc())
        log.error("downstream run failed (%s): %s", out_dir, result["error"])
    result["seconds"] = time.perf_counter() - start
    if extra is not None:
        result.update(extra())
    result["config"] = to_dict(cfg)
    write_result_files(result, flat_row(result), out_dir)
    return result
