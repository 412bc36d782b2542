"""The head-free ``knn`` method: the monitor's weighted k-NN vote on frozen features, fitted through the runner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from downstream.config import DownstreamConfig
from downstream.fitting import fit_method, predict
from downstream.registry import build_method, list_methods
from downstream.run import load_delta, run_experiment
from downstream.tasks import load_task
from downstream.train_loop import train_method
from lvmmed.config import load_config
from lvmmed.models import create_backbone
from lvmmed.probes import knn_predict_labels, knn_vote_scores


@pytest.fixture(scope="module")
def tissue(bundled_shards):
    task = load_task("tissue", next(iter(bundled_shards.values())).parent, 16, 8, 60)
    x = (torch.from_numpy(task.images) - 0.5) / 0.25
    return {s: (x[task.splits == s], torch.from_numpy(task.labels[task.splits == s])) for s in ("train", "val", "test")}


def _cfg(*overrides: str) -> DownstreamConfig:
    return load_config(DownstreamConfig, overrides=["img_size=16", "in_chans=1", *overrides])


def test_vote_scores_are_the_weighted_vote_of_the_monitor(tissue):
    """On real pixel features: the arg-max of the torch vote is the sklearn vote of ``knn_predict_labels``."""
    (x, y), (q, _) = tissue["train"], tissue["test"]
    for k in (5, 20):
        shares = knn_vote_scores(x.flatten(1), y, q.flatten(1), 4, k, 0.07)
        assert shares.shape == (len(q), 4) and torch.allclose(shares.sum(1), torch.ones(len(q), dtype=shares.dtype))
        assert shares.argmax(1).tolist() == knn_predict_labels(x.flatten(1), y, q.flatten(1), 4, k, 0.07).tolist()
    with pytest.raises(ValueError, match="memory labels"):
        knn_vote_scores(x.flatten(1), y + 4, q.flatten(1), 4)


def test_knn_method_fits_on_frozen_features_and_predicts_their_vote(tissue):
    assert "knn" in list_methods("classification")
    cfg = _cfg("method=knn")
    torch.manual_seed(0)
    method = build_method("knn", create_backbone("vit_tiny", in_chans=1, img_size=16), 4, cfg)
    before = {n: p.detach().clone() for n, p in method.backbone.named_parameters()}
    xs, ys = {s: v[0] for s, v in tissue.items()}, {s: v[1] for s, v in tissue.items()}
    record: dict = {}
    fitted = fit_method(method, cfg, xs, ys, record)
    assert fitted is method and record["best_hparams"]["memory"] == len(ys["train"])
    assert method.parameter_report()["trainable"] == len(ys["train"]) * method.backbone.feature_dim
    probs = predict(method, xs["test"], cfg)
    with torch.no_grad():
        feats = {s: method.backbone(xs[s]) for s in ("train", "test")}
    expected = knn_predict_labels(feats["train"], ys["train"], feats["test"], 4, 20, 0.07)
    assert probs.argmax(1).tolist() == expected.tolist()
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert all(torch.equal(p, before[n]) for n, p in method.backbone.named_parameters())


def test_unfitted_knn_is_uniform_and_survives_the_sgd_loop(tissue):
    cfg = _cfg("optim.max_steps=2", "optim.batch_size=8")
    method = build_method("knn", create_backbone("vit_tiny", in_chans=1, img_size=16), 4, cfg)
    x, y = tissue["train"]
    assert np.allclose(predict(method, x[:5], cfg), 0.25)
    assert train_method(method, x[:16], y[:16], cfg, seed=0)["steps"] == 2


def test_knn_runs_end_to_end_and_its_delta_reloads(bundled_shards, tmp_path):
    root = next(iter(bundled_shards.values())).parent
    cfg = _cfg("method=knn", "task=tissue", f"data_root={root}", "patch_size=16", "patch_stride=8",
               "max_per_class=40", "bootstrap=20", "progress=false", f"output_dir={tmp_path}")  # fmt: skip
    result = run_experiment(cfg)
    assert result["status"] == "ok", result.get("error")
    assert result["best_hparams"]["k"] == 20 and result["n_test"] > 0
    reloaded = load_delta(tmp_path)
    assert len(reloaded.memory) == result["n_train"] and reloaded.memory_labels.dtype == torch.long
