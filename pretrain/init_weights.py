"""Initial backbone weights for a pretraining run (``init.weights``): continue pretraining from existing weights.

Any source downstream accepts works (:mod:`lvmmed.weight_sources`): the published LVM-Med ``lvmmed_resnet.torch``
(torchvision ResNet-50 keys) and ``lvmmed_vit.pth`` (SAM ViT-B keys), an lvmmed export directory, a torchvision
or timm state dict, or any state-dict file whose layout is recognised. The load is the library's
(:func:`lvmmed.models.state_dict.load_checked`): prefix rule, classifier keys ignored, stem adapted between 1 and 3
input channels (summed 3→1, replicated and divided by 3 for 1→3: the same features for a grey image as for the image
replicated to RGB), position tables resized, then the strict key check.

Choices the LVM-Med paper leaves open, here fixed and documented:

* Only the backbone is initialised. The projector and the loss's parameters start fresh: the published files hold
  encoders only, and lvmmed exports the backbone only.
* ``init.strict=true`` (default) refuses a file that does not fill every backbone tensor; ``false`` keeps the random
  init for what does not fit and records it.
* A resumed run does not load ``init.weights`` (the checkpoint holds the weights), so it still resumes when the init
  file has moved since.
* What was done is written to ``<output_dir>/init_weights.json`` (source, resolved file, sha256, layout, adapted,
  ignored, missing and unexpected keys, the source's input settings) and copied into the export's ``config.json``
  (``pretrain.init``); ``config.yaml`` holds what was asked (``init.weights``, ``init.strict``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from lvmmed.config import ConfigError
from lvmmed.data.shards import sha256_file
from lvmmed.models.base import Backbone
from lvmmed.models.state_dict import WeightLoadError, detect_layout, load_checked, nonfinite_tensors, strip_prefixes
from lvmmed.weight_sources import WEIGHTS_NAME, input_settings, read_state_dict, resolve_source

log = logging.getLogger("pretrain")
RECORD_NAME = "init_weights.json"


def load_init_weights(backbone: Backbone, cfg: Any, record_dir: str | Path | None = None) -> dict[str, Any]:
    """Loads ``cfg.init.weights`` into ``backbone`` and returns the record of what was done.

    Args:
        backbone: The freshly built backbone of ``cfg.model``.
        cfg: A :class:`~pretrain.config.PretrainConfig` with ``init.weights`` set.
        record_dir: Where ``init_weights.json`` goes (also when the load fails, with ``ok: false``); None = nowhere.

    Raises:
        WeightsNotFoundError: The source does not exist (exit 1).
        ConfigError: The source holds another architecture than ``model.backbone`` (exit 2).
        WeightLoadError: Keys do not fit under ``init.strict=true``, the file holds NaN/inf, or is unreadable (exit 1).
    """
    source = cfg.init.source
    resolved = resolve_source(source)
    file = resolved.path / WEIGHTS_NAME if resolved.path.is_dir() else resolved.path
    state = read_state_dict(resolved.path)
    architecture = resolved.architecture
    if architecture is None:
        architecture = detect_layout(strip_prefixes(dict(state), set(backbone.state_dict()))[0]).architecture
    if architecture is not None and architecture != cfg.model.backbone:
        raise ConfigError(
            f"init.weights={source} holds a {architecture}, but model.backbone={cfg.model.backbone}; "
            f"set model.backbone={architecture} (the architecture must match the weights)"
        )
    if bad := nonfinite_tensors(state):
        raise WeightLoadError(f"init.weights={source} holds NaN or inf in {len(bad)} tensor(s), e.g. {bad[:3]}")
    report = load_checked(backbone, state, source=os.fspath(source), strict=False)
    settings = input_settings(resolved)
    record = {
        "weights": source, "strict": cfg.init.strict, "ok": report.ok, "file": str(file),
        "sha256": sha256_file(file), "kind": resolved.kind, "layout": report.layout, "architecture": architecture,
        "loaded": report.loaded, "stripped_prefixes": report.stripped_prefixes, "adapted": report.adapted,
        "ignored": report.ignored, "discarded": report.discarded, "missing": report.missing,
        "unexpected": report.unexpected, "mismatched": [[k, list(a), list(b)] for k, a, b in report.mismatched],
        "source_input": settings.as_dict(), "projector": "fresh (random init)",
    }  # fmt: skip
    if record_dir is not None:
        write_record(Path(record_dir), record)
    if cfg.init.strict and not report.ok:
        where = f"; the full report is in {Path(record_dir) / RECORD_NAME}" if record_dir is not None else ""
        raise WeightLoadError(
            f"init.weights={source} does not fit {cfg.model.backbone}: {len(report.missing)} missing "
            f"{report.missing[:3]}, {len(report.unexpected)} unexpected {report.unexpected[:3]}, "
            f"{len(report.mismatched)} mis-shaped {[k for k, _, _ in report.mismatched][:3]} key(s){where}; "
            "init.strict=false loads what fits and keeps random init for the rest"
        )
    log.info("init.weights: %s", report)
    _warn_on_normalisation(cfg, settings.mean, settings.std, settings.origin)
    return record


def _warn_on_normalisation(cfg: Any, mean: tuple[float, ...] | None, std: tuple[float, ...] | None, origin: str):
    """The source was trained on other input statistics than ``augment.mean/std``: say so (it still runs)."""
    if mean is None or std is None:
        return
    ours_mean, ours_std = list(cfg.augment.mean), list(cfg.augment.std)
    if abs(_average(mean) - _average(ours_mean)) > 1e-3 or abs(_average(std) - _average(ours_std)) > 1e-3:
        log.warning(
            "init.weights were trained with input mean %s / std %s (%s), this run normalises with augment.mean=%s "
            "augment.std=%s; set those to match if the weights should see the inputs they know",
            list(mean), list(std), origin, ours_mean, ours_std,
        )  # fmt: skip


def _average(values) -> float:
    """Channel mean of per-channel statistics (grey inputs replicate channels, so the means are comparable)."""
    return sum(values) / len(values)


def write_record(out: Path, record: dict[str, Any]) -> Path:
    """Writes ``init_weights.json`` atomically (every rank may write the same content; the last rename wins)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / RECORD_NAME
    tmp = out / f".{RECORD_NAME}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
    return path


def read_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The ``init_weights.json`` of a run directory, or None when the run started from random init."""
    path = Path(run_dir) / RECORD_NAME
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def note_resume(cfg: Any, checkpoint: Path | None) -> None:
    """Logs that a resumed run takes its weights from the checkpoint, not from ``init.weights``."""
    if checkpoint is not None and cfg.init.source:
        log.info("init.weights=%s not loaded: resuming from %s, which holds the weights", cfg.init.weights, checkpoint)
