"""Export a pretrained backbone as ``model.safetensors`` + ``config.json`` (loadable without the training code).

At the end of training ``python -m pretrain`` exports to ``<output_dir>/export``. On demand, from any complete
checkpoint or run directory::

    python -m pretrain.export runs/pretrain/tiny                # newest checkpoint -> runs/pretrain/tiny/export
    python -m pretrain.export runs/x/checkpoints/checkpoint_00000200 --out /tmp/weights

Load with ``lvmmed.weights.load_backbone(export_dir)``. ``config.json`` also records the input normalisation
(``input_mean``/``input_std`` applied to [0, 1] images) and the pretraining method.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from lvmmed.config import load_config, to_dict
from lvmmed.models import create_backbone
from lvmmed.models.base import Backbone
from lvmmed.weights import save_pretrained
from pretrain.checkpoint import find_latest, read_trainer_state
from pretrain.config import PretrainConfig

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def export_config(cfg: PretrainConfig, step: int) -> dict[str, Any]:
    """The ``extra_config`` written next to the weights."""
    return {
        "input_mean": list(cfg.augment.mean),
        "input_std": list(cfg.augment.std),
        "input_range": [0.0, 1.0],
        "pretrain": {
            "loss": cfg.loss.name,
            "projector": cfg.model.projector,
            "steps": step,
            "seed": cfg.seed,
            "config": to_dict(cfg),
        },
    }


def export_backbone(backbone: Backbone, out_dir: str | Path, cfg: PretrainConfig, step: int) -> Path:
    """Writes the backbone's weights and config atomically (``lvmmed.weights.save_pretrained``)."""
    return save_pretrained(backbone, out_dir, extra_config=export_config(cfg, step))


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
    return export_backbone(backbone, out, cfg, int(state["step"]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pretrain.export", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="checkpoint directory, or run directory (newest checkpoint)")
    parser.add_argument("--out", default=None, help="export directory (default: <run>/export)")
    args = parser.parse_args(argv)
    print(export_checkpoint(args.checkpoint, args.out))


if __name__ == "__main__":
    main()
