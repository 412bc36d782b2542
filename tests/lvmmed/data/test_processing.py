"""Intensity normalisation, display-oriented slicing and resizing on real CT/MR/US/NIfTI/SEG data."""

from __future__ import annotations

import random

import numpy as np
import pydicom
import pytest
import torch
from pydicom.uid import generate_uid

from lvmmed.data import samples
from lvmmed.data.processing import CT_WINDOWS, display_slice, iter_slices, normalize_intensity, resize
from lvmmed.data.readers import read_dicom, read_dicom_seg, read_dicom_series, read_nifti


@pytest.fixture(scope="module")
def ct_volume(tmp_path_factory):
    """A 5-slice axial series of real CT_small copies (slice k: +15k HU, k*3 mm up), written shuffled."""
    folder = tmp_path_factory.mktemp("ct_series")
    src = pydicom.dcmread(samples.path("ct_small"))
    uid, order = generate_uid(), list(range(5))
    random.Random(1).shuffle(order)
    for rank, k in enumerate(order):
        ds = pydicom.dcmread(samples.path("ct_small"))
        ds.SeriesInstanceUID, ds.SOPInstanceUID = uid, generate_uid()
        ds.ImagePositionPatient = [float(v) for v in src.ImagePositionPatient[:2]] + [
            float(src.ImagePositionPatient[2]) + 3.0 * k
        ]
        ds.PixelData = (src.pixel_array + 15 * k).astype(src.pixel_array.dtype).tobytes()
        ds.save_as(folder / f"{rank}.dcm")
    (record,) = read_dicom_series(sorted(folder.iterdir()))
    return record, src.pixel_array.astype(np.float32) - 1024


@pytest.mark.parametrize("name", sorted(CT_WINDOWS))
@pytest.mark.slow  # first `import monai` costs ~10 s CPU (much more wall time on a loaded box)
def test_ct_windows_match_monai(name):
    monai_transforms = pytest.importorskip("monai.transforms")
    (record,) = read_dicom(samples.path("ct_small"))
    out, window = normalize_intensity(record.array, "CT", window=name)
    low, high = CT_WINDOWS[name]
    assert window == (low, high) and out.dtype == np.float32
    reference = monai_transforms.ScaleIntensityRange(a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)
    np.testing.assert_allclose(out, np.asarray(reference(record.array)), atol=1e-6)
    assert out.min() >= 0 and out.max() <= 1


def test_ct_default_window_maps_air_to_zero_and_water_to_half():
    values = np.array([-1024.0, -1000.0, 0.0, 1000.0, 3000.0])
    out, window = normalize_intensity(values, "CT")
    assert window == (-1000.0, 1000.0)
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0])
    out, window = normalize_intensity(values, "CT", window=(-500, 500))
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0])


@pytest.mark.parametrize("name", ["mr_small", "cr_tibia", "nm_j2k"])
@pytest.mark.slow  # imports monai (reference implementation)
def test_grey_modalities_use_percentiles_like_monai(name):
    monai_transforms = pytest.importorskip("monai.transforms")
    (record,) = read_dicom(samples.path(name))
    out, (low, high) = normalize_intensity(record.array, record.meta["modality"])
    assert (low, high) == tuple(np.percentile(record.array, (0.5, 99.5)))
    reference = monai_transforms.ScaleIntensityRangePercentiles(lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=True)
    np.testing.assert_allclose(out, np.asarray(reference(record.array.astype(np.float32))), atol=1e-5)
    assert out.min() == 0.0 and out.max() == 1.0 and 0.0 < out.mean() < 1.0


def test_colour_and_bad_inputs():
    (record,) = read_dicom(samples.path("us_rgb"))
    out, window = normalize_intensity(record.array, "US")
    assert window == (0.0, 255.0) and out.shape == record.array.shape
    np.testing.assert_allclose(out, record.array / 255.0, atol=1e-7)
    with pytest.raises(ValueError, match="unknown CT window"):
        normalize_intensity(record.array, "CT", window="liver_typo")
    with pytest.raises(ValueError, match="constant"):
        normalize_intensity(np.full((8, 8), 3.0), "MR")
    with pytest.raises(ValueError, match="high > low"):
        normalize_intensity(record.array, "CT", window=(100, 100))


def test_axial_slices_are_displayed_like_the_source_dicom(ct_volume):
    record, hu = ct_volume
    assert record.array.shape == (128, 128, 5)
    items = list(iter_slices(record, axes=(2,), skip_empty=False))
    assert [i.index for i in items] == [0, 1, 2, 3, 4] and {i.axis for i in items} == {2}
    for item in items:  # axial DICOM display (patient right on the left, anterior at the top) is radiological
        np.testing.assert_array_equal(item.image2d, hu + 15 * item.index)
        assert item.spacing2d == pytest.approx((0.661468, 0.661468))


def test_volume_slicing_shapes_spacing_and_orientation():
    record = read_nifti(samples.path("t1_anatomical"))
    x, y, z = record.array.shape
    sx, sy, sz = record.meta["spacing"]
    expected = {0: ((z, y), (sz, sy)), 1: ((z, x), (sz, sx)), 2: ((y, x), (sy, sx))}
    for axis, (shape, spacing) in expected.items():
        items = list(iter_slices(record, axes=(axis,), skip_empty=False, step=2))
        assert len(items) == (record.array.shape[axis] + 1) // 2
        assert items[0].image2d.shape == shape and items[0].spacing2d == pytest.approx(spacing)
    # top-left display pixel = the superior (axial: anterior) end and the patient's right (sagittal: anterior)
    vol = record.array
    assert display_slice(vol, 2, 3)[0, 0] == vol[-1, -1, 3]
    assert display_slice(vol, 1, 3)[0, 0] == vol[-1, 3, -1]
    assert display_slice(vol, 0, 3)[0, 0] == vol[3, -1, -1]
    epi = read_nifti(samples.path("epi_4d"))
    kept = list(iter_slices(epi, axes=(0, 1, 2), min_foreground=0.05))
    assert 0.3 * sum(epi.array.shape) < len(kept) < sum(epi.array.shape)  # empty edge slices dropped, head kept


def test_frames_image2d_and_masks():
    (cine,) = read_dicom(samples.path("us_cine"))
    items = list(iter_slices(cine, step=5, skip_empty=False))
    assert [i.index for i in items] == [0, 5, 10, 15, 20, 25] and items[0].axis is None
    assert items[0].image2d.shape == (240, 320, 3)
    (ct,) = read_dicom(samples.path("ct_small"))
    (single,) = iter_slices(ct)
    assert single.axis is None and single.index == 0 and single.image2d is ct.array
    seg = read_dicom_seg(samples.path("seg_liver"))
    with_mask = list(iter_slices(seg, skip_empty=False, require_mask=True))
    assert with_mask and all(i.mask2d.any() for i in with_mask)
    assert all(i.mask2d.shape == i.image2d.shape for i in with_mask)


def test_resize_images_and_masks():
    seg = read_dicom_seg(samples.path("seg_liver_1frame"))
    small = resize(seg.mask, 128, is_mask=True)
    assert small.shape == (128, 128) and small.dtype == np.uint8
    assert set(np.unique(small)) <= set(np.unique(seg.mask))
    assert abs(small.mean() - seg.mask.mean()) < 0.01
    (ct,) = read_dicom(samples.path("ct_small"))
    down = resize(ct.array, (64, 32))
    assert down.shape == (64, 32) and down.dtype == np.float32
    assert abs(down.mean() - ct.array.mean()) < 5  # area averaging preserves the mean HU
    for size in [(64, 64), (64, 32), (200, 200)]:  # same numbers as torch's antialiased bilinear
        reference = torch.nn.functional.interpolate(
            torch.from_numpy(ct.array)[None, None], size=size, mode="bilinear", antialias=True, align_corners=False
        )[0, 0].numpy()
        np.testing.assert_allclose(resize(ct.array, size), reference, atol=0.01)
    up = resize(ct.array, 200)
    assert up.shape == (200, 200) and ct.array.min() - 1 <= up.min() and up.max() <= ct.array.max() + 1
    (rgb,) = read_dicom(samples.path("us_rgb"))
    out = resize(rgb.array, 96)
    assert out.shape == (96, 96, 3) and out.dtype == np.uint8
