"""The tuning protocol on real MNI152 patches and the bundled shards: the chosen state is never below the initial
state on val, the grid is chosen on val and test is evaluated once, chance/divergence flags, the feature cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from downstream import features
from downstream.config import DownstreamConfig
from downstream.methods.linear import fit_logistic_probe
from downstream.registry import build_method
from downstream.train_loop import Trainer, extract_features, predict_probs, train_method
from downstream.tuning import candidates, chance_score, score, tune
from lvmmed.config import load_config
from lvmmed.models import create_backbone


@pytest.fixture(scope="module")
def mni_task() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Real 32×32 MNI152 T1 patches labelled background / gm / wm; train and val from different axial slices."""
    import nibabel as nib

    from lvmmed.data import samples

    t1 = np.asarray(nib.load(samples.path("mni152_t1")).dataobj, dtype=np.float32)
    gm = np.asarray(nib.load(samples.path("mni152_gm")).dataobj, dtype=np.float32)
    wm = np.asarray(nib.load(samples.path("mni152_wm")).dataobj, dtype=np.float32)
    xs, ys = {}, {}
    for split, z in (("train", t1.shape[2] // 2), ("val", t1.shape[2] // 2 + 12)):
        patches, labels = [], []
        for r in np.linspace(30, t1.shape[0] - 62, 6).astype(int):
            for c in np.linspace(30, t1.shape[1] - 62, 6).astype(int):
                patches.append(t1[r : r + 32, c : c + 32, z] / t1.max())
                g, w = gm[r + 16, c + 16, z], wm[r + 16, c + 16, z]
                labels.append(0 if max(g, w) < 64 else 1 if g >= w else 2)
        xs[split] = (torch.tensor(np.stack(patches))[:, None] - 0.5) / 0.25
        ys[split] = torch.tensor(labels)
    return xs, ys


def make_cfg(*overrides: str) -> DownstreamConfig:
    base = ["img_size=32", "optim.batch_size=8", "tuning.max_steps=6", "tuning.rung_steps=3", "tuning.eval_every=3",
            "tuning.lr_batch_scale=false", "tuning.min_delta=0.0"]  # fmt: skip
    return load_config(DownstreamConfig, overrides=[*base, *overrides])


def probe_initialised(key: str, cfg: DownstreamConfig, xs, ys):
    torch.manual_seed(0)
    method = build_method(key, create_backbone("vit_tiny", in_chans=1, img_size=32), 3, cfg)
    feats = {k: extract_features(method, xs[k]) for k in ("train", "val")}
    probe = fit_logistic_probe(feats["train"], ys["train"].numpy(), 3, feats["val"], ys["val"].numpy(), [1.0])
    method.load_probe(probe.weight, probe.bias)
    return method


def val_score(method, xs, ys) -> float:
    return score(ys["val"].numpy(), predict_probs(method, xs["val"]), "balanced_accuracy")


@pytest.mark.parametrize("confidence", [0.0, 0.9])
@pytest.mark.parametrize("lr", [30.0, 0.5])
def test_selection_never_ends_below_the_lp_start_on_val(mni_task, lr, confidence):
    xs, ys = mni_task
    cfg = make_cfg("method=movl", f"tuning.spaces.movl.lr=[{lr}]", "tuning.spaces.movl.head_lr=[1.0]",
                   f"tuning.replace_confidence={confidence}")  # fmt: skip
    method = probe_initialised("movl", cfg, xs, ys)
    start = val_score(method, xs, ys)
    out: dict = {}
    chosen = tune(method, cfg, xs, ys, out)
    assert out["tuning"]["initial_val"] == pytest.approx(start)
    assert val_score(chosen, xs, ys) >= start - 1e-9
    assert val_score(chosen, xs, ys) == pytest.approx(out["tuning"]["chosen_val"])
    best = max(c["best_val"] for c in out["tuning"]["candidates"])
    test = out["tuning"]["replacement_test"]
    if confidence == 0 or best <= start:
        assert test is None and out["tuning"]["chosen_val"] == pytest.approx(max(best, start))
    else:  # a gain is kept only when the paired bootstrap says it is more than val noise
        assert test["diff"] == pytest.approx(best - start)
        assert out["tuning"]["chosen_val"] == pytest.approx(best if test["significant"] else start)
        assert test["significant"] == (test["ci_low"] > 0)
    if out["best_hparams"].get("initial"):  # the initial state is returned bit for bit
        assert torch.equal(chosen.prompter.pad_up, torch.zeros_like(chosen.prompter.pad_up))


def test_grid_has_every_candidate_and_scaled_lrs():
    cfg = make_cfg("method=vpt-deep", "tuning.lr_batch_scale=true", "tuning.spaces.vpt.lr=[10.0,1.0]",
                   "tuning.spaces.vpt.wd=[0.0,0.001]", "tuning.spaces.vpt.head_lr=[0.08]")  # fmt: skip
    grid = candidates(cfg)
    assert len(grid) == 4
    assert sorted({c.cfg.vpt.lr for c in grid}) == pytest.approx([1.0 * 8 / 256, 10.0 * 8 / 256])
    assert {c.cfg.optim.weight_decay for c in grid} == {0.0, 0.001}
    assert all(c.cfg.optim.head_lr == pytest.approx(0.08 * 8 / 256) for c in grid)
    movl = candidates(make_cfg("method=movl"))
    assert {(c.cfg.movl.weight, c.cfg.movl.schedule) for c in movl} == {(1.0, "joint"), (0.1, "joint"),
                                                                       (1.0, "vp_then_lp")}  # fmt: skip


def test_divergence_and_chance_flags(mni_task):
    xs, ys = mni_task
    cfg = make_cfg("method=vp-pad", "tuning.spaces.vp.lr=[1e30]", "tuning.spaces.vp.head_lr=[1e30]")
    torch.manual_seed(0)
    method = build_method("vp-pad", create_backbone("vit_tiny", in_chans=1, img_size=32), 3, cfg)
    with torch.no_grad():  # a constant classifier: balanced accuracy = 1/C, the chance level
        method.head.weight.zero_()
        method.head.bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
    out: dict = {}
    tune(method, cfg, xs, ys, out)
    assert out["flags"]["diverged"] == ["c0"]
    assert "is nan" in out["tuning"]["candidates"][0]["error"] or "is inf" in out["tuning"]["candidates"][0]["error"]
    assert out["flags"]["val_at_chance"] and out["best_hparams"] == {"initial": True}
    y = ys["val"].numpy()
    assert chance_score(y, 3, "balanced_accuracy") == pytest.approx(1 / 3)
    assert chance_score(y, 3, "accuracy") == pytest.approx(np.bincount(y).max() / len(y))


def test_feature_cache_equals_uncached_features(mni_task):
    xs, _ = mni_task
    features.clear()
    torch.manual_seed(0)
    method = build_method("linear", create_backbone("vit_tiny", in_chans=1, img_size=32), 3, make_cfg())
    uncached = extract_features(method, xs["train"], 16)
    first = features.frozen_features(method, xs["train"], 16)
    again = features.frozen_features(method, xs["train"], 7)
    np.testing.assert_array_equal(first, uncached)
    np.testing.assert_array_equal(again, uncached)
    assert features.STATS == {"hits": 1, "misses": 1}
    with torch.no_grad():  # other weights: a miss, with the new features
        method.backbone.norm.weight.mul_(2.0)
    changed = features.frozen_features(method, xs["train"], 16)
    np.testing.assert_array_equal(changed, extract_features(method, xs["train"], 16))
    assert features.STATS["misses"] == 2 and not np.array_equal(changed, uncached)


def test_chunked_trainer_equals_one_pass(mni_task):
    xs, ys = mni_task
    cfg = make_cfg("method=vp-pad", "optim.max_steps=6", "augment=true")
    torch.manual_seed(0)
    a = build_method("vp-pad", create_backbone("vit_tiny", in_chans=1, img_size=32), 3, cfg)
    b = build_method("vp-pad", create_backbone("vit_tiny", in_chans=1, img_size=32), 3, cfg)
    b.load_delta_state_dict(a.delta_state_dict())
    b.backbone.load_state_dict(a.backbone.state_dict())
    train_method(a, xs["train"], ys["train"], cfg, seed=3)
    trainer = Trainer(b, xs["train"], ys["train"], cfg, seed=3)
    for n in (1, 2, 3):
        trainer.advance(n)
    for name, tensor in a.delta_state_dict().items():
        torch.testing.assert_close(tensor, b.delta_state_dict()[name])


def test_run_selects_on_val_and_evaluates_test_once(bundled_shards, tmp_path, monkeypatch):
    from downstream import fitting, run, tuning

    data_root = str(next(iter(bundled_shards.values())).parent)
    seen_splits, evaluated = [], []
    real_tune, real_evaluate = tuning.tune, run.evaluate_split

    def spy_tune(method, cfg, xs, ys, out):
        seen_splits.append(sorted(xs))
        return real_tune(method, cfg, xs, ys, out)

    def spy_evaluate(method, x, y, cfg, *args):
        evaluated.append(len(y))
        return real_evaluate(method, x, y, cfg, *args)

    monkeypatch.setattr(fitting, "tune", spy_tune)
    monkeypatch.setattr(run, "evaluate_split", spy_evaluate)
    cfg = load_config(DownstreamConfig, overrides=[
        "task=tissue", "method=vpt-deep", "vpt.num_tokens=2", "backbone=vit_tiny", "img_size=32", "max_per_class=12",
        "patch_stride=8", "bootstrap=20", "progress=false", "save_delta=false", "optim.batch_size=16",
        "tuning.max_steps=4", "tuning.rung_steps=2", "tuning.eval_every=2", "tuning.spaces.vpt.lr=[10.0,1.0]",
        f"data_root={data_root}", f"output_dir={tmp_path}"])  # fmt: skip
    res = run.run_experiment(cfg)
    assert res["status"] == "ok", res["error"]
    assert seen_splits == [["train", "val"]]
    assert evaluated.count(res["n_test"]) == 1 and len(evaluated) == 1 + (res["ood"] is not None)
    cands = res["tuning"]["candidates"]
    assert len(cands) == 2 and res["tuning"]["chosen_val"] == max([c["best_val"] for c in cands]
                                                                   + [res["tuning"]["initial_val"]])  # fmt: skip
    assert res["val_metrics"]["balanced_accuracy"] == pytest.approx(res["tuning"]["chosen_val"])
    assert set(res["flags"]) == {"val_at_chance", "diverged", "collapsed"}


def test_head_only_grid_on_cached_features_scores_like_the_full_forward(mni_task):
    xs, ys = mni_task
    cfg = make_cfg("method=mlp", "tuning.spaces.head.lr=[0.5,0.05]", "tuning.spaces.head.wd=[0.0]", "augment=true")
    torch.manual_seed(0)
    method = build_method("mlp", create_backbone("vit_tiny", in_chans=1, img_size=32), 3, cfg)
    out: dict = {}
    chosen = tune(method, cfg, xs, ys, out)
    assert len(out["tuning"]["candidates"]) == 2
    assert val_score(chosen, xs, ys) == pytest.approx(out["tuning"]["chosen_val"])


def test_standardized_head_keeps_the_initial_logits(mni_task):
    from downstream.head_standardizer import FeatureStandardizer, standardize_head

    xs, ys = mni_task
    cfg = make_cfg("method=vpt-deep", "vpt.num_tokens=2")
    method = probe_initialised("vpt-deep", cfg, xs, ys)
    before = predict_probs(method, xs["val"])
    assert standardize_head(method, torch.as_tensor(extract_features(method, xs["train"])))
    assert isinstance(method.head[0], FeatureStandardizer) and "head.1.weight" in method.declared_names
    np.testing.assert_allclose(predict_probs(method, xs["val"]), before, atol=1e-5)
    assert not standardize_head(method, torch.zeros(4, method.backbone.feature_dim))  # already wrapped


def test_folding_the_standardizer_keeps_logits_and_gives_a_loadable_delta(mni_task):
    from downstream.head_standardizer import fold_standardizer, standardize_head

    xs, ys = mni_task
    cfg = make_cfg("method=vpt-deep", "vpt.num_tokens=2")
    method = probe_initialised("vpt-deep", cfg, xs, ys)
    fresh_keys = set(method.delta_state_dict())
    assert standardize_head(method, torch.as_tensor(extract_features(method, xs["train"])))
    before = predict_probs(method, xs["val"])
    assert fold_standardizer(method) and not fold_standardizer(method)
    np.testing.assert_allclose(predict_probs(method, xs["val"]), before, atol=1e-5)
    delta = method.delta_state_dict()
    assert set(delta) == fresh_keys
    fresh = build_method("vpt-deep", method.backbone, method.num_classes, cfg)
    fresh.load_delta_state_dict(delta)
    np.testing.assert_allclose(predict_probs(fresh, xs["val"]), before, atol=1e-5)


def test_replacement_test_separates_a_real_gain_from_val_noise():
    """Per-sample predictions of two states on 300 val samples: a gain of one sample is noise, of 60 it is not."""
    from downstream.tuning import replacement_test

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    init = np.eye(3)[np.where(rng.random(300) < 0.5, y, (y + 1) % 3)]
    one_more, many_more = init.copy(), init.copy()
    wrong = np.flatnonzero(init.argmax(1) != y)
    one_more[wrong[:1]] = np.eye(3)[y[wrong[:1]]]
    many_more[wrong[:60]] = np.eye(3)[y[wrong[:60]]]
    noise = replacement_test(y, one_more, init, "accuracy", 0.9, seed=0)
    real = replacement_test(y, many_more, init, "accuracy", 0.9, seed=0)
    assert noise["diff"] == pytest.approx(1 / 300) and not noise["significant"]
    assert real["diff"] == pytest.approx(60 / 300) and real["significant"]
