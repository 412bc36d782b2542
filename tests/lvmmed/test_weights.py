"""Weight loading: published layouts, prefixes, strict reports, 1-channel stems, exports, safety, CLI."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from segment_anything.modeling.image_encoder import ImageEncoderViT
from torch import nn

from lvmmed.data import samples
from lvmmed.models import create_backbone
from lvmmed.models.sam_vit import SAM_SPECS
from lvmmed.models.state_dict import LoadReport, adapt_state_dict
from lvmmed.weights import (
    WeightLoadError,
    WeightsNotFoundError,
    inspect_file,
    load_backbone,
    load_pretrained,
    main,
    save_pretrained,
)


@lru_cache(maxsize=1)
def _raw_slices() -> tuple[np.ndarray, ...]:
    import nibabel as nib
    import pydicom

    volume = np.asarray(nib.load(samples.path("mni152_t1")).dataobj, dtype=np.float32)
    ct = pydicom.dcmread(samples.path("ct_small")).pixel_array.astype(np.float32)
    return volume[:, :, volume.shape[2] // 2], ct


def real_slices(size: int, channels: int = 3) -> torch.Tensor:
    """A real MNI152 T1 axial slice and a real CT slice (pydicom CT_small), min-max scaled, resized."""
    try:
        raw = _raw_slices()
    except samples.MissingSampleError as err:
        pytest.skip(str(err))
    out = []
    for image in raw:
        image = (image - image.min()) / (image.max() - image.min())
        out.append(F.interpolate(torch.from_numpy(image)[None, None], size=(size, size), mode="bilinear"))
    return torch.cat(out).repeat(1, channels, 1, 1)


def sam_encoder(name: str, img_size: int) -> ImageEncoderViT:
    """A segment-anything encoder in the LVM-Med layout with random (non-zero) relative-position tables."""
    spec = SAM_SPECS[name]
    encoder = ImageEncoderViT(
        img_size=img_size, embed_dim=spec.embed_dim, depth=spec.depth, num_heads=spec.num_heads,
        out_chans=spec.out_chans, use_abs_pos=False, use_rel_pos=True, window_size=spec.window_size,
        global_attn_indexes=spec.global_attn_indexes, norm_layer=partial(nn.LayerNorm, eps=1e-6),
    )  # fmt: skip
    with torch.no_grad():
        for key, param in encoder.named_parameters():
            if "rel_pos" in key:
                param.normal_(0, 0.5)
    return encoder.eval()


def neck_and_pre_neck_mean(encoder: ImageEncoderViT, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference encoder's output and the spatial mean of its neck input (the pre-neck tokens)."""
    captured = {}
    handle = encoder.neck.register_forward_pre_hook(lambda _m, args: captured.setdefault("x", args[0]))
    neck = encoder(x)
    handle.remove()
    return neck, captured["x"].mean(dim=(2, 3))


# ---------------------------------------------------------------- published layouts


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory) -> tuple[Path, nn.Module]:
    torch.manual_seed(1)
    ref = torchvision.models.resnet50(weights=None).eval()
    path = tmp_path_factory.mktemp("published") / "lvmmed_resnet.torch"
    torch.save(ref.state_dict(), path)  # plain torchvision keys incl. fc.*, exactly as LVM-Med's file
    ref.fc = nn.Identity()
    return path, ref


@torch.no_grad()
def test_published_resnet50_layout_gives_the_reference_outputs(resnet50_file, monkeypatch):
    path, ref = resnet50_file
    x = real_slices(64)
    model = create_backbone("resnet50", pretrained=f"lvmmed-resnet50={path}").eval()
    torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)
    monkeypatch.setenv("LVMMED_WEIGHTS_DIR", str(path.parent))
    report = load_pretrained(create_backbone("resnet50"), "lvmmed-resnet50")
    assert report.ok and report.layout == "torchvision-resnet" and report.ignored == ["fc.weight", "fc.bias"]
    # in_chans=1 sums conv1: a grey image gives the features of the grey image replicated to RGB.
    grey = load_backbone("lvmmed-resnet50", in_chans=1).eval()
    torch.testing.assert_close(grey(x[:, :1]), ref(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@torch.no_grad()
def test_published_sam_vit_b_layout_loads_at_224(tmp_path):
    torch.manual_seed(2)
    ref = sam_encoder("sam_vit_b", 1024)  # exactly LVM-Med's vit_encoder_b: 1024 input, no pos_embed
    path = tmp_path / "lvmmed_vit.pth"
    torch.save(ref.state_dict(), path)
    assert not any(k.startswith("pos_embed") for k in torch.load(path, weights_only=True))
    start = time.perf_counter()
    model = create_backbone("sam_vit_b", pretrained=f"lvmmed-vitb={path}", img_size=224).eval()
    print(f"ViT-B (SAM layout) build+load: {time.perf_counter() - start:.2f}s")
    x = real_slices(224)
    # SAM itself interpolates the 1024-size global rel-pos tables at run time; we resize them once on load.
    ref_neck, ref_pooled = neck_and_pre_neck_mean(ref, x)
    features = model.forward_features(x)
    torch.testing.assert_close(model.neck(features), ref_neck, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model.finalize(features.permute(0, 2, 3, 1)), ref_pooled, rtol=1e-4, atol=1e-4)
    info = inspect_file(path)
    assert (info["layout"], info["architecture"], info["native_img_size"]) == ("sam-vit", "sam_vit_b", 1024)
    assert info["num_parameters"] == sum(p.numel() for p in ref.parameters())


@torch.no_grad()
@pytest.mark.parametrize("img_size", [224, 160])
def test_sam_tiny_file_matches_segment_anything(tmp_path, img_size):
    torch.manual_seed(3)
    ref = sam_encoder("sam_vit_tiny", 224)
    path = tmp_path / "tiny.pth"
    torch.save(ref.state_dict(), path)
    model = load_backbone(path, img_size=img_size).eval()
    assert model.name == "sam_vit_tiny"
    x = real_slices(img_size)
    ref_neck, ref_pooled = neck_and_pre_neck_mean(ref, x)
    torch.testing.assert_close(model.forward_neck(x), ref_neck, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model(x), ref_pooled, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- prefixes, reports, adaptation


@pytest.fixture(scope="module")
def resnet18_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(4)
    return torchvision.models.resnet18(weights=None).state_dict()


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
        lambda sd: {f"model.{k}": v for k, v in sd.items()},
        lambda sd: {f"encoder.{k}": v for k, v in sd.items()},
        lambda sd: {f"module.backbone.{k}": v for k, v in sd.items()},
        lambda sd: {**{f"backbone.{k}": v for k, v in sd.items()}, "projector.0.weight": torch.zeros(8, 512)},
        lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3},
    ],
    ids=["module", "model", "encoder", "module.backbone", "backbone+projector", "container"],
)
@torch.no_grad()
def test_every_prefix_variant_loads(tmp_path, resnet18_state, wrap):
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(resnet18_state), path)
    model = create_backbone("resnet18", pretrained=str(path)).eval()
    ref = torchvision.models.resnet18(weights=None)
    ref.load_state_dict(resnet18_state)
    ref.fc = nn.Identity()
    x = real_slices(64)
    torch.testing.assert_close(model(x), ref.eval()(x), rtol=1e-5, atol=1e-5)


def test_checkpoints_without_batchnorm_counters_load_with_zeroed_counters(tmp_path, resnet18_state):
    path = tmp_path / "old.pth"
    torch.save({k: v for k, v in resnet18_state.items() if not k.endswith("num_batches_tracked")}, path)
    model = create_backbone("resnet18", pretrained=str(path))  # built on the meta device, then loaded
    counters = [v for k, v in model.state_dict().items() if k.endswith("num_batches_tracked")]
    assert counters and all(int(c) == 0 for c in counters)
    assert torch.equal(model.bn1.running_var, resnet18_state["bn1.running_var"])


def test_wrong_architecture_is_a_readable_report_not_a_partial_load(tmp_path, resnet18_state):
    path = tmp_path / "r18.pth"
    torch.save(resnet18_state, path)
    model = create_backbone("resnet50")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightLoadError) as err:
        load_pretrained(model, path)
    text = str(err.value)
    assert "missing in checkpoint" in text and "shape mismatch" in text and "layer1.0.conv3.weight" in text
    assert "checkpoint [64, 64, 3, 3] vs model [64, 64, 1, 1]" in text
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(WeightLoadError, match="unexpected in checkpoint"):
        create_backbone("sam_vit_tiny", pretrained=str(path))
    with pytest.raises(WeightLoadError, match="holds a resnet50"):
        create_backbone("resnet18", pretrained=f"lvmmed-resnet50={path}")


@pytest.mark.parametrize("name", ["resnet18", "vit_tiny", "sam_vit_tiny"])
@torch.no_grad()
def test_one_channel_stem_equals_grey_replicated_to_rgb(tmp_path, name):
    size = 64
    rgb = create_backbone(name, in_chans=3, img_size=size).eval()
    save_pretrained(rgb, tmp_path / "rgb")
    grey = create_backbone(name, in_chans=1, pretrained=str(tmp_path / "rgb"), img_size=size).eval()
    x = real_slices(size, channels=1)
    torch.testing.assert_close(grey(x), rgb(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-5)
    report = load_pretrained(create_backbone(name, in_chans=1, img_size=size), tmp_path / "rgb")
    assert any("summed over 3 input channels" in line for line in report.adapted)


def test_timm_position_embedding_is_resized(tmp_path):
    torch.manual_seed(5)
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10)
    torch.save(net.state_dict(), tmp_path / "vit.pth")
    model = create_backbone("vit_tiny", pretrained=f"timm:{tmp_path / 'vit.pth'}", img_size=96)
    expected = timm.layers.resample_abs_pos_embed(net.pos_embed.detach(), [6, 6], num_prefix_tokens=1)
    torch.testing.assert_close(model.pos_embed.detach(), expected)
    report = load_pretrained(create_backbone("vit_tiny", img_size=96), tmp_path / "vit.pth")
    assert report.ignored == ["head.weight", "head.bias"] and any("abs pos resized" in a for a in report.adapted)


def test_sam_style_absolute_position_table_is_resized():
    holder = nn.Module()
    holder.pos_embed = nn.Parameter(torch.zeros(1, 8, 8, 4))
    table = torch.arange(16.0).reshape(1, 4, 4, 1).repeat(1, 1, 1, 4)
    report = LoadReport()
    out = adapt_state_dict({"pos_embed": table}, holder, report)["pos_embed"]
    assert out.shape == (1, 8, 8, 4) and report.adapted and "abs pos resized" in report.adapted[0]
    assert torch.all(out[0, :, 1:, 0] >= out[0, :, :-1, 0] - 1e-5)  # still increasing along the width axis


@pytest.mark.slow
@torch.no_grad()
def test_torchvision_vit_b16_converts_to_timm_keys(tmp_path):
    torch.manual_seed(6)
    ref = torchvision.models.vit_b_16(weights=None).eval()
    torch.save(ref.state_dict(), tmp_path / "vit_b_16.pth")
    model = create_backbone("vit_base", pretrained=f"torchvision:{tmp_path / 'vit_b_16.pth'}").eval()
    ref.heads = nn.Identity()
    x = real_slices(224)
    torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- exports and file safety


@torch.no_grad()
def test_safetensors_export_round_trip(tmp_path):
    model = create_backbone("sam_vit_tiny", in_chans=1, img_size=96).eval()
    out = save_pretrained(model, tmp_path / "export", extra_config={"method": "lvmmed-gm", "epoch": 7})
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "sam_vit_tiny" and config["in_chans"] == 1 and config["img_size"] == 96
    assert config["feature_dim"] == 96 and config["epoch"] == 7 and "lvmmed_version" in config
    loaded = load_backbone(out).eval()
    x = real_slices(96, channels=1)
    assert torch.equal(loaded(x), model(x))
    # Overwriting is atomic and leaves no temp dirs behind.
    save_pretrained(create_backbone("sam_vit_tiny", in_chans=1, img_size=96), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    assert not torch.equal(load_backbone(out).eval()(x), model(x))
    with pytest.raises(ValueError, match="may not override"):
        save_pretrained(model, tmp_path / "bad", extra_config={"architecture": "x"})
    with pytest.raises(WeightLoadError, match="holds a sam_vit_tiny"):
        load_backbone(out, name="resnet18")


def test_pickles_with_foreign_objects_are_refused(tmp_path, resnet18_state):
    path = tmp_path / "with_args.pth"
    torch.save({"state_dict": resnet18_state, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(WeightLoadError, match="weights_only"):
        create_backbone("resnet18", pretrained=str(path))
    truncated = tmp_path / "truncated.pth"
    torch.save(resnet18_state, truncated)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    with pytest.raises(WeightLoadError, match="cannot read"):
        load_backbone(truncated)


def test_missing_files_say_what_is_needed(tmp_path, monkeypatch):
    monkeypatch.setenv("LVMMED_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("LVMMED_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(WeightsNotFoundError) as err:
        create_backbone("sam_vit_b", pretrained="lvmmed-vitb")
    text = str(err.value)
    assert "lvmmed_vit.pth" in text and "LVM-Med" in text and "ngctnnnn/lvmmed_vit" in text
    assert "allow_network" in text
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        create_backbone("resnet18", pretrained=str(tmp_path / "nope.pth"))
    with pytest.raises(WeightsNotFoundError, match="not an lvmmed export"):
        create_backbone("resnet18", pretrained=str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(WeightsNotFoundError, match="downloads are off"):
        create_backbone("resnet50", pretrained="hf://ngctnnnn/lvmmed_rn50/pytorch_model.bin")


def test_cli_inspect_and_convert(tmp_path, resnet50_file, capsys):
    path, ref = resnet50_file
    assert main(["inspect", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["layout"], info["architecture"], info["in_chans"]) == ("torchvision-resnet", "resnet50", 3)
    assert info["num_parameters"] == sum(p.numel() for p in torchvision.models.resnet50().parameters())
    out = tmp_path / "r50.safetensors"
    assert main(["convert", str(path), "--to", "safetensors", "--out", str(out)]) == 0
    model = create_backbone("resnet50", pretrained=str(out)).eval()
    x = real_slices(64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)
    assert main(["inspect", str(tmp_path / "missing.pth")]) == 2
    assert "does not exist" in capsys.readouterr().err
    proc = subprocess.run(
        [sys.executable, "-m", "lvmmed.weights", "inspect", str(out)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and json.loads(proc.stdout)["architecture"] == "resnet50"


def test_export_normalisation_is_read_from_config_json(tmp_path):
    from lvmmed.models import create_backbone
    from lvmmed.weights import export_normalisation, save_pretrained

    save_pretrained(create_backbone("resnet18", in_chans=1), tmp_path / "a", {"input_mean": [0.4], "input_std": [0.3]})
    assert export_normalisation(tmp_path / "a") == pytest.approx((0.4, 0.3))
    save_pretrained(create_backbone("resnet18", in_chans=1), tmp_path / "b")
    assert export_normalisation(tmp_path / "b") is None
    assert export_normalisation("random") is None
