"""Split files: deterministic, group-wise (no patient leaks), k-shot and fraction subsets, saved and reloaded."""

from __future__ import annotations

import numpy as np
import pytest

from downstream.splits import (
    SplitLeakError,
    check_no_leak,
    load_splits,
    make_splits,
    save_splits,
    subsample_train,
)


@pytest.fixture(scope="module")
def dicom_arrays(bundled_shards):
    """Labels and salted patient groups of the real bundled DICOM set."""
    from lvmmed.data.shards import load_arrays

    samples = load_arrays(bundled_shards["dicom_modality"])
    labels = np.array([s["meta"]["label"] for s in samples])
    groups = np.array([s["meta"]["group"] for s in samples])
    patients = np.array([s["meta"]["patient"] for s in samples])
    shard = np.array([s["meta"]["split"] for s in samples])
    return labels, groups, patients, shard


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_splits_never_leak_patients(dicom_arrays, seed):
    labels, groups, patients, shard = dicom_arrays
    splits = make_splits(labels, groups, shard, "group", seed, val_frac=0.2, test_frac=0.3)
    sets = [set(patients[splits[s]]) for s in ("train", "val", "test")]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sum(len(v) for v in splits.values()) == len(labels)
    assert all(len(v) for v in splits.values())


def test_shard_splits_follow_the_shard_set(dicom_arrays):
    labels, groups, patients, shard = dicom_arrays
    splits = make_splits(labels, groups, shard, "shard", seed=0)
    for name, idx in splits.items():
        assert set(shard[idx]) <= {name}
    check_no_leak(splits, patients)


def test_splits_are_deterministic_and_seed_dependent(dicom_arrays, tmp_path):
    labels, groups, _, shard = dicom_arrays
    a = make_splits(labels, groups, shard, "group", 3)
    b = make_splits(labels, groups, shard, "group", 3)
    c = make_splits(labels, groups, shard, "group", 4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)
    path = save_splits(tmp_path / "splits.json", a, {"seed": 3})
    loaded = load_splits(path)
    assert all(np.array_equal(a[k], loaded[k]) for k in a)


def test_image_level_split_can_leak_and_is_detected():
    groups = np.repeat(np.arange(10).astype(str), 6)
    labels = np.tile(np.arange(3), 20)
    random_split = make_splits(labels, groups, np.array(["train"] * 60), "random", seed=0)
    with pytest.raises(SplitLeakError):
        check_no_leak(random_split, groups)
    grouped = make_splits(labels, groups, np.array(["train"] * 60), "group", seed=0)
    check_no_leak(grouped, groups)


@pytest.mark.parametrize("shot", [1, 2, 4, 8, 16])
def test_k_shot_per_class(shot):
    labels = np.repeat(np.arange(4), [30, 12, 5, 20])
    train = np.arange(len(labels))
    sub = subsample_train(train, labels, seed=0, shot=shot)
    counts = np.bincount(labels[sub], minlength=4)
    assert counts.tolist() == [min(shot, n) for n in (30, 12, 5, 20)]
    assert np.array_equal(sub, subsample_train(train, labels, seed=0, shot=shot))


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.2, 0.5, 1.0])
def test_data_fractions_are_stratified(fraction):
    labels = np.repeat(np.arange(3), [100, 40, 10])
    train = np.arange(len(labels))
    sub = subsample_train(train, labels, seed=1, fraction=fraction)
    counts = np.bincount(labels[sub], minlength=3)
    assert counts.tolist() == [max(1, int(np.ceil(fraction * n))) for n in (100, 40, 10)]
