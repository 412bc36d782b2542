"""Tasks built from the real bundled shard sets."""

from __future__ import annotations

import numpy as np
import pytest

from downstream.tasks import TaskDataError, centre_label, load_task
from lvmmed.data.shards import load_arrays, load_manifest


@pytest.fixture(scope="module")
def data_root(bundled_shards):
    return next(iter(bundled_shards.values())).parent


def test_tissue_patches_are_labelled_from_the_mask(data_root, bundled_shards):
    task = load_task("tissue", data_root, patch_size=16, patch_stride=8, max_per_class=0)
    assert task.class_names == ["background", "csf_like", "gm", "wm"]
    assert task.images.shape[1:] == (1, 16, 16) and task.images.dtype == np.float32
    assert task.images.min() >= 0.0 and task.images.max() <= 1.0
    assert set(np.unique(task.labels)) == {0, 1, 2, 3}
    assert set(task.splits) == {"train", "val", "test"} and set(task.centers) == {"mni152"}
    first = load_arrays(bundled_shards["mni152"])[0]  # recompute the first slice's first patches
    image, mask = first["image"].astype(np.float32), first["mask"]
    for j, c in enumerate(range(0, mask.shape[1] - 16 + 1, 8)):
        assert np.array_equal(task.images[j, 0], image[0:16, c : c + 16])
        assert task.labels[j] == centre_label(mask[0:16, c : c + 16], 2)
    for split in ("train", "val", "test"):  # groups never cross splits
        others = set(task.groups[task.splits != split])
        assert not set(task.groups[task.splits == split]) & others


def test_patch_cap_is_per_split_and_class_and_deterministic(data_root):
    a = load_task("tissue", data_root, patch_size=16, patch_stride=8, max_per_class=10)
    b = load_task("tissue", data_root, patch_size=16, patch_stride=8, max_per_class=10)
    assert a is b or np.array_equal(a.images, b.images)
    for split in ("train", "val", "test"):
        assert np.bincount(a.labels[a.splits == split]).max() <= 10


def test_modality_task_uses_manifest_label_names(data_root, bundled_shards):
    task = load_task("modality", data_root)
    names = load_manifest(bundled_shards["dicom_modality"]).label_names
    assert task.class_names == names and {"CT", "MR"} <= set(names)
    assert task.images.shape[1:] == (1, 64, 64)
    assert task.num_classes == len(names) and task.labels.max() < len(names)


def test_missing_shard_set_names_the_fix(tmp_path):
    with pytest.raises(TaskDataError, match="data_prep"):
        load_task("tissue", tmp_path)
    with pytest.raises(KeyError, match="Unknown task"):
        load_task("nope", tmp_path)


@pytest.mark.optional_data
def test_region_and_ood_tasks_with_mricron_data(data_root, bundled_shards):
    if "colin27_aal" not in bundled_shards or "colin27" not in bundled_shards:
        pytest.skip("mricron-data not installed (make data)")
    region = load_task("region", data_root, patch_size=16, patch_stride=8, max_per_class=50)
    assert region.class_names[0] == "background" and "frontal" in region.class_names
    assert len(np.unique(region.labels)) >= 6
    tissue = load_task("tissue", data_root, patch_size=16, patch_stride=8, max_per_class=50)
    assert tissue.ood is not None and tissue.ood.source == "colin27"
    assert set(tissue.ood.centers) == {"colin27"} and tissue.ood.class_names == tissue.class_names
