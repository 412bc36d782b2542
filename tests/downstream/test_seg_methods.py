"""Segmentation methods on real MNI152 slices: declared parameters, prompt stripping, zero prompts, mask guidance."""

from __future__ import annotations

import copy

import pytest
import torch

from downstream.registry import build_method, list_methods
from downstream.segmentation.config import SegmentationConfig
from downstream.segmentation.decoders import vit_skip_indices
from downstream.segmentation.loop import fit
from downstream.segmentation.mask_guided import MaskGuidedClassifier, OptionalDependencyMissing, sam2_masks
from downstream.segmentation.tasks import load_split, normalise
from lvmmed.config import load_config
from lvmmed.models import create_backbone


def small_vit(depth: int = 2):
    """vit_tiny at 64 px, truncated to ``depth`` blocks to keep CPU tests fast (the contract is unchanged)."""
    bb = create_backbone("vit_tiny", in_chans=1, img_size=64)
    bb.blocks = bb.blocks[:depth]
    return bb


def cfg_with(*overrides: str) -> SegmentationConfig:
    # Narrow decoders and one step of batch 2 keep these CPU checks to seconds (2 shared cores).
    base = ["optim.batch_size=2", "optim.max_steps=1", "unet.decoder_channels=[8,8,16,16]"]
    return load_config(SegmentationConfig, overrides=[*base, *overrides])


@pytest.fixture(scope="module")
def tissue(bundled_shards):
    data = load_split("seg_tissue", bundled_shards["mni152"].parent, "train", img_size=64)
    return data.subset(list(range(4)))


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _train_and_diff(method, data, cfg) -> tuple[set[str], set[str]]:
    before = _snapshot(method)
    prep = lambda xs: [normalise(xs[0], cfg.norm_mean, cfg.norm_std), *xs[1:]]  # noqa: E731
    fit(method, [data.images], data.masks, cfg, epochs=1, seed=0, augment=True, prepare=prep)
    after = method.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    return changed, set(method.declared_names)


def test_registry_lists_segmentation_methods():
    assert {"seg-unet", "seg-prompt-shallow", "seg-prompt-deep", "mask-guided"} <= set(list_methods("segmentation"))


@pytest.mark.parametrize(
    ("backbone", "freeze"),
    [("resnet18", True), ("resnet18", False), ("vit", True)],
    ids=["r18-frozen", "r18-ft", "vit-frozen"],
)
def test_seg_unet_trains_only_declared_parameters(tissue, backbone, freeze):
    cfg = cfg_with(f"unet.freeze_encoder={str(freeze).lower()}")
    bb = small_vit() if backbone == "vit" else create_backbone("resnet18", in_chans=1)
    method = build_method("seg-unet", bb, tissue.num_classes, cfg)
    changed, declared = _train_and_diff(method, tissue, cfg)
    encoder = {k for k in changed if k.startswith("backbone.")}
    if freeze:
        # Frozen encoder: no weight and no BatchNorm running statistic may move (kept in eval mode).
        assert not encoder, sorted(encoder)[:5]
        assert all(n.startswith("decoder.") for n in declared)
    else:
        assert any(k.startswith("backbone.layer4") for k in changed)
    changed_params = {k for k in changed if k in dict(method.named_parameters())}
    assert changed_params <= declared
    assert any(k.startswith("decoder.") for k in changed_params)


@pytest.mark.parametrize(("key", "tune_decoder"), [("seg-prompt-shallow", False), ("seg-prompt-deep", True)])
def test_prompt_segmenter_trains_only_prompts_and_optionally_decoder(tissue, key, tune_decoder):
    cfg = cfg_with("prompt.num_tokens=3", f"prompt.tune_decoder={str(tune_decoder).lower()}")
    method = build_method(key, small_vit(), tissue.num_classes, cfg)
    changed, declared = _train_and_diff(method, tissue, cfg)
    assert "prompts" in changed
    assert not {k for k in changed if k.startswith("backbone.")}
    assert {k for k in changed if k.startswith("decoder.")} if tune_decoder else changed == {"prompts"}
    assert {k for k in changed if k in dict(method.named_parameters())} <= declared
    delta = method.delta_state_dict()
    assert set(delta) == declared
    expected = (2, 3, 192) if key == "seg-prompt-deep" else (3, 192)
    assert tuple(delta["prompts"].shape) == expected
    report = method.parameter_report()
    if not tune_decoder:
        assert report["trainable"] == delta["prompts"].numel() and report["trainable_pct"] < 1.0


@pytest.mark.parametrize("deep", [False, True])
def test_prompt_stripping_keeps_decoder_shapes(tissue, deep):
    bb = small_vit()
    x = normalise(tissue.images[:2], 0.5, 0.25)
    plain = bb.forward_multiscale(x)
    cfg = cfg_with("prompt.num_tokens=5")
    method = build_method("seg-prompt-deep" if deep else "seg-prompt-shallow", bb, 4, cfg)
    hidden = method.hidden_maps(x)
    assert len(hidden) == bb.num_blocks
    assert all(h.shape == (2, 192, 4, 4) for h in hidden)
    assert [hidden[i].shape for i in vit_skip_indices(bb.num_blocks)] == [p.shape for p in plain]
    assert not torch.allclose(hidden[-1], plain[-1])  # the prompts do act on the patch tokens
    assert method(x).shape == (2, 4, 64, 64)


def test_zero_prompts_reproduce_the_plain_model(tissue):
    cfg = cfg_with("prompt.num_tokens=0")
    bb = small_vit()
    plain = build_method("seg-unet", copy.deepcopy(bb), 4, cfg).eval()
    x = normalise(tissue.images[:3], 0.5, 0.25)
    for key in ("seg-prompt-shallow", "seg-prompt-deep"):
        prompted = build_method(key, copy.deepcopy(bb), 4, cfg).eval()
        prompted.decoder.load_state_dict(plain.decoder.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(prompted(x), plain(x), rtol=0, atol=1e-5)


def test_prompt_segmenter_rejects_cnn_backbone():
    with pytest.raises(ValueError, match="needs a ViT backbone"):
        build_method("seg-prompt-deep", create_backbone("resnet18", in_chans=1), 4, cfg_with())


@pytest.mark.parametrize("attention_bias", [False, True])
def test_mask_guided_with_all_ones_mask_equals_unmasked_classifier(tissue, attention_bias):
    cfg = cfg_with(f"mask_guided.attention_bias={str(attention_bias).lower()}", "mask_guided.text_branch=learned")
    model = MaskGuidedClassifier(small_vit(), 3, cfg).eval()
    x = normalise(tissue.images[:4], 0.5, 0.25)
    with torch.no_grad():
        unmasked = model(x)["logits"]
        ones = model(x, torch.ones_like(tissue.masks[:4]))["logits"]
        roi = model(x, (tissue.masks[:4] > 0).long())["logits"]
    torch.testing.assert_close(ones, unmasked, rtol=0, atol=1e-5)
    assert not torch.allclose(roi, unmasked, atol=1e-4)  # a real ROI changes the prediction


def test_mask_guided_roi_input_restricts_to_roi(tissue):
    model = MaskGuidedClassifier(
        create_backbone("resnet18", in_chans=1), 3, cfg_with("mask_guided.text_branch=learned")
    )
    x = normalise(tissue.images[:2], 0.5, 0.25)
    m = (tissue.masks[:2] > 0).long()
    roi = model.roi_input(x, m)
    torch.testing.assert_close(roi[:, 0][m == 1], x[:, 0][m == 1])
    assert torch.all(roi[:, 0][m == 0] == model.background)  # black outside the ROI (alpha = 0)


def test_mask_guided_trains_head_only_and_loss_mixes_ce_and_alignment(tissue):
    cfg = cfg_with("mask_guided.lam=0.3", "mask_guided.text_branch=learned")
    labels = torch.arange(len(tissue)) % 3
    model = MaskGuidedClassifier(create_backbone("resnet18", in_chans=1), 3, cfg)
    out = model(normalise(tissue.images, 0.5, 0.25), tissue.masks)
    terms = model.losses(out, labels)
    assert set(terms) == {"task", "align"} and all(torch.isfinite(v) for v in terms.values())
    before = _snapshot(model)
    prep = lambda xs: [normalise(xs[0], 0.5, 0.25), *xs[1:]]  # noqa: E731
    fit(model, [tissue.images, (tissue.masks > 0).long()], labels, cfg, epochs=1, prepare=prep)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert changed and all(not k.startswith("backbone.") for k in changed)
    assert "class_embed" in changed


def test_optional_extras_absent_are_reported_clearly(tissue):
    cfg = cfg_with("mask_guided.mask_source=sam2")
    with pytest.raises(OptionalDependencyMissing, match="sam2"):
        sam2_masks(tissue.images[:1], cfg)
    with pytest.raises(OptionalDependencyMissing, match=r"open_clip|CLIP weight"):
        MaskGuidedClassifier(create_backbone("resnet18", in_chans=1), 3, cfg_with("mask_guided.text_branch=clip"))
    auto = MaskGuidedClassifier(create_backbone("resnet18", in_chans=1), 3, cfg_with("mask_guided.text_branch=auto"))
    assert auto.text_branch.startswith("learned class embeddings (")


def test_attention_bias_needs_a_timm_vit():
    cfg = cfg_with("mask_guided.attention_bias=true", "mask_guided.text_branch=learned")
    with pytest.raises(ValueError, match="attention_bias"):
        MaskGuidedClassifier(create_backbone("resnet18", in_chans=1), 3, cfg)
