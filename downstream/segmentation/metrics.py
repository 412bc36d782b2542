"""Segmentation metrics: Dice per class and mean, IoU, HD95 (``monai.metrics``), 3-D IoU over regrouped volumes.

LVM-Med (Nguyen et al., NeurIPS 2023) reports 2-D Dice for slice tasks and 3-D IoU when slices are stacked back
into volumes; Saeed et al. (2023) report Dice per class on every center. Conventions (choices the papers leave
open, fixed here and documented in ``docs/segmentation.md``):

* Background (label 0) is excluded from every mean (``include_background=False`` in MONAI terms).
* A class absent from both the prediction and the ground truth of an image is *undefined* (NaN) for that image,
  as MONAI's ``ignore_empty=True``; means are NaN-aware (``nanmean``), so empty slices neither help nor hurt.
* HD95 is MONAI's ``HausdorffDistanceMetric(percentile=95)`` in pixels; a class predicted empty while present
  in the ground truth gives an infinite distance, which is reported as NaN and counted in ``hd95_undefined``.
* Aggregate (volume) Dice/IoU are computed from summed confusion counts over all slices of one volume.

:func:`dice_from_counts` is our own count-based Dice; the tests check it equals ``monai.metrics.DiceMetric``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric, MeanIoU


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, H, W) integer labels -> (B, C, H, W) float one-hot (MONAI's expected layout)."""
    return torch.nn.functional.one_hot(labels.long(), num_classes).permute(0, 3, 1, 2).float()


def confusion_counts(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-image, per-class (tp, fp, fn) counts.

    Args:
        pred: (B, H, W) or (B, D, H, W) predicted labels.
        target: Same shape, ground-truth labels.
        num_classes: Number of classes including background.

    Returns:
        (B, num_classes, 3) int64 tensor of true positives, false positives, false negatives.
    """
    b = pred.shape[0]
    p = pred.reshape(b, -1).long()
    t = target.reshape(b, -1).long()
    out = torch.zeros(b, num_classes, 3, dtype=torch.int64, device=pred.device)
    for c in range(num_classes):
        pc, tc = p == c, t == c
        out[:, c, 0] = (pc & tc).sum(1)
        out[:, c, 1] = (pc & ~tc).sum(1)
        out[:, c, 2] = (~pc & tc).sum(1)
    return out


def dice_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """Dice 2tp/(2tp+fp+fn) from :func:`confusion_counts`; NaN where the class is absent in the ground truth.

    NaN follows MONAI's ``ignore_empty=True``: with no ground truth the score is undefined, whatever is predicted.
    """
    tp, fp, fn = counts.double().unbind(-1)
    dice = 2 * tp / (2 * tp + fp + fn).clamp_min(1)
    return torch.where(tp + fn > 0, dice, torch.full_like(dice, float("nan")))


def iou_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """IoU tp/(tp+fp+fn); NaN where the class is absent in the ground truth (as MONAI ``MeanIoU``)."""
    tp, fp, fn = counts.double().unbind(-1)
    iou = tp / (tp + fp + fn).clamp_min(1)
    return torch.where(tp + fn > 0, iou, torch.full_like(iou, float("nan")))


def monai_per_image(pred: torch.Tensor, target: torch.Tensor, num_classes: int, hd95: bool = True) -> dict:
    """Per-image, per-foreground-class Dice, IoU and HD95 computed by ``monai.metrics``.

    Args:
        pred: (B, H, W) predicted labels.
        target: (B, H, W) ground-truth labels.
        num_classes: Classes including background.
        hd95: Also compute the 95th-percentile Hausdorff distance (slower).

    Returns:
        ``{"dice": (B, C-1), "iou": (B, C-1), "hd95": (B, C-1) or None}`` float64 numpy arrays (NaN = undefined).
    """
    yp, yt = one_hot(pred, num_classes), one_hot(target, num_classes)
    dice = DiceMetric(include_background=False, reduction="none", ignore_empty=True)(yp, yt)
    iou = MeanIoU(include_background=False, reduction="none", ignore_empty=True)(yp, yt)
    out = {"dice": dice.double().cpu().numpy(), "iou": iou.double().cpu().numpy(), "hd95": None}
    if hd95:
        import warnings

        with warnings.catch_warnings():  # MONAI warns on every empty prediction/ground truth; we count those.
            warnings.simplefilter("ignore")
            hd = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(yp, yt)
        hd = hd.double().cpu().numpy()
        out["hd95"] = np.where(np.isfinite(hd), hd, np.nan)
    return out


def _nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(values, axis=axis)


def _clean(value: float) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


class SegmentationEvaluator:
    """Accumulates predictions batch by batch and summarises them per class, per image, per volume and subject.

    Args:
        num_classes: Classes including background.
        class_names: Names of all classes (index = label); defaults to ``class_<i>``.
        hd95: Compute HD95 with MONAI (costs a distance transform per image and class).
    """

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None, hd95: bool = True) -> None:
        self.num_classes = num_classes
        self.class_names = list(class_names or [f"class_{i}" for i in range(num_classes)])
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {num_classes} classes")
        self.hd95 = hd95
        self._dice: list[np.ndarray] = []
        self._iou: list[np.ndarray] = []
        self._hd: list[np.ndarray] = []
        self._counts: list[np.ndarray] = []
        self._volumes: list[str] = []
        self._subjects: list[str] = []

    def update(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        volumes: Sequence[str] | None = None,
        subjects: Sequence[str] | None = None,
    ) -> None:
        """Adds a batch of (B, H, W) label maps; ``volumes``/``subjects`` group slices for 3-D IoU and bootstrap."""
        b = pred.shape[0]
        res = monai_per_image(pred, target, self.num_classes, hd95=self.hd95)
        self._dice.append(res["dice"])
        self._iou.append(res["iou"])
        if res["hd95"] is not None:
            self._hd.append(res["hd95"])
        self._counts.append(confusion_counts(pred, target, self.num_classes).cpu().numpy())
        self._volumes.extend(volumes if volumes is not None else ["all"] * b)
        self._subjects.extend(subjects if subjects is not None else (volumes or ["all"] * b))

    def per_image_dice(self) -> np.ndarray:
        """(N, C-1) Dice per image and foreground class (NaN = class absent)."""
        return np.concatenate(self._dice) if self._dice else np.zeros((0, self.num_classes - 1))

    def per_subject_mean_dice(self) -> dict[str, float]:
        """Mean foreground Dice of each subject (the unit of the bootstrap)."""
        dice = _nanmean(self.per_image_dice(), axis=1)
        groups: dict[str, list[float]] = defaultdict(list)
        for s, d in zip(self._subjects, dice):
            if np.isfinite(d):
                groups[s].append(float(d))
        return {s: float(np.mean(v)) for s, v in groups.items()}

    def summary(self) -> dict:
        """JSON-ready summary: per-class and mean Dice/IoU/HD95 over images, plus 3-D (volume) Dice/IoU."""
        if not self._dice:
            raise ValueError("SegmentationEvaluator.summary() called before any update()")
        fg = self.class_names[1:]
        dice = self.per_image_dice()
        iou = np.concatenate(self._iou)
        dice_c, iou_c = _nanmean(dice, axis=0), _nanmean(iou, axis=0)
        out: dict = {
            "num_images": int(dice.shape[0]),
            "dice_per_class": {n: _clean(v) for n, v in zip(fg, dice_c)},
            "dice_mean": _clean(_nanmean(dice_c)),
            "iou_per_class": {n: _clean(v) for n, v in zip(fg, iou_c)},
            "iou_mean": _clean(_nanmean(iou_c)),
        }
        if self._hd:
            hd = np.concatenate(self._hd)
            hd_c = _nanmean(hd, axis=0)
            out["hd95_per_class"] = {n: _clean(v) for n, v in zip(fg, hd_c)}
            out["hd95_mean"] = _clean(_nanmean(hd_c))
            out["hd95_undefined"] = int(np.sum(np.isnan(hd) & ~np.isnan(dice)))
        counts = np.concatenate(self._counts)
        vol_counts: dict[str, np.ndarray] = {}
        for v, c in zip(self._volumes, counts):
            vol_counts[v] = vol_counts.get(v, 0) + c
        stacked = torch.as_tensor(np.stack(list(vol_counts.values())))
        vol_dice = dice_from_counts(stacked)[:, 1:].numpy()
        vol_iou = iou_from_counts(stacked)[:, 1:].numpy()
        out["num_volumes"] = len(vol_counts)
        out["dice3d_per_class"] = {n: _clean(v) for n, v in zip(fg, _nanmean(vol_dice, axis=0))}
        out["dice3d_mean"] = _clean(_nanmean(_nanmean(vol_dice, axis=0)))
        out["iou3d_per_class"] = {n: _clean(v) for n, v in zip(fg, _nanmean(vol_iou, axis=0))}
        out["iou3d_mean"] = _clean(_nanmean(_nanmean(vol_iou, axis=0)))
        out["num_subjects"] = len(set(self._subjects))
        return out
