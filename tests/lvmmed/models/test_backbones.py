"""The backbone contract, checked table-driven on every small registered backbone, plus VPT prompt semantics."""

from __future__ import annotations

import copy
from functools import lru_cache, partial

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from segment_anything.modeling.image_encoder import ImageEncoderViT
from torch import nn

from lvmmed.data import samples
from lvmmed.models import create_backbone, list_backbones
from lvmmed.models.factory import SMALL_BACKBONES
from lvmmed.models.sam_vit import SAM_SPECS, prompted_block

# name -> img_size used in the contract tests (sam_vit_tiny at 160: grid 10, windows of 7 need padding)
SIZES = {"resnet18": 64, "vit_tiny": 96, "sam_vit_tiny": 160}
VITS = ("vit_tiny", "sam_vit_tiny")


@lru_cache(maxsize=1)
def _mni_mid_slices() -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    volume = np.asarray(nib.load(samples.path("mni152_t1")).dataobj, dtype=np.float32)
    return volume[:, :, volume.shape[2] // 2], volume[:, volume.shape[1] // 2, :]


def mni_slices(size: int, channels: int = 1) -> torch.Tensor:
    """Two real MNI152 T1 slices (axial and coronal), scaled to [0, 1] and resized to ``size``."""
    try:
        slices = _mni_mid_slices()
    except samples.MissingSampleError as err:
        pytest.skip(str(err))
    out = [F.interpolate(torch.from_numpy(s / s.max())[None, None], size=(size, size), mode="bilinear") for s in slices]
    return torch.cat(out).repeat(1, channels, 1, 1)


@pytest.fixture(scope="module", params=[(name, chans) for name in SMALL_BACKBONES for chans in (1, 3)], ids=str)
def built(request):
    name, chans = request.param
    torch.manual_seed(0)
    model = create_backbone(name, in_chans=chans, img_size=SIZES[name]).eval()
    return model, mni_slices(SIZES[name], chans)


def test_registry_lists_small_and_published_architectures():
    names = list_backbones()
    for name in (*SMALL_BACKBONES, "resnet50", "vit_base", "sam_vit_b"):
        assert name in names
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet9000' \(did you mean 'resnet\d+'\?"):
        create_backbone("resnet9000")


@torch.no_grad()
def test_contract_shapes_and_staged_interface(built):
    model, x = built
    pooled = model(x)
    assert pooled.shape == (2, model.feature_dim) and torch.isfinite(pooled).all()
    features = model.forward_features(x)
    assert features.shape[:2] == (2, model.feature_dim)
    maps = model.forward_multiscale(x)
    assert len(maps) == len(model.feature_channels) == len(model.feature_strides)
    for fmap, chans, stride in zip(maps, model.feature_channels, model.feature_strides):
        assert fmap.shape == (2, chans, x.shape[-2] // stride, x.shape[-1] // stride)
    h = model.prepare(x)
    for block in model.blocks:
        h = block(h)
    assert torch.equal(model.finalize(h), pooled)
    both = model.forward_pooled_and_features(x)
    assert torch.equal(both[0], pooled) and torch.equal(both[1], features)
    assert model.num_blocks == len(model.blocks) > 0
    assert model.config() == {"architecture": model.name, "in_chans": x.shape[1], "img_size": SIZES[model.name]}
    # Different real images give different features (the backbone is not degenerate).
    assert not torch.allclose(pooled[0], pooled[1])


def test_gradients_reach_every_block(built):
    model, x = built
    model.zero_grad()
    model(x).square().mean().backward()
    for i, block in enumerate(model.blocks):
        grads = [p.grad for p in block.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), f"block {i} got no gradient"
        assert any(g.abs().sum() > 0 for g in grads)
    model.zero_grad()


@torch.no_grad()
def test_deepcopy_is_independent_and_dtype_moves(built):
    model, x = built
    ref = model(x)
    clone = copy.deepcopy(model)
    for p in clone.parameters():
        p.add_(torch.randn_like(p) * 0.1)
    assert torch.equal(model(x), ref)
    assert not torch.allclose(clone(x), ref)
    double = copy.deepcopy(model).to(torch.float64)
    torch.testing.assert_close(double(x.double()).float(), ref, rtol=1e-4, atol=1e-4)


def test_state_dict_keys_are_the_reference_library_keys():
    resnet = torchvision.models.resnet18(weights=None).state_dict()
    ours = create_backbone("resnet18").state_dict()
    assert set(ours) == {k for k in resnet if not k.startswith("fc.")}
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0).state_dict()
    assert set(create_backbone("vit_tiny").state_dict()) == set(vit)
    spec = SAM_SPECS["sam_vit_tiny"]
    sam = ImageEncoderViT(
        img_size=160, embed_dim=spec.embed_dim, depth=spec.depth, num_heads=spec.num_heads,
        out_chans=spec.out_chans, use_abs_pos=False, use_rel_pos=True, window_size=spec.window_size,
        global_attn_indexes=spec.global_attn_indexes, norm_layer=partial(nn.LayerNorm, eps=1e-6),
    ).state_dict()  # fmt: skip
    ours = create_backbone("sam_vit_tiny", img_size=160).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in sam.items()}


@torch.no_grad()
def test_vit_matches_timm_and_survives_assign_loading():
    model = create_backbone("vit_tiny", in_chans=1, img_size=96).eval()
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, in_chans=1, img_size=96)
    ref.load_state_dict(model.state_dict())
    x = mni_slices(96)
    torch.testing.assert_close(model(x), ref.eval()(x), rtol=1e-5, atol=1e-6)
    fresh = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    model.load_state_dict(fresh, assign=True)  # replaces Parameter objects; prepare() must see the new ones
    ref.load_state_dict(fresh)
    torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- VPT prompts


@pytest.mark.parametrize("name", VITS)
@torch.no_grad()
def test_no_prompts_equal_the_plain_forward(name):
    model = create_backbone(name, in_chans=1, img_size=SIZES[name]).eval()
    x = mni_slices(SIZES[name])
    plain = model(x)
    empty_shallow, empty_deep = torch.zeros(0, model.embed_dim), torch.zeros(model.num_blocks, 0, model.embed_dim)
    for kwargs in ({}, {"shallow": empty_shallow}, {"deep": empty_deep}):
        out = model.forward_with_prompts(x, **kwargs)
        assert torch.equal(out.pooled, plain)
        assert len(out.hidden_states) == model.num_blocks
        assert torch.equal(out.hidden_states[-1], model.tokens_to_map(model.forward_blocks(x)[-1]))


@torch.no_grad()
def test_sam_prompted_block_with_empty_prompts_is_the_segment_anything_block():
    model = create_backbone("sam_vit_tiny", img_size=SIZES["sam_vit_tiny"]).eval()
    h = model.prepare(mni_slices(SIZES["sam_vit_tiny"], 3))
    for block in model.blocks:  # windowed (padded 10 -> 14) and global blocks alike
        grid, prompts = prompted_block(block, h, h.new_zeros(2, 0, model.embed_dim))
        h = block(h)
        torch.testing.assert_close(grid, h, rtol=0, atol=1e-6)
        assert prompts.shape == (2, 0, model.embed_dim)


@pytest.mark.parametrize("name", VITS)
@torch.no_grad()
def test_prompts_change_features_and_are_stripped(name):
    model = create_backbone(name, in_chans=1, img_size=SIZES[name]).eval()
    x = mni_slices(SIZES[name])
    shallow = torch.randn(5, model.embed_dim)
    out = model.forward_with_prompts(x, shallow=shallow)
    plain_maps = model.forward_multiscale(x)
    assert out.pooled.shape == (2, model.feature_dim)
    assert out.prompts.shape == (2, 5, model.embed_dim)
    assert all(h.shape == plain_maps[-1].shape for h in out.hidden_states)
    assert not torch.allclose(out.pooled, model(x))
    # Per-sample prompts (B, N, D) equal to the shared ones give the same result.
    per_sample = model.forward_with_prompts(x, shallow=shallow.expand(2, -1, -1))
    torch.testing.assert_close(per_sample.pooled, out.pooled)


@pytest.mark.parametrize("name", VITS)
@torch.no_grad()
def test_deep_prompts_replace_the_slice_before_every_block(name):
    model = create_backbone(name, in_chans=1, img_size=SIZES[name]).eval()
    x = mni_slices(SIZES[name])
    deep = torch.randn(model.num_blocks, 3, model.embed_dim)
    out = model.forward_with_prompts(x, deep=deep)
    # Shallow prompts = deep[0] only; they differ once later blocks get their own prompts.
    shallow = model.forward_with_prompts(x, shallow=deep[0])
    torch.testing.assert_close(out.hidden_states[0], shallow.hidden_states[0])
    assert not torch.allclose(out.hidden_states[1], shallow.hidden_states[1])
    # The last block's prompts only influence the last block's output.
    changed = deep.clone()
    changed[-1] += 1.0
    out2 = model.forward_with_prompts(x, deep=changed)
    for a, b in zip(out.hidden_states[:-1], out2.hidden_states[:-1]):
        torch.testing.assert_close(a, b)
    assert not torch.allclose(out.hidden_states[-1], out2.hidden_states[-1])
    with pytest.raises(ValueError, match="one set per block"):
        model.forward_with_prompts(x, deep=deep[:-1])


@torch.no_grad()
def test_timm_deep_prompts_match_a_manual_vpt_loop():
    model = create_backbone("vit_tiny", in_chans=1, img_size=96).eval()
    x = mni_slices(96)
    deep = torch.randn(model.num_blocks, 4, model.embed_dim)
    h = model.prepare(x)
    for i, block in enumerate(model.blocks):
        patches = h[:, 1:] if i == 0 else h[:, 5:]
        h = block(torch.cat([h[:, :1], deep[i].expand(2, -1, -1), patches], dim=1))
    expected = model.norm(torch.cat([h[:, :1], h[:, 5:]], dim=1))[:, 0]
    torch.testing.assert_close(model.forward_with_prompts(x, deep=deep).pooled, expected)


@torch.no_grad()
def test_sam_prompts_are_order_equivariant_and_reach_every_window():
    model = create_backbone("sam_vit_tiny", in_chans=1, img_size=224).eval()
    x = mni_slices(224)
    prompts = torch.randn(4, model.embed_dim)
    out = model.forward_with_prompts(x, shallow=prompts)
    perm = torch.tensor([2, 0, 3, 1])
    swapped = model.forward_with_prompts(x, shallow=prompts[perm])
    torch.testing.assert_close(swapped.pooled, out.pooled, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(swapped.prompts, out.prompts[:, perm], rtol=1e-5, atol=1e-5)
    # Block 0 is windowed (4 windows of 7x7 on a 14x14 grid): every window's tokens see the prompts.
    h = model.prepare(x)
    grid, _ = prompted_block(model.blocks[0], h, prompts.expand(2, -1, -1))
    delta = (grid - model.blocks[0](h)).abs().amax(dim=(0, 3))
    for wi in (0, 7):
        for wj in (0, 7):
            assert delta[wi : wi + 7, wj : wj + 7].max() > 1e-4


def test_prompt_gradients_flow():
    for name in VITS:
        model = create_backbone(name, in_chans=1, img_size=SIZES[name]).eval()
        deep = torch.randn(model.num_blocks, 2, model.embed_dim, requires_grad=True)
        model.forward_with_prompts(mni_slices(SIZES[name]), deep=deep).pooled.square().sum().backward()
        assert deep.grad is not None and (deep.grad.abs().sum(dim=(1, 2)) > 0).all()


def test_resnet_has_no_token_interface():
    model = create_backbone("resnet18")
    with pytest.raises(NotImplementedError, match="ViT"):
        model.forward_with_prompts(torch.zeros(1, 3, 32, 32), shallow=torch.zeros(1, 8))
