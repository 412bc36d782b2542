"""The ``brain_sector`` task: patches of the bundled MNI152 slices labelled by MNI sector, interleaved-slab split."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from downstream.sector_task import SECTOR_NAMES, SLAB_PATTERN, Y_CUTS_MM, Z_CUT_MM, sector_plane, slab_split
from downstream.tasks import PatchParams, TaskDataError, build_sector_task, load_task
from lvmmed.data.shards import load_arrays

PP = PatchParams(patch_size=32, patch_stride=16, max_per_class=0, slab_width=8, slab_gap=4)


@pytest.fixture(scope="module")
def mni_root(bundled_shards):
    return bundled_shards["mni152"]


@pytest.fixture(scope="module")
def task(mni_root):
    return build_sector_task(mni_root, "brain_sector", PP)


def _mni(axis: int, index: int) -> float:
    """MNI y (axis 1) or z (axis 2) in mm of a voxel index, from the template header (nibabel, independently)."""
    import nibabel as nib

    from lvmmed.data import samples

    image = nib.as_closest_canonical(nib.load(samples.path("mni152_t1")))
    voxel = [0, 0, 0]
    voxel[axis] = index
    return float(nib.affines.apply_affine(image.affine, voxel)[axis])


def test_patches_keep_the_pretraining_resolution_and_every_split(task):
    assert task.images.shape[1:] == (1, 32, 32) and task.images.dtype == np.float32
    assert task.images.min() >= 0.0 and task.images.max() <= 1.0
    assert task.class_names == SECTOR_NAMES and task.num_classes == 6
    assert set(np.unique(task.labels)) == set(range(6))  # every sector occurs
    assert set(task.splits) == {"train", "val", "test"}
    counts = {s: int((task.splits == s).sum()) for s in ("train", "val", "test")}
    assert counts["train"] > counts["test"] > 0 and counts["val"] > 0


def test_splits_are_disjoint_slabs_dealt_round_robin_with_gaps(task, mni_root):
    for split in ("train", "val", "test"):  # no slab (group) crosses splits
        assert not set(task.groups[task.splits == split]) & set(task.groups[task.splits != split])
    for group, split in zip(task.groups, task.splits, strict=True):
        slab = int(group.rsplit("slab", 1)[1])
        assert split == SLAB_PATTERN[slab % len(SLAB_PATTERN)]
    # every kept shard slice lies inside a slab; the gap slices between two slabs are dropped
    kept = {(s["meta"]["axis"], s["meta"]["slice_index"]) for s in load_arrays(mni_root)}
    inside = [(a, i) for a, i in kept if i % 12 < 8]
    assert inside and len(inside) < len(kept)
    assert all(slab_split(a, i, 8, 4) is None for a, i in kept if (a, i) not in inside)
    assert slab_split(0, 7, 8, 4) == ("train", 0) and slab_split(0, 8, 8, 4) is None
    assert slab_split(0, 11, 8, 4) is None and slab_split(0, 12, 8, 4) == (SLAB_PATTERN[1], 1)
    # neighbouring slices on both sides of a gap are at least slab_gap + 1 apart
    near = [(a, i, j) for a, i in inside for b, j in inside if a == b and i < j and slab_split(a, i, 8, 4)[1]
            != slab_split(a, j, 8, 4)[1] and j - i <= 4]  # fmt: skip
    assert not near


def test_the_task_is_deterministic_and_independent_of_the_run_seed(mni_root, task):
    again = build_sector_task(mni_root, "brain_sector", PP)
    assert np.array_equal(again.images, task.images) and np.array_equal(again.labels, task.labels)
    assert np.array_equal(again.splits, task.splits)
    capped = build_sector_task(mni_root, "brain_sector", dataclasses.replace(PP, max_per_class=5))
    for split in ("train", "val", "test"):
        assert np.bincount(capped.labels[capped.splits == split]).max() <= 5
    wider = build_sector_task(mni_root, "brain_sector", dataclasses.replace(PP, slab_width=16, slab_gap=0))
    assert len(wider.labels) > len(task.labels)  # no gap: more slices kept


def test_sector_maps_follow_mni_coordinates_in_display_orientation():
    axial = sector_plane(2, 150, (64, 64))  # one axial slice: one z, so one superior/inferior bit
    assert set(np.unique(axial % 2)) == {int(_mni(2, 150) >= Z_CUT_MM)}
    assert axial[0].min() // 2 == 2 and axial[-1].max() // 2 == 0  # display rows run anterior → posterior
    for j in (20, 120, 200):  # one coronal slice: one y, so one posterior/middle/anterior third
        assert set(np.unique(sector_plane(1, j, (64, 64)) // 2)) == {int(np.digitize(_mni(1, j), Y_CUTS_MM))}


def test_load_task_passes_the_slab_settings(mni_root):
    a = load_task("brain_sector", mni_root.parent, 32, 16, 0, 8, 4)
    b = load_task("brain_sector", mni_root.parent, 32, 16, 0, 16, 0)
    assert len(b.labels) > len(a.labels)
    with pytest.raises(ValueError, match="patch_size"):
        load_task("brain_sector", mni_root.parent, 128, 16, 0)
    with pytest.raises(ValueError, match="slab_width"):
        load_task("brain_sector", mni_root.parent, 32, 16, 0, 0, 4)


def test_a_set_without_masks_or_from_another_grid_is_refused(bundled_shards, tmp_path):
    with pytest.raises(TaskDataError, match="masks"):
        build_sector_task(bundled_shards["dicom_modality"], "brain_sector", PP)
    with pytest.raises(TaskDataError, match="data_prep"):
        load_task("brain_sector", tmp_path)


def test_the_task_config_loads_at_the_pretraining_resolution():
    from pathlib import Path

    from downstream.config import DownstreamConfig
    from lvmmed.config import load_config

    path = Path(__file__).resolve().parents[2] / "configs" / "downstream" / "brain_sector.yaml"
    cfg = load_config(DownstreamConfig, path)
    assert cfg.task == "brain_sector" and cfg.patch_size == cfg.img_size == 64  # no resize of the patches
