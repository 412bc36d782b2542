"""Every classification method on real MNI152 patches with tiny backbones (CPU): declared parameters train, the
frozen backbone stays bit-identical, and the reduction identities of VP, VPT, MoVL and GMoE hold."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from downstream.config import DownstreamConfig
from downstream.methods.adapter import AdapterTuning
from downstream.methods.gmoe import GMoEAdapter, load_balance_loss
from downstream.methods.movl import discrepancy
from downstream.methods.visual_prompt import PadPrompter, PatchPrompter
from downstream.registry import METHODS, Method, build_method, list_methods, resolve_key
from downstream.train_loop import train_method
from lvmmed.config import load_config
from lvmmed.models import create_backbone

CLS_METHODS = list_methods("classification")


def make_cfg(*overrides: str) -> DownstreamConfig:
    return load_config(DownstreamConfig, overrides=["img_size=32", "in_chans=1", "optim.batch_size=8", *overrides])


@pytest.fixture(scope="module")
def mni_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """16 real 32×32 patches of the MNI152 T1 (normalised) with bg/gm/wm labels from nilearn's probability maps."""
    import nibabel as nib

    from lvmmed.data import samples

    t1 = np.asarray(nib.load(samples.path("mni152_t1")).dataobj, dtype=np.float32)
    gm = np.asarray(nib.load(samples.path("mni152_gm")).dataobj, dtype=np.float32)
    wm = np.asarray(nib.load(samples.path("mni152_wm")).dataobj, dtype=np.float32)
    z = t1.shape[2] // 2
    sl, g, w = t1[:, :, z] / t1.max(), gm[:, :, z], wm[:, :, z]
    patches, labels = [], []
    rows = np.linspace(40, sl.shape[0] - 72, 4).astype(int)
    cols = np.linspace(40, sl.shape[1] - 72, 4).astype(int)
    for r in rows:
        for c in cols:
            patches.append(sl[r : r + 32, c : c + 32])
            cg, cw = g[r + 16, c + 16], w[r + 16, c + 16]
            labels.append(0 if max(cg, cw) < 64 else 1 if cg >= cw else 2)
    x = (torch.tensor(np.stack(patches))[:, None] - 0.5) / 0.25
    return x, torch.tensor(labels)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def build(key: str, backbone: str = "sam_vit_tiny", cfg: DownstreamConfig | None = None) -> Method:
    cfg = cfg or make_cfg("gmoe.num_experts=2")
    torch.manual_seed(0)
    bb = create_backbone(backbone, in_chans=1, img_size=32)
    if resolve_key(key)[0] == "gmoe-adapter":
        return GMoEAdapter(bb, 3, cfg, key=key, general_backbone=create_backbone(backbone, in_chans=1, img_size=32))
    return build_method(key, bb, 3, cfg)


def test_registry_has_every_issue_key():
    expected = {"linear", "mlp", "finetune", "partial-k", "vp-pad", "vp-fixed", "vp-random", "movl", "vpt-shallow",
                "vpt-deep", "adapter", "lora", "gmoe-adapter"}  # fmt: skip
    assert expected <= set(CLS_METHODS)
    assert resolve_key("partial-3") == ("partial-k", "3")
    with pytest.raises(KeyError, match="unknown method 'vpt-medium'"):
        resolve_key("vpt-medium")
    assert all(METHODS.get(k).task == "classification" for k in expected)


@pytest.mark.parametrize(
    "key",
    [k if k != "partial-k" else "partial-2" for k in CLS_METHODS if k != "knn"],  # knn: test_knn_method.py
)
def test_method_trains_only_declared_parameters(key, mni_batch):
    x, y = mni_batch
    cfg = make_cfg("optim.max_steps=3", "optim.warmup_frac=0", "gmoe.num_experts=2", "linear.solver=sgd")
    method = build(key, cfg=cfg)
    declared = set(method.declared_names)
    assert declared and all(p.requires_grad for p in method.trainable_parameters())
    params_before = {n: p.detach().clone() for n, p in method.named_parameters()}
    buffers_before = {n: b.detach().clone() for n, b in method.named_buffers()}
    method.train()
    out = method(x[:4])
    sum(method.losses(out, y[:4]).values()).backward()
    with_grad = {n for n, p in method.named_parameters() if p.grad is not None}
    method.zero_grad(set_to_none=True)
    assert with_grad <= declared
    info = train_method(method, x, y, cfg, seed=0)
    assert info["steps"] == 3 and np.isfinite(info["final_loss"])
    for n, p in method.named_parameters():
        late = {m for m in declared if "lora_A" in m or ".down." in m or "gates" in m}  # grads from step 2 on
        if n in with_grad | late and not n.startswith("backbone.neck"):
            assert not torch.equal(p, params_before[n]), f"{key}: declared {n} did not change"
        if n not in declared:
            assert torch.equal(p, params_before[n]), f"{key}: frozen {n} changed"
    for n, b in method.named_buffers():
        if not n.startswith("backbone") or key not in ("finetune", "partial-2"):
            assert torch.equal(b, buffers_before[n]), f"{key}: buffer {n} changed"
    report = method.parameter_report()
    assert report["trainable"] == sum(p.numel() for p in method.trainable_parameters())
    assert 0 < report["trainable_pct"] <= 100 and report["total"] >= report["backbone"]


@pytest.mark.parametrize("key", ["linear", "mlp", "vp-pad", "movl", "adapter", "gmoe-adapter", "partial-1"])
def test_frozen_resnet_bn_statistics_stay_bit_identical(key, mni_batch):
    x, y = mni_batch
    cfg = make_cfg("optim.max_steps=2", "linear.solver=sgd", "gmoe.num_experts=2")
    method = build(key, backbone="resnet18", cfg=cfg)
    frozen_blocks = ["layer1", "layer2", "layer3"] if key == "partial-1" else [""]
    before = {k: v for k, v in snapshot(method.backbone).items() if any(k.startswith(b) for b in frozen_blocks)}
    method.train()
    assert not method.backbone.bn1.training  # frozen sub-trees stay in eval() under train()
    train_method(method, x, y, cfg, seed=0)
    after = snapshot(method.backbone)
    assert before and all(torch.equal(v, after[k]) for k, v in before.items())
    if key == "partial-1":
        assert method.backbone.layer4.training is False  # train_method leaves the method in eval()
        method.train()
        assert method.backbone.layer4.training and not method.backbone.layer3.training


def test_vpt_with_zero_tokens_equals_plain_backbone(mni_batch):
    x, _ = mni_batch
    for backbone in ("sam_vit_tiny", "vit_tiny"):
        for key in ("vpt-shallow", "vpt-deep"):
            method = build(key, backbone, make_cfg("vpt.num_tokens=0")).eval()
            with torch.no_grad():
                plain = method.head(method.backbone(x[:4]))
                assert torch.allclose(method(x[:4]), plain, atol=1e-6)
            assert method.parameter_report()["trainable"] == method.backbone.feature_dim * 3 + 3


def test_vpt_parameter_counts_and_init(mni_batch):
    method = build("vpt-deep", "vit_tiny", make_cfg("vpt.num_tokens=4"))
    d, blocks = method.backbone.embed_dim, method.backbone.num_blocks
    assert method.prompts.shape == (blocks, 4, d)
    bound = (6.0 / (1 * 16 * 16 + d)) ** 0.5
    assert method.prompts.abs().max() <= bound and method.prompts.std() > bound / 4
    assert method.parameter_report()["trainable"] == blocks * 4 * d + d * 3 + 3
    with torch.no_grad():
        prompted = method(mni_batch[0][:2])
        plain = method.head(method.backbone(mni_batch[0][:2]))
    assert not torch.allclose(prompted, plain)
    with pytest.raises(ValueError, match="ViT"):
        build("vpt-shallow", "resnet18")


def test_visual_prompt_zero_prompt_is_identity_and_counts(mni_batch):
    x = mni_batch[0][:4]
    pad = PadPrompter(1, 32, 4, init="zeros")
    assert torch.equal(pad(x), x)
    assert sum(p.numel() for p in pad.parameters()) == 1 * (2 * 4 * 32 + 2 * 4 * (32 - 8))
    fixed = PatchPrompter(1, 32, 6, init="zeros")
    rand = PatchPrompter(1, 32, 6, random=True, init="zeros").train()
    assert torch.equal(fixed(x), x) and torch.equal(rand(x), x)
    pad_r = PadPrompter(3, 32, 4, init="randn")
    delta = pad_r(torch.zeros(1, 3, 32, 32))
    assert torch.count_nonzero(delta[..., 4:28, 4:28]) == 0 and torch.count_nonzero(delta[..., :4, :]) == 3 * 4 * 32
    with torch.no_grad():
        vp = build("vp-pad", cfg=make_cfg("vp.init=zeros")).eval()
        assert torch.allclose(vp(x), vp.head(vp.backbone(x)), atol=1e-6)


def test_movl_discrepancies_and_phases(mni_batch):
    a = torch.randn(5, 7)
    for kind in ("mse", "cos", "kl"):
        assert discrepancy(a, a, kind).abs() < 1e-6
        assert discrepancy(a + torch.randn(5, 7), a, kind) > 0
    cfg = make_cfg("movl.schedule=lp_then_vp", "movl.first_phase_frac=0.5", "optim.max_steps=4", "vp.init=zeros")
    method = build("movl", cfg=cfg)
    assert method.phases() == [("lp", 0.5), ("vp", 0.5)]
    method.set_phase("lp")
    assert all(p.requires_grad for p in method.head.parameters())
    assert not any(p.requires_grad for p in method.prompter.parameters())
    out = method.train()(mni_batch[0][:4])
    assert set(method.extra_loss(out)) == set()  # plain-input LP phase: no discrepancy
    method.set_phase("vp")
    assert not any(p.requires_grad for p in method.head.parameters())
    out = method.train()(mni_batch[0][:4])
    assert "discrepancy" in method.extra_loss(out)
    head0 = copy.deepcopy(method.head.state_dict())
    train_method(method, *mni_batch, cfg, seed=0)
    assert method.phase == "joint" and all(p.requires_grad for p in method.trainable_parameters())
    assert not torch.equal(head0["weight"], method.head.weight)
    with pytest.raises(Exception, match="kl"):
        make_cfg("movl.discrepancy=kl", "movl.space=feature")


def test_gmoe_with_one_expert_or_forced_top1_is_a_single_adapter(mni_batch):
    x = mni_batch[0][:4]
    torch.manual_seed(1)
    medical = create_backbone("sam_vit_tiny", in_chans=1, img_size=32)
    general = create_backbone("sam_vit_tiny", in_chans=1, img_size=32)
    adapter = AdapterTuning(copy.deepcopy(medical), 3, make_cfg())
    for a in adapter.adapters:  # non-trivial adapters (the zero-initialised up-projection would hide errors)
        torch.nn.init.normal_(a.up.weight, std=0.1)
    for cfg_over, chosen in ((["gmoe.num_experts=1"], 0), (["gmoe.num_experts=3", "gmoe.top_k=1"], 2)):
        gmoe = GMoEAdapter(copy.deepcopy(medical), 3, make_cfg(*cfg_over), general_backbone=general).eval()
        with torch.no_grad():
            for layer, experts in enumerate(gmoe.experts):
                experts[chosen].load_state_dict(adapter.adapters[layer].state_dict())
                gmoe.gates[layer].bias[chosen] = 50.0  # force the gate onto one expert
            gmoe.head.load_state_dict(adapter.head.state_dict())
            out = gmoe(x)
            assert torch.allclose(out["logits"], adapter.eval()(x), atol=1e-5)
        assert out["gate_probs"].shape == (medical.num_blocks, 4, gmoe.gc.num_experts)
    report = gmoe.parameter_report()
    assert report["param_multiple"] > 2.0  # two backbones + experts
    uniform = torch.full((2, 8, 4), 0.25)
    assert torch.isclose(load_balance_loss(uniform), torch.tensor(1.0))
    skewed = torch.tensor([0.97, 0.01, 0.01, 0.01]).expand(2, 8, 4)
    assert load_balance_loss(skewed) > 3.0


def test_delta_state_dict_round_trip(mni_batch):
    cfg = make_cfg("optim.max_steps=2")
    method = build("lora", cfg=cfg)
    train_method(method, *mni_batch, cfg, seed=0)
    delta = method.delta_state_dict()
    assert set(delta) == set(method.declared_names)
    assert all("lora_" in k or k.startswith("head") for k in delta)
    fresh = build("lora", cfg=cfg)
    fresh.load_delta_state_dict(delta)
    with torch.no_grad():
        assert torch.allclose(fresh.eval()(mni_batch[0]), method.eval()(mni_batch[0]), atol=1e-6)
    with pytest.raises(KeyError, match="missing"):
        fresh.load_delta_state_dict({})


def test_linear_probe_parameter_count_and_param_groups():
    cfg = make_cfg()
    method = build("linear", cfg=cfg)
    d = method.backbone.feature_dim
    assert method.parameter_report()["trainable"] == d * 3 + 3 and method.fit_mode == "features"
    vp = build("vp-pad", cfg=cfg)
    groups = {g["name"]: g["lr"] for g in vp.param_groups(cfg)}
    assert groups == {"prompt": cfg.vp.lr, "head": cfg.optim.head_lr}
