"""NIfTI reader on nibabel's real T1 (``anatomical.nii``) and EPI (``example4d.nii.gz``)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from lvmmed.data import samples
from lvmmed.data.readers import ReaderError, read_nifti


def flip_axis(img, axis):
    """Same image in world space with voxel axis ``axis`` stored reversed."""
    n = img.shape[axis]
    flip = np.eye(4)
    flip[axis, axis] = -1
    flip[axis, 3] = n - 1
    return nib.Nifti1Image(np.flip(np.asanyarray(img.dataobj), axis).copy(), img.affine @ flip)


def swap_axes(img, a, b):
    """Same image in world space with voxel axes ``a`` and ``b`` exchanged."""
    perm = np.eye(4)
    perm[[a, b]] = perm[[b, a]]
    return nib.Nifti1Image(np.swapaxes(np.asanyarray(img.dataobj), a, b).copy(), img.affine @ perm)


TRANSFORMS = {
    "flip_x": lambda img: flip_axis(img, 0),
    "flip_y": lambda img: flip_axis(img, 1),
    "flip_z": lambda img: flip_axis(img, 2),
    "swap_xy": lambda img: swap_axes(img, 0, 1),
    "swap_xz_flip_y": lambda img: flip_axis(swap_axes(img, 0, 2), 1),
}


@pytest.fixture(scope="module")
def t1():
    return nib.load(samples.path("t1_anatomical"))


def test_reads_real_t1_as_ras(t1):
    record = read_nifti(samples.path("t1_anatomical"), modality="MR")
    assert record.kind == "volume" and record.meta["orientation"] == "RAS"
    assert record.array.shape == nib.as_closest_canonical(t1).shape
    assert record.meta["spacing"] == pytest.approx([float(z) for z in t1.header.get_zooms()])
    assert record.meta["rescaled_to_hu"] is False and record.identity == {}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_reorientation_recovers_the_same_ras_array(tmp_path, t1, name):
    reference = read_nifti(samples.path("t1_anatomical"))
    moved = TRANSFORMS[name](t1)
    assert not np.array_equal(np.asanyarray(moved.dataobj), np.asanyarray(t1.dataobj))
    path = tmp_path / f"{name}.nii.gz"
    nib.save(moved, path)
    record = read_nifti(path)
    np.testing.assert_array_equal(record.array, reference.array)
    np.testing.assert_allclose(record.meta["affine"], reference.meta["affine"], atol=1e-4)
    assert record.meta["orientation"] == "RAS"


def test_label_on_same_grid_is_aligned(tmp_path, t1):
    moved = flip_axis(t1, 0)  # store both in a non-RAS orientation
    data = np.asanyarray(moved.dataobj)
    labels = (data > np.percentile(data, 60)).astype(np.uint8) + (data > np.percentile(data, 90))
    nib.save(moved, tmp_path / "t1.nii.gz")
    nib.save(nib.Nifti1Image(labels.astype(np.int16), moved.affine), tmp_path / "labels.nii.gz")
    record = read_nifti(tmp_path / "t1.nii.gz", label_path=tmp_path / "labels.nii.gz")
    assert record.mask.dtype == np.uint8 and record.mask.shape == record.array.shape
    expected = (record.array > np.percentile(data, 60)).astype(np.uint8) + (record.array > np.percentile(data, 90))
    np.testing.assert_array_equal(record.mask, expected)


@pytest.mark.parametrize("change", ["shift_affine", "crop"])
def test_label_grid_mismatch_raises(tmp_path, t1, change):
    data = np.asanyarray(t1.dataobj)
    labels = (data > np.median(data)).astype(np.uint8)
    affine = t1.affine.copy()
    if change == "shift_affine":
        affine[0, 3] += 4.0
    else:
        labels = labels[:-1]
    nib.save(nib.Nifti1Image(labels, affine), tmp_path / "labels.nii.gz")
    with pytest.raises(ReaderError, match="label grid differs") as info:
        read_nifti(samples.path("t1_anatomical"), label_path=tmp_path / "labels.nii.gz")
    assert "labels.nii.gz" in str(info.value)


def test_non_integer_labels_raise(tmp_path, t1):
    nib.save(nib.Nifti1Image(np.asanyarray(t1.dataobj).astype(np.float32) / 7.3, t1.affine), tmp_path / "p.nii.gz")
    with pytest.raises(ReaderError, match="integer label map"):
        read_nifti(samples.path("t1_anatomical"), label_path=tmp_path / "p.nii.gz")


def test_4d_keeps_one_volume():
    first = read_nifti(samples.path("epi_4d"))
    second = read_nifti(samples.path("epi_4d"), volume_index=1)
    assert first.meta["n_volumes"] == 2 and first.array.ndim == 3
    assert first.array.shape == second.array.shape and not np.array_equal(first.array, second.array)
    with pytest.raises(ReaderError, match="out of range"):
        read_nifti(samples.path("epi_4d"), volume_index=5)


def test_corrupt_nifti_raises(tmp_path):
    data = samples.path("epi_4d").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 3])
    with pytest.raises(ReaderError, match=r"cut\.nii\.gz"):
        read_nifti(tmp_path / "cut.nii.gz")
    (tmp_path / "junk.nii").write_bytes(b"not an image at all")
    with pytest.raises(ReaderError, match=r"junk\.nii"):
        read_nifti(tmp_path / "junk.nii")


@pytest.mark.skipif(not samples.is_available("mni152_gm"), reason="nilearn data not installed")
def test_mni152_with_probability_map_as_labels():
    record = read_nifti(samples.path("mni152_t1"), label_path=samples.path("mni152_gm"), modality="MR")
    assert record.mask.shape == record.array.shape == (197, 233, 189)
    assert record.mask.max() > 100  # 0-255 GM probability kept as integers; thresholding is data_prep's choice
