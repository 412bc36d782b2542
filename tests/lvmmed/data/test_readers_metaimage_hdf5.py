"""MetaImage (SimpleITK) gives what NIfTI gives for the same scan; HDF5 patch stacks read in blocks."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import SimpleITK as sitk

from lvmmed.data import samples
from lvmmed.data.readers import ReaderError, read_nifti
from lvmmed.data.readers.hdf5 import hdf5_length, read_hdf5_labels, read_hdf5_patches
from lvmmed.data.readers.metaimage import read_metaimage


def test_metaimage_matches_nifti_in_ras(tmp_path):
    src = samples.path("t1_anatomical")  # stored LAS: the reader must flip it to RAS like read_nifti
    sitk.WriteImage(sitk.ReadImage(str(src)), str(tmp_path / "t1.mhd"))  # ITK writes LPS geometry + .raw
    assert (tmp_path / "t1.raw").is_file()
    nifti, mhd = read_nifti(src), read_metaimage(tmp_path / "t1.mhd")
    np.testing.assert_array_equal(nifti.array, mhd.array)
    np.testing.assert_allclose(nifti.meta["affine"], mhd.meta["affine"], atol=1e-4)
    assert mhd.meta["orientation"] == "RAS" and mhd.meta["spacing"] == pytest.approx(nifti.meta["spacing"])


def test_metaimage_label_grid_and_2d_frames(tmp_path):
    image = sitk.ReadImage(str(samples.path("t1_anatomical")))
    sitk.WriteImage(image, str(tmp_path / "a.mhd"))
    labels = sitk.Cast(sitk.BinaryThreshold(image, 50.0, 32767.0, 1, 0), sitk.sitkUInt8)
    sitk.WriteImage(labels, str(tmp_path / "a_gt.mhd"))
    record = read_metaimage(tmp_path / "a.mhd", tmp_path / "a_gt.mhd")
    assert record.mask.shape == record.array.shape and set(np.unique(record.mask)) == {0, 1}
    shifted = sitk.Image(labels)
    shifted.SetOrigin((5.0, 0.0, 0.0))
    sitk.WriteImage(shifted, str(tmp_path / "b_gt.mhd"))
    with pytest.raises(ReaderError, match="label grid differs"):
        read_metaimage(tmp_path / "a.mhd", tmp_path / "b_gt.mhd")
    frame = sitk.GetArrayFromImage(image)[10]  # one 2-D frame, as older CAMUS ED/ES files
    sitk.WriteImage(sitk.GetImageFromArray(frame), str(tmp_path / "f.mhd"))
    record = read_metaimage(tmp_path / "f.mhd")
    assert record.kind == "image2d" and np.array_equal(record.array, frame)
    (tmp_path / "bad.mhd").write_text("ObjectType = Image\nNDims = 3\nElementDataFile = missing.raw\n")
    with pytest.raises(ReaderError):
        read_metaimage(tmp_path / "bad.mhd")


def test_hdf5_patches_in_blocks(tmp_path):
    from lvmmed.data.readers import load_image

    ihc = load_image(samples.path("ihc"))
    patches = np.stack([ihc[32 * i : 32 * i + 16, :16] for i in range(5)])
    with h5py.File(tmp_path / "p_x.h5", "w") as fh:
        fh["x"] = patches
    with h5py.File(tmp_path / "p_y.h5", "w") as fh:
        fh["y"] = np.array([1, 0, 1, 1, 0], np.uint8).reshape(5, 1, 1, 1)
    assert hdf5_length(tmp_path / "p_x.h5") == 5
    block = read_hdf5_patches(tmp_path / "p_x.h5", 2, 5)
    assert [r.meta["index"] for r in block] == [2, 3, 4] and block[0].is_color
    np.testing.assert_array_equal(block[1].array, patches[3])
    assert read_hdf5_labels(tmp_path / "p_y.h5", 1, 4).tolist() == [0, 1, 1]
    with pytest.raises(ReaderError, match="no dataset 'images'"):
        read_hdf5_patches(tmp_path / "p_x.h5", dataset="images")
    (tmp_path / "not.h5").write_text("not hdf5")
    with pytest.raises(ReaderError, match="not a readable HDF5"):
        hdf5_length(tmp_path / "not.h5")
