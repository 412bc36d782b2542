"""Tissue-segmentation demo: the same ``seg-unet`` with a pretrained vs a random encoder, plus a PNG overlay.

Called by ``demo.run`` (``make demo``) after pretraining::

    from downstream.segmentation.demo import tissue_demo
    summary = tissue_demo(data_root="runs/demo/shards", out_dir="runs/demo/segmentation",
                          pretrained="runs/demo/pretrain/export", backbone="resnet18")

Both runs share the seed, split, decoder init and schedule; only the encoder weights differ. On the bundled
MNI152 slices (one brain, a few slabs in test) the difference is a smoke signal, not evidence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from downstream.runtime import resolve_device
from downstream.segmentation.config import SegmentationConfig
from downstream.segmentation.loop import predict_masks
from downstream.segmentation.run import run_single
from downstream.segmentation.tasks import load_split
from lvmmed.config import load_config

_COLOURS = np.array([[0, 0, 0], [0.2, 0.6, 1.0], [1.0, 0.55, 0.1], [0.95, 0.95, 0.3]])


def _overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    grey = np.repeat(image[..., None], 3, axis=-1)
    colours = _COLOURS[np.clip(labels, 0, len(_COLOURS) - 1)]
    fg = (labels > 0)[..., None]
    return np.where(fg, (1 - alpha) * grey + alpha * colours, grey)


def save_overlay(
    images: torch.Tensor, truth: torch.Tensor, predictions: dict[str, torch.Tensor], file: Path, n: int = 4
) -> Path:
    """PNG grid: one row per slice; columns = image, ground truth, then each prediction (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(n, images.shape[0])
    cols = 2 + len(predictions)
    fig, axes = plt.subplots(n, cols, figsize=(2.2 * cols, 2.2 * n), squeeze=False)
    for r in range(n):
        img = images[r, 0].numpy()
        panels = [("image", img[..., None].repeat(3, -1)), ("ground truth", _overlay(img, truth[r].numpy()))]
        panels += [(name, _overlay(img, pred[r].numpy())) for name, pred in predictions.items()]
        for c, (title, panel) in enumerate(panels):
            axes[r, c].imshow(np.clip(panel, 0, 1))
            axes[r, c].set_axis_off()
            if r == 0:
                axes[r, c].set_title(title, fontsize=8)
    fig.suptitle("MNI152 tissue: CSF-like (blue), GM (orange), WM (yellow)", fontsize=9)
    fig.tight_layout()
    file.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(file, dpi=100)
    plt.close(fig)
    return file


def tissue_demo(
    data_root: str | Path,
    out_dir: str | Path,
    pretrained: str | None,
    backbone: str = "resnet18",
    epochs: int = 10,
    seed: int = 0,
    img_size: int = 64,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Trains ``seg-unet`` on ``seg_tissue`` with a random and (if given) a pretrained encoder; saves an overlay.

    Args:
        data_root: Directory holding the ``mni152`` shard set.
        out_dir: Where runs, ``segmentation_demo.json`` and ``tissue_overlay.png`` go.
        pretrained: Weight source of the pretrained encoder (``lvmmed.create_backbone``); None = random only.
        backbone: Encoder architecture (must match the pretrained weights).
        epochs: Training epochs of each run.
        seed: Shared seed.
        img_size: Slice size.
        overrides: Extra ``key=value`` config overrides.

    Returns:
        ``{"runs": {name: {"metrics", "ci95", "train_seconds", "time_per_epoch_s"}}, "overlay", "summary_file"}``.
    """
    out = Path(out_dir)
    variants = {"random": "random"}
    if pretrained:
        variants["pretrained"] = str(pretrained)
    runs: dict[str, Any] = {}
    predictions: dict[str, torch.Tensor] = {}
    test = load_split("seg_tissue", data_root, "test", img_size)
    for name, weights in variants.items():
        cfg = load_config(
            SegmentationConfig,
            overrides=[
                f"data_root={data_root}", f"output_dir={out / name}", f"backbone={backbone}", f"weights={weights}",
                f"weights_name={name}", f"optim.epochs={epochs}", f"seed={seed}", f"img_size={img_size}",
                *(overrides or []),
            ],
        )  # fmt: skip
        device = resolve_device(cfg.device)
        torch.manual_seed(seed)
        res = run_single(cfg, device, out / name)
        method = res.pop("_method")
        predictions[f"{name} encoder"] = predict_masks(method, test, cfg)
        runs[name] = {
            "weights": weights,
            "metrics": res["metrics"],
            "ci95": res["ci95"],
            "train_seconds": res["train_seconds"],
            "time_per_epoch_s": res["train"]["time_per_epoch_s"],
        }
    # Most informative slices first: the ones with the most tissue.
    order = torch.argsort((test.masks > 0).flatten(1).sum(1), descending=True)[:4]
    overlay = save_overlay(
        test.images[order], test.masks[order], {k: v[order] for k, v in predictions.items()}, out / "tissue_overlay.png"
    )
    summary = {"task": "seg_tissue", "backbone": backbone, "epochs": epochs, "seed": seed, "runs": runs,
               "overlay": str(overlay)}  # fmt: skip
    if "pretrained" in runs:
        a, b = runs["pretrained"]["metrics"]["dice_mean"], runs["random"]["metrics"]["dice_mean"]
        summary["dice_mean_pretrained_minus_random"] = None if a is None or b is None else a - b
    file = out / "segmentation_demo.json"
    file.write_text(json.dumps(summary, indent=1))
    summary["summary_file"] = str(file)
    return summary
