"""End-to-end segmentation runs on the bundled shards: single task, new-center protocol, mask-guided fractions."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from downstream.registry import is_segmentation
from downstream.segmentation.centers import load_center, resolve_new_center, run_new_center
from downstream.segmentation.config import SegmentationConfig
from downstream.segmentation.run import reevaluate, run_segmentation
from lvmmed.config import load_config
from lvmmed.models import create_backbone

FAST = ["optim.batch_size=4", "optim.max_steps=1", "unet.decoder_channels=[8,8,16,16]", "bootstrap=100"]


def make_cfg(root, tmp_path, *overrides: str) -> SegmentationConfig:
    return load_config(SegmentationConfig, overrides=[f"data_root={root}", f"output_dir={tmp_path}", *FAST, *overrides])


def test_single_run_writes_result_config_and_delta(bundled_shards, tmp_path):
    cfg = make_cfg(bundled_shards["mni152"].parent, tmp_path, "unet.freeze_encoder=true", "hd95=false")
    res = run_segmentation(cfg)
    assert res["status"] == "ok", res["error"]
    assert res["task_type"] == "segmentation" and res["class_names"] == ["background", "csf_like", "gm", "wm"]
    assert {"dice_mean", "iou_mean", "dice3d_mean", "dice_gm", "dice_wm"} <= set(res["metrics"])
    assert 0.0 <= res["metrics"]["dice_mean"] <= 1.0
    ci = res["ci95"]["dice_mean"]
    assert ci is None or ci[0] <= ci[1]
    assert res["n_train"] > res["n_test"] > 0
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["metrics"] == pytest.approx(res["metrics"], nan_ok=True)
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "result.csv").is_file()
    delta = load_file(res["delta_file"])
    assert delta and all(k.startswith("decoder.") for k in delta)  # frozen encoder: only the decoder is saved
    params = {k: v for k, v in delta.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert sum(t.numel() for t in params.values()) == res["params"]["trainable"]
    # The delta is complete: reloading it onto the re-created encoder reproduces the test metrics exactly.
    again = reevaluate(tmp_path)
    assert again["dice_mean"] == pytest.approx(res["metrics"]["dice_mean"], abs=1e-9)


def test_failed_run_is_recorded_with_a_clear_error(tmp_path):
    cfg = make_cfg(tmp_path / "no_shards", tmp_path / "out")
    res = run_segmentation(cfg)
    assert res["status"] == "failed" and "data_prep" in res["error"]
    assert (tmp_path / "out" / "error.txt").is_file()


def test_dispatch_helper():
    assert is_segmentation("seg-prompt-deep") and is_segmentation(task="seg_tissue")
    assert not is_segmentation("linear", "tissue")


def test_new_center_fallback_and_variant(bundled_shards, tmp_path):
    root = bundled_shards["mni152"].parent
    cfg = make_cfg(root, tmp_path, "centers.new=not_installed")
    center, note = resolve_new_center(cfg)
    assert center == "mni152@lowcontrast" and "not_installed" in note
    plain = load_center("mni152", root, "test", 64, 1)
    variant = load_center("mni152@lowcontrast", root, "test", 64, 1)
    assert torch.equal(plain.masks, variant.masks) and not torch.allclose(plain.images, variant.images)
    assert set(variant.centers) == {"mni152@lowcontrast"}


@pytest.mark.slow
def test_new_center_protocol_reports_forgetting(bundled_shards, tmp_path):
    def vit():
        bb = create_backbone("vit_tiny", in_chans=1, img_size=64)
        bb.blocks = bb.blocks[:2]
        return bb

    root = bundled_shards["mni152"].parent
    cfg = make_cfg(
        root, tmp_path, "backbone=vit_tiny", "protocol=new_center", "hd95=false", "centers.base_epochs=1",
        "prompt.num_tokens=2", "centers.adapt=[direct,seg-prompt-deep,finetune]",
    )  # fmt: skip
    res = run_new_center(cfg, vit, torch.device("cpu"), tmp_path)
    new = res["new_center"]
    assert new == ("colin27" if "colin27" in bundled_shards else "mni152@lowcontrast")
    assert res["old_centers"] == ["mni152"]
    rows = {r["mode"]: r for r in res["table"]}
    assert set(rows) == {"direct", "seg-prompt-deep", "finetune"}
    for row in rows.values():
        for key in ("new_center_dice", "new_center_dice_before", "mni152_dice_before", "mni152_dice_after"):
            assert row[key] is not None and 0.0 <= row[key] <= 1.0
        assert row["mni152_forgetting"] == pytest.approx(row["mni152_dice_before"] - row["mni152_dice_after"])
    assert rows["direct"]["mni152_forgetting"] == 0.0 and rows["direct"]["trainable_params"] == 0
    assert rows["seg-prompt-deep"]["trainable_params"] == 2 * 2 * 192 < rows["finetune"]["trainable_params"]
    assert set(load_file(res["adapt"]["seg-prompt-deep"]["delta_file"])) == {"prompts"}  # per-center delta only
    assert res["adapt"]["seg-prompt-deep"]["new_center"]["num_images"] == res["num_slices"][f"test/{new}"]


@pytest.mark.slow
def test_mask_guided_run_over_fractions_with_seg_unet_masks(bundled_shards, tmp_path):
    cfg = make_cfg(
        bundled_shards["mni152"].parent, tmp_path, "task=mask_guided_tissue", "method=mask-guided", "hd95=false",
        "mask_guided.mask_source=seg-unet", "mask_guided.seg_epochs=1", "mask_guided.fractions=[0.2,1.0]",
    )  # fmt: skip
    res = run_segmentation(cfg)
    assert res["status"] == "ok", res["error"]
    assert res["label_names"] == ["sagittal", "coronal", "axial"]
    assert res["masks"]["source"] == "seg-unet" and res["masks"]["test_dice_mean"] is not None
    assert res["text_branch"].startswith("learned class embeddings")  # no open_clip weights here
    small, full = res["fractions"]["0.2"], res["fractions"]["1"]
    assert small["num_train"] < full["num_train"] == res["num_slices"]["train"]
    for cell in (small, full):
        for variant in ("mask_guided", "unmasked"):
            assert 0.0 <= cell[variant]["balanced_accuracy"] <= 1.0


def test_shipped_segmentation_configs_load():
    from pathlib import Path

    files = sorted(Path(__file__).resolve().parents[2].glob("configs/downstream/seg_*.yaml"))
    assert len(files) >= 5
    for file in files:
        cfg = load_config(SegmentationConfig, file)
        assert is_segmentation(cfg.method, cfg.task), file


@pytest.mark.optional_data
def test_colin27_tasks_load_with_their_classes(bundled_shards):
    if "colin27" not in bundled_shards or "colin27_aal" not in bundled_shards:
        pytest.skip("mricron-data is not installed (make data)")
    from downstream.segmentation.tasks import load_split

    root = bundled_shards["colin27"].parent
    brain = load_split("seg_brainmask", root, "train", 64)
    assert brain.class_names == ["background", "brain"] and set(brain.masks.unique().tolist()) == {0, 1}
    lobes = load_split("seg_lobes", root, "train", 64)
    assert lobes.num_classes == 9 and lobes.class_names[1] == "frontal"
    assert len(lobes.masks.unique()) >= 6  # most lobes appear in the training slices
