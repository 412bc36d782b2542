"""Labelled eval arrays from real bundled shard sets: image labels, mask patches, balanced caps, clear refusals."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from lvmmed.data.labelled_sets import LabelledSetError, balanced_subset, load_labelled_set, patch_labels
from lvmmed.data.shards import iter_samples


def test_image_labels_keep_every_sample_of_each_split(bundled_shards):
    root = bundled_shards["dicom_modality"]
    manifest = json.loads((root / "manifest.json").read_text())
    data = load_labelled_set(root, ("train", "val"))
    assert data.kind == "image" and data.class_names == manifest["label_names"]
    for split in ("train", "val"):
        expected = [int(s["meta"]["label"]) for s in iter_samples(root, split)]
        assert data.splits[split].labels.tolist() == expected
        assert len(data.splits[split].images) == manifest["counts"][split]
        assert all(img.ndim == 3 and img.shape[0] == 1 and img.dtype == np.float32 for img in data.splits[split].images)


def test_mask_patches_follow_the_downstream_patch_convention(bundled_shards):
    """Same positions and central-majority labels as downstream's patch tasks (downstream/tasks.py)."""
    from downstream.tasks import centre_label

    root = bundled_shards["mni152"]
    samples = list(iter_samples(root, "val"))
    data = load_labelled_set(root, ("train", "val"), patch_size=16, patch_stride=8)
    assert data.kind == "mask" and data.class_names == ["background", "csf_like", "gm", "wm"]
    val = data.splits["val"]
    h, w = samples[0]["mask"].shape
    cols = (w - 16) // 8 + 1
    per_slice = ((h - 16) // 8 + 1) * cols
    assert len(val) == per_slice * len(samples) and val.images[0].shape == (1, 16, 16)
    expected = [
        centre_label(s["mask"][r : r + 16, c : c + 16], 2)
        for s in samples
        for r in range(0, h - 15, 8)
        for c in range(0, w - 15, 8)
    ]
    assert val.labels.tolist() == expected
    first = np.asarray(samples[0]["image"], dtype=np.float32)[None, 8:24, 16:32]  # row 1, column 2 of slice 0
    assert np.array_equal(val.images[1 * cols + 2], first)
    assert len(set(val.labels.tolist())) >= 3  # a real mix of tissues, not a constant


def test_patch_labels_break_ties_towards_the_smaller_value():
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[7:9, 7] = 3  # central 2x2 window: two 3s and two 0s
    assert patch_labels(mask, 16, 16).tolist() == [[0]]
    mask[7, 8] = 3
    assert patch_labels(mask, 16, 16).tolist() == [[3]]


def test_balanced_cap_is_fixed_and_gives_each_class_its_turn(bundled_shards):
    root = bundled_shards["mni152"]
    full = load_labelled_set(root, ("train", "val"))
    capped = load_labelled_set(root, ("train", "val"), max_samples=120)
    again = load_labelled_set(root, ("train", "val"), max_samples=120)
    counts_full = np.bincount(full.splits["train"].labels, minlength=4)
    counts = np.bincount(capped.splits["train"].labels, minlength=4)
    assert counts.sum() == 120 and counts.tolist() == np.minimum(counts_full, 30).tolist()
    assert capped.splits["train"].labels.tolist() == again.splits["train"].labels.tolist()
    assert all(np.array_equal(a, b) for a, b in zip(capped.splits["train"].images, again.splits["train"].images))
    labels = np.array([0] * 50 + [1] * 3 + [2] * 10)
    keep = balanced_subset(labels, 12, "salt")
    assert np.bincount(labels[keep]).tolist() == [5, 3, 4]  # 3 turns of 3 classes, then classes 0 and 2, then 0
    assert np.array_equal(keep, np.sort(keep)) and len(set(keep.tolist())) == 12


def _relabelled_copy(src: Path, dst: Path, label: int | None) -> Path:
    """A copy of a real shard set whose meta.json labels are all set to ``label`` (None: removed)."""
    dst.mkdir()
    shutil.copy(src / "manifest.json", dst / "manifest.json")
    for shard in sorted(src.glob("*.tar")):
        with tarfile.open(shard) as old, tarfile.open(dst / shard.name, "w") as new:
            for member in old.getmembers():
                data = old.extractfile(member).read()
                if member.name.endswith(".meta.json"):
                    meta = json.loads(data)
                    meta["label"] = label
                    data = json.dumps(meta).encode()
                member.size = len(data)
                new.addfile(member, io.BytesIO(data))
    return dst


def test_refusals_name_the_problem(bundled_shards, tmp_path):
    with pytest.raises(LabelledSetError, match="does not exist"):
        load_labelled_set(tmp_path / "nowhere")
    with pytest.raises(LabelledSetError, match="not a shard set"):
        load_labelled_set(Path(bundled_shards["mni152"]).parent)
    with pytest.raises(LabelledSetError, match=r"no samples in split\(s\) \['val'\]"):
        load_labelled_set(bundled_shards["pretrain_extra"])
    with pytest.raises(LabelledSetError, match="has no labels"):
        load_labelled_set(bundled_shards["pretrain_extra"], ("train",))
    with pytest.raises(LabelledSetError, match=r"labels=mask needs mask\.npy"):
        load_labelled_set(bundled_shards["color2d"], labels="mask")
    one_class = _relabelled_copy(bundled_shards["color2d"], tmp_path / "one_class", 1)
    with pytest.raises(LabelledSetError, match="holds only class 1"):
        load_labelled_set(one_class)
    with pytest.raises(LabelledSetError, match="exceeds"):
        load_labelled_set(bundled_shards["mni152"], patch_size=128)
