"""The tissue-segmentation demo: pretrained vs random encoder on real MNI152 slices, PNG overlay saved."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from downstream.segmentation.demo import tissue_demo
from lvmmed.models import create_backbone
from lvmmed.weights import save_pretrained


@pytest.mark.slow
def test_tissue_demo_compares_encoders_and_saves_overlay(bundled_shards, tmp_path):
    weights = save_pretrained(create_backbone("resnet18", in_chans=1), tmp_path / "export")
    fast = ["optim.max_steps=1", "optim.batch_size=4", "unet.decoder_channels=[8,8,16,16]", "hd95=false"]
    summary = tissue_demo(bundled_shards["mni152"].parent, tmp_path / "demo", str(weights), epochs=1, overrides=fast)
    assert set(summary["runs"]) == {"random", "pretrained"}
    for run in summary["runs"].values():
        assert 0.0 <= run["metrics"]["dice_mean"] <= 1.0
    assert summary["dice_mean_pretrained_minus_random"] is not None
    with Image.open(summary["overlay"]) as png:
        assert png.size[0] > 400 and png.size[1] > 300
    saved = json.loads((tmp_path / "demo" / "segmentation_demo.json").read_text())
    assert set(saved["runs"]) == {"random", "pretrained"}
