"""Numpy metrics and statistics against sklearn / scipy references."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from downstream.metrics import classification_metrics, confusion, multilabel_metrics
from downstream.stats import bootstrap_ci, paired_bootstrap


def _case(seed: int, n: int = 120, c: int = 4, drop_pred_class: bool = False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y]
    logits = np.round(logits, 1)  # ties in the scores
    if drop_pred_class:
        logits[:, c - 1] -= 100
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, probs


@pytest.mark.parametrize("seed,c,drop", [(0, 4, False), (1, 3, True), (2, 2, False), (3, 9, False)])
def test_metrics_match_sklearn(seed, c, drop):
    y, probs = _case(seed, c=c, drop_pred_class=drop)
    pred = probs.argmax(1)
    ours = classification_metrics(y, probs)
    assert ours["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert ours["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert ours["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro", zero_division=0))
    ref_auc = skm.roc_auc_score(y, probs[:, 1]) if c == 2 else skm.roc_auc_score(y, probs, multi_class="ovr")
    assert ours["auroc"] == pytest.approx(ref_auc)
    assert np.array_equal(ours["confusion"], skm.confusion_matrix(y, pred, labels=range(c)))


def test_metrics_with_a_class_missing_from_the_test_labels():
    y, probs = _case(4, c=4)
    keep = y != 2
    y, probs = y[keep], probs[keep]
    ours = classification_metrics(y, probs)
    present = [0, 1, 3]
    ref = np.mean([skm.roc_auc_score(y == k, probs[:, k]) for k in present])
    assert ours["auroc"] == pytest.approx(ref)
    assert ours["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, probs.argmax(1)))
    assert np.isnan(classification_metrics(np.zeros(5, int), np.full((5, 2), 0.5))["auroc"])
    assert confusion(np.array([0, 1]), np.array([1, 1]), 3).tolist() == [[0, 1, 0], [0, 1, 0], [0, 0, 0]]


def test_multilabel_metrics_match_sklearn():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, (80, 3))
    probs = np.clip(0.35 * y + rng.uniform(0, 0.65, (80, 3)), 0, 1)
    ours = multilabel_metrics(y, probs)
    assert ours["auroc_per_label"] == pytest.approx(list(skm.roc_auc_score(y, probs, average=None)))
    assert ours["macro_f1"] == pytest.approx(skm.f1_score(y, probs >= 0.5, average="macro"))
    assert ours["accuracy"] == pytest.approx(skm.accuracy_score(y, probs >= 0.5))


def test_bootstrap_ci_is_seeded_and_brackets_the_estimate():
    y, probs = _case(6, n=300)
    point = classification_metrics(y, probs, with_confusion=False)
    ci = bootstrap_ci(y, probs, n_boot=300, seed=1)
    assert ci == bootstrap_ci(y, probs, n_boot=300, seed=1)
    assert ci != bootstrap_ci(y, probs, n_boot=300, seed=2)
    for k in ("accuracy", "balanced_accuracy", "macro_f1", "auroc"):
        assert ci[k][0] <= point[k] <= ci[k][1] and ci[k][1] - ci[k][0] < 0.25
    se = np.sqrt(point["accuracy"] * (1 - point["accuracy"]) / len(y))  # normal approximation
    assert ci["accuracy"][1] - ci["accuracy"][0] == pytest.approx(2 * 1.96 * se, rel=0.3)


def test_paired_bootstrap_detects_a_better_classifier():
    y, good = _case(7, n=300)
    rng = np.random.default_rng(0)
    bad = rng.dirichlet(np.ones(4), size=300)
    res = paired_bootstrap(y, good, bad, "accuracy", n_boot=300, seed=0)
    assert res["diff"] > 0.2 and res["ci_low"] > 0 and res["p_value"] < 0.01
    same = paired_bootstrap(y, good, good, "accuracy", n_boot=50)
    assert same["diff"] == 0.0


def test__result_files_are_strict_json_with_null_for_undefined_metrics(tmp_path):
    """AUROC on a one-class test split is undefined: result.json says null, never a bare NaN token."""
    import json

    import torch

    from downstream.runtime import write_result_files

    metrics = classification_metrics(np.zeros(5, int), np.full((5, 2), 0.5))
    result = {"metrics": metrics, "curve": np.array([0.5, np.inf]), "t": torch.tensor([1.0, float("nan")])}
    write_result_files(result, {"accuracy": metrics["accuracy"]}, tmp_path)

    def refuse(token):
        raise ValueError(f"non-strict JSON token {token}")

    stored = json.loads((tmp_path / "result.json").read_text(), parse_constant=refuse)
    assert stored["metrics"]["auroc"] is None and stored["metrics"]["accuracy"] == metrics["accuracy"]
    assert stored["curve"] == [0.5, None] and stored["t"] == [1.0, None]
