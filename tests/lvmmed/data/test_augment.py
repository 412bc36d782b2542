"""Two-view augmentations: presets, grayscale awareness, per-view asymmetry, determinism, validation."""

from __future__ import annotations

import pytest
import torch

from lvmmed.config import ConfigError, load_config
from lvmmed.data.augment import PRESETS, AugmentConfig, TwoViewTransform, ViewTransform
from lvmmed.data.channels import to_chw
from lvmmed.data.samples import path


@pytest.fixture(scope="module")
def mr_slice() -> torch.Tensor:
    import nibabel as nib
    import numpy as np

    vol = np.asarray(nib.load(path("mni152_t1")).dataobj, dtype=np.float32)
    sl = vol[:, :, vol.shape[2] // 2]
    return to_chw((sl - sl.min()) / (sl.max() - sl.min()))


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_fill_unset_fields_and_explicit_values_win(preset):
    cfg = load_config(AugmentConfig, overrides=[f"preset={preset}", "hue=0.05"])
    assert cfg.hue == 0.05
    assert cfg.min_scale == PRESETS[preset]["min_scale"]
    assert cfg.blur_prob == PRESETS[preset]["blur_prob"]


def test_vicregl_preset_is_asymmetric_and_deepcluster_is_not():
    v = load_config(AugmentConfig, overrides=["preset=vicregl"])
    d = load_config(AugmentConfig, overrides=["preset=deepcluster_v2"])
    assert v.blur_prob == [1.0, 0.1] and v.solarize_prob == [0.0, 0.2]
    assert d.blur_prob == [0.5, 0.5] and d.min_scale == 0.14


@pytest.mark.parametrize("in_chans", [1, 3])
def test_grey_image_gives_two_different_views_of_the_right_shape(mr_slice, in_chans):
    cfg = load_config(AugmentConfig, overrides=["size=48"])
    v0, v1 = TwoViewTransform(cfg, in_chans)(mr_slice)
    assert v0.shape == v1.shape == (in_chans, 48, 48)
    assert not torch.equal(v0, v1)
    assert torch.isfinite(v0).all() and v0.min() >= -1.0 - 1e-6 and v0.max() <= 1.0 + 1e-6
    if in_chans == 3:  # grey replicated: channels stay identical (no hue/saturation on grey data)
        assert torch.equal(v0[0], v0[1]) and torch.equal(v0[1], v0[2])


def test_hue_and_saturation_never_touch_one_channel_data(mr_slice, monkeypatch):
    cfg = load_config(AugmentConfig, overrides=["size=32", "jitter_prob=1.0", "grayscale_prob=1.0", "hue=0.5"])
    view = ViewTransform(cfg, 0, in_chans=1)
    called = []
    monkeypatch.setattr(view, "colour_jitter", lambda x: called.append("colour") or x)
    monkeypatch.setattr(view, "grey_jitter", lambda x: called.append("grey") or x)
    view(mr_slice)
    assert called == ["grey"]
    rgb = mr_slice.expand(3, -1, -1).clone()
    rgb[0] *= 0.5  # a colour image
    view3 = ViewTransform(cfg, 0, in_chans=3)
    monkeypatch.setattr(view3, "colour_jitter", lambda x: called.append("colour") or x)
    view3(rgb)
    assert called[-1] == "colour"


def test_views_are_deterministic_under_the_torch_seed(mr_slice):
    t = TwoViewTransform(load_config(AugmentConfig, overrides=["size=32"]), 1)
    torch.manual_seed(5)
    a = t(mr_slice)
    torch.manual_seed(5)
    b = t(mr_slice)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_preset_none_is_a_plain_resize(mr_slice):
    cfg = load_config(AugmentConfig, overrides=["preset=none", "size=32", "mean=[0.0]", "std=[1.0]"])
    v0, v1 = TwoViewTransform(cfg, 1)(mr_slice)
    assert torch.allclose(v0, v1)


@pytest.mark.parametrize("override", ["preset=simclr", "blur_prob=[0.5]", "min_scale=0.0", "min_scale=1.5"])
def test_invalid_recipes_are_config_errors(override):
    with pytest.raises(ConfigError):
        load_config(AugmentConfig, overrides=[override])


def test_mean_std_must_match_channels():
    cfg = load_config(AugmentConfig, overrides=["mean=[0.1,0.2]"])
    with pytest.raises(ValueError, match="mean/std"):
        ViewTransform(cfg, 0, in_chans=1)


def test_separable_blur_matches_torchvision(mr_slice):
    from torchvision.transforms import v2

    cfg = load_config(AugmentConfig, overrides=["size=64", "blur_sigma=[1.3,1.3]"])
    view = ViewTransform(cfg, 0, in_chans=1)
    x = v2.functional.resize(mr_slice, [64, 64], antialias=True)
    k = view.blur_kernel
    torch.testing.assert_close(view.blur(x), v2.functional.gaussian_blur(x, [k, k], [1.3, 1.3]), atol=1e-5, rtol=0)
