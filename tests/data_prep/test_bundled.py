"""The session fixture ``bundled_shards``: real bundled data → shard sets in the lvmmed format."""

from __future__ import annotations

import numpy as np
import pytest

from lvmmed.data import samples
from lvmmed.data.shards import META_FIELDS, load_arrays, load_manifest


def test_core_sets_exist_with_all_splits(bundled_shards):
    for name in ("mni152", "dicom_modality", "color2d"):
        manifest = load_manifest(bundled_shards[name])
        for split in ("train", "val", "test"):
            assert manifest.count(split) > 0, (name, split)
        assert manifest.data["counts"]["total"] == manifest.count()


def test_mni152_images_and_tissue_masks(bundled_shards):
    rows = load_arrays(bundled_shards["mni152"])
    manifest = load_manifest(bundled_shards["mni152"])
    assert manifest.mask_labels == ["background", "csf_like", "gm", "wm"]
    axes = {r["meta"]["axis"] for r in rows}
    assert axes == {0, 1, 2}
    seen = set()
    for r in rows:
        assert r["image"].dtype == np.float16 and r["image"].shape == (64, 64)
        assert float(r["image"].min()) >= 0.0 and float(r["image"].max()) <= 1.0
        assert r["mask"].dtype == np.uint8 and r["mask"].shape == (64, 64)
        seen |= set(np.unique(r["mask"]).tolist())
        assert set(r["meta"]) <= set(META_FIELDS)
    assert seen == {0, 1, 2, 3}
    # tissue ordering on T1: WM brighter than GM brighter than CSF-like, background darkest
    img = np.concatenate([r["image"].astype(np.float32).ravel() for r in rows])
    msk = np.concatenate([r["mask"].ravel() for r in rows])
    means = [img[msk == k].mean() for k in range(4)]
    assert means[0] < means[1] < means[2] < means[3]


def test_slab_groups_never_cross_splits(bundled_shards):
    for name in ("mni152", "dicom_modality", "color2d"):
        split_of: dict[str, str] = {}
        for r in load_arrays(bundled_shards[name]):
            g, s = r["meta"]["group"], r["meta"]["split"]
            assert split_of.setdefault(g, s) == s, f"{name}: group {g} in {split_of[g]} and {s}"


def test_dicom_modality_labels_match_modality(bundled_shards):
    manifest = load_manifest(bundled_shards["dicom_modality"])
    names = manifest.label_names
    assert {"CT", "MR", "CR", "US"} <= set(names)
    rows = load_arrays(bundled_shards["dicom_modality"])
    for r in rows:
        assert names[r["meta"]["label"]] == r["meta"]["label_name"] == r["meta"]["modality"]
        assert r["image"].ndim == 2  # channels=grey for this set
    patients = {}
    for r in rows:
        patients.setdefault(r["meta"]["patient"], set()).add(r["meta"]["split"])
    assert all(len(s) == 1 for s in patients.values())


def test_color2d_is_rgb_with_two_labels(bundled_shards):
    rows = load_arrays(bundled_shards["color2d"])
    assert {r["meta"]["label_name"] for r in rows} == {"fundus", "histology"}
    assert all(r["image"].shape == (64, 64, 3) for r in rows)


@pytest.mark.optional_data
@pytest.mark.skipif(not samples.source_available("mricron-data"), reason="needs Debian mricron-data (make data)")
def test_colin27_sets(bundled_shards):
    tissue = load_arrays(bundled_shards["colin27"])
    lobes = load_arrays(bundled_shards["colin27_aal"])
    assert {v for r in tissue for v in np.unique(r["mask"]).tolist()} == {0, 1, 2, 3}
    lobe_values = {v for r in lobes for v in np.unique(r["mask"]).tolist()}
    assert lobe_values >= {0, 1, 4, 5, 7, 8}  # frontal, occipital, parietal, temporal, cerebellum at least
    assert load_manifest(bundled_shards["colin27_aal"]).mask_labels[8] == "cerebellum"
