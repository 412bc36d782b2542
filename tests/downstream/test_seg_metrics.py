"""Segmentation metrics against MONAI on real MNI152 masks, 3-D regrouping, subject bootstrap, DICOM-SEG check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric, MeanIoU

from downstream.segmentation.metrics import (
    SegmentationEvaluator,
    confusion_counts,
    dice_from_counts,
    iou_from_counts,
    one_hot,
)
from downstream.segmentation.tasks import dicom_seg_check, load_split
from downstream.stats import bootstrap_mean_ci


@pytest.fixture(scope="module")
def real_masks(bundled_shards):
    data = load_split("seg_tissue", bundled_shards["mni152"].parent, "train", img_size=64)
    target = data.masks[:12]
    # A realistic "prediction": the ground truth shifted by 2 pixels, GM/WM swapped on a band, one class erased.
    pred = torch.roll(target, shifts=2, dims=-1).clone()
    band = pred[:, 20:30] == 2
    pred[:, 20:30][band] = 3
    pred[0][pred[0] == 1] = 0
    return pred, target, data


def test_our_dice_and_iou_equal_monai(real_masks):
    pred, target, _ = real_masks
    counts = confusion_counts(pred, target, 4)
    ours_dice = dice_from_counts(counts)[:, 1:]
    ours_iou = iou_from_counts(counts)[:, 1:]
    yp, yt = one_hot(pred, 4), one_hot(target, 4)
    monai_dice = DiceMetric(include_background=False, reduction="none", ignore_empty=True)(yp, yt).double()
    monai_iou = MeanIoU(include_background=False, reduction="none", ignore_empty=True)(yp, yt).double()
    torch.testing.assert_close(ours_dice, monai_dice, equal_nan=True)
    torch.testing.assert_close(ours_iou, monai_iou, equal_nan=True)
    assert 0.2 < float(torch.nanmean(ours_dice)) < 0.99  # neither trivial nor perfect


def test_perfect_and_empty_cases():
    t = torch.zeros(1, 8, 8, dtype=torch.long)
    t[0, 2:5, 2:5] = 1
    counts = confusion_counts(t, t, 3)
    dice = dice_from_counts(counts)
    assert dice[0, 1] == 1.0 and torch.isnan(dice[0, 2])  # class 2 absent: undefined, as MONAI ignore_empty


def test_evaluator_summary_and_3d_regrouping(real_masks):
    pred, target, data = real_masks
    volumes = data.volumes[:12]
    ev = SegmentationEvaluator(4, data.class_names, hd95=True)
    ev.update(pred[:6], target[:6], volumes=volumes[:6], subjects=data.subjects[:6])
    ev.update(pred[6:], target[6:], volumes=volumes[6:], subjects=data.subjects[6:])
    s = ev.summary()
    assert s["num_images"] == 12 and set(s["dice_per_class"]) == {"csf_like", "gm", "wm"}
    assert s["hd95_mean"] is not None and s["hd95_mean"] > 0
    # 3-D Dice of one regrouped volume equals MONAI on the stacked slices of that volume.
    first = volumes[0]
    idx = [i for i, v in enumerate(volumes) if v == first]
    vol_p, vol_t = pred[idx][None], target[idx][None]  # (1, D, H, W)
    yp = torch.nn.functional.one_hot(vol_p, 4).permute(0, 4, 1, 2, 3).float()
    yt = torch.nn.functional.one_hot(vol_t, 4).permute(0, 4, 1, 2, 3).float()
    monai3d = DiceMetric(include_background=False, reduction="none")(yp, yt)[0].double()
    ev1 = SegmentationEvaluator(4, data.class_names, hd95=False)
    ev1.update(pred[idx], target[idx], volumes=[first] * len(idx))
    ours3d = torch.tensor([ev1.summary()["dice3d_per_class"][c] for c in ("csf_like", "gm", "wm")], dtype=torch.double)
    torch.testing.assert_close(ours3d, monai3d)


def test_bootstrap_over_subjects_is_seeded_and_brackets_the_mean():
    values = [0.6, 0.7, 0.8, 0.65, 0.9]
    ci = bootstrap_mean_ci(values, 500, seed=0)
    assert ci == bootstrap_mean_ci(values, 500, seed=0)
    assert ci[0] < np.mean(values) < ci[1]
    assert bootstrap_mean_ci([0.5], 500, seed=0) is None


def test_dicom_seg_liver_reader_check():
    res = dicom_seg_check("seg_liver_1frame")
    assert res["kind"] == "image2d" and res["shape"] == [512, 512]
    assert res["mask_labels"] == ["background", "Liver"]
    assert 0.05 < res["foreground_fraction"] < 0.5
    assert res["matches_raw_frames"]
