"""Export a pretrained backbone as ``model.safetensors`` + ``config.json`` (loadable without the training code).

At the end of training ``python -m pretrain`` exports to ``<output_dir>/export``. On demand, from any complete
checkpoint or run directory::

    python -m pretrain.export runs/pretrain/tiny                # newest checkpoint -> runs/pretrain/tiny/export
    python -m pretrain.export runs/x/checkpoints/checkpoint_00000200 --out /tmp/weights

Load with ``lvmmed.weights.load_backbone(export_dir)``. ``config.json`` also records the input normalisation
(``input_mean``/``input_std`` applied to [0, 1] images), the pretraining method, data sets, steps and initial
weights, and the code version; ``README.md`` beside it is the model card rendered from it.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from lvmmed.config import load_config, to_dict
from lvmmed.data.shard_sets import resolve_shard_sets
from lvmmed.models import create_backbone
from lvmmed.models.base import Backbone
from lvmmed.weights import save_pretrained
from pretrain.checkpoint import find_latest, read_trainer_state
from pretrain.config import PretrainConfig
from pretrain.init_weights import read_record

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
log = logging.getLogger("pretrain")


def export_config(
    cfg: PretrainConfig, step: int, trainer: dict[str, Any] | None = None, run_dir: str | Path | None = None
) -> dict[str, Any]:
    """The ``extra_config`` written next to the weights: input normalisation and what a model card needs.

    ``pretrain`` holds the loss, projector, steps, seed, the data sets (name, sample count of the pretraining
    splits, location), images seen and global batch (from ``trainer``: the trainer state with ``world_size``),
    the initial weights (``init_weights.json`` of ``run_dir``, :mod:`pretrain.init_weights`) and the resolved config.
    """
    trainer = trainer or {}
    world = trainer.get("world_size")
    record = read_record(run_dir if run_dir is not None else cfg.output_dir)
    return {
        "input_mean": list(cfg.augment.mean),
        "input_std": list(cfg.augment.std),
        "input_range": [0.0, 1.0],
        "pretrain": {
            "loss": cfg.loss.name,
            "projector": cfg.model.projector,
            "steps": step,
            "seed": cfg.seed,
            "images_seen": trainer.get("images_seen"),
            "global_batch": cfg.data.batch_size * world * cfg.optim.grad_accum_steps if world else None,
            "datasets": pretraining_datasets(cfg),
            "init": record if cfg.init.source and record else {"weights": cfg.init.source},
            "config": to_dict(cfg),
        },
    }


def pretraining_datasets(cfg: PretrainConfig) -> list[dict[str, Any]]:
    """Name, sample count of the pretraining splits and location of every shard set (as the run resolved them)."""
    try:
        sets = resolve_shard_sets(cfg.data)
    except Exception as err:  # broad on purpose: metadata must never stop an export (sets moved, remote offline)
        log.warning("export metadata: shard sets not readable (%s); recording the configured paths only", err)
        return [{"location": entry, "splits": list(cfg.data.splits)} for entry in cfg.data.shards]
    return [{"name": s.name, "samples": s.size, "splits": list(cfg.data.splits),
             "location": s.urls[0].rsplit("/", 1)[0] if s.urls else ""} for s in sets]  # fmt: skip


def export_backbone(
    backbone: Backbone, out_dir: str | Path, cfg: PretrainConfig, step: int, trainer: dict[str, Any] | None = None
) -> Path:
    """Writes the backbone's weights, config and model card atomically (``lvmmed.weights.save_pretrained``)."""
    return save_pretrained(backbone, out_dir, extra_config=export_config(cfg, step, trainer))


def backbone_state(model_state: dict[str, Any]) -> dict[str, Any]:
    """The ``backbone.*`` entries of a meta-arch state dict, with wrapper prefixes stripped."""
    out = {}
    for key, value in model_state.items():
        for prefix in _WRAPPER_PREFIXES:
            key = key.removeprefix(prefix)
        if key.startswith("backbone."):
            out[key.removeprefix("backbone.")] = value
    return out


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path | None = None) -> Path:
    """Exports the backbone of a checkpoint (or of a run directory's newest complete checkpoint)."""
    path = Path(checkpoint)
    if read_trainer_state(path) is None:
        latest = find_latest(path)
        if latest is None:
            raise FileNotFoundError(f"{path} is neither a complete checkpoint nor a run directory with one")
        path = latest
    state = read_trainer_state(path)
    cfg = load_config(PretrainConfig, path / "config.yaml")
    backbone = create_backbone(cfg.model.backbone, in_chans=cfg.model.in_chans, img_size=cfg.augment.size)
    weights = backbone_state(load_file(str(path / "model.safetensors")))
    missing, unexpected = backbone.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise KeyError(
            f"checkpoint {path} does not match {cfg.model.backbone}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    out = Path(out_dir) if out_dir else path.parent.parent / "export"
    extra = export_config(cfg, int(state["step"]), state, run_dir=path.parent.parent)
    return save_pretrained(backbone, out, extra_config=extra)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pretrain.export", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="checkpoint directory, or run directory (newest checkpoint)")
    parser.add_argument("--out", default=None, help="export directory (default: <run>/export)")
    args = parser.parse_args(argv)
    print(export_checkpoint(args.checkpoint, args.out))


if __name__ == "__main__":
    main()
