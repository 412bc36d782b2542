"""DICOM readers on the real files bundled with pydicom / pydicom-data (lvmmed.data.samples)."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.pixels import convert_color_space, get_decoder
from pydicom.uid import generate_uid

from lvmmed.data import samples
from lvmmed.data.readers import (
    NotAnImageError,
    ReaderError,
    UnsupportedTransferSyntaxError,
    iter_series,
    read_dicom,
    read_dicom_seg,
    read_dicom_series,
    read_dicomdir,
    scan_dicom,
)
from lvmmed.data.readers.dicom import dicomdir_files


def need(name: str):
    if not samples.is_available(name):
        pytest.skip(f"sample {name} not installed")
    return samples.path(name)


def write_ct_series(folder, n=6, step=2.5, offset=20, orientations=None, drop_ipp=False, seed=0):
    """Copies of the real CT_small as one series: slice k shifted k*step mm along the normal, pixels + k*offset.

    Files are written in shuffled order with shuffled InstanceNumbers, so only IPP can give the right order.
    """
    src = pydicom.dcmread(samples.path("ct_small"))
    series_uid = generate_uid()
    order = list(range(n))
    random.Random(seed).shuffle(order)
    paths = []
    for rank, k in enumerate(order):
        ds = pydicom.dcmread(samples.path("ct_small"))
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = rank + 1
        iop = np.asarray(orientations[k] if orientations else [float(v) for v in src.ImageOrientationPatient])
        normal = np.cross(iop[:3], iop[3:])
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in iop]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in np.asarray(src.ImagePositionPatient, float) + k * step * normal]
        if drop_ipp:
            del ds.ImagePositionPatient
        ds.PixelData = (src.pixel_array + k * offset).astype(src.pixel_array.dtype).tobytes()
        path = folder / f"file_{rank:02d}.dcm"
        ds.save_as(path)
        paths.append(path)
    return paths, src


# (sample, kind, shape, photometric, rescaled_to_hu)
CASES = [
    ("ct_small", "image2d", (128, 128), "MONOCHROME2", True),
    ("mr_small", "image2d", (64, 64), "MONOCHROME2", False),
    ("mr_small_rle", "image2d", (64, 64), "MONOCHROME2", False),
    ("us_rgb", "image2d", (240, 320, 3), "RGB", False),
    ("us_palette", "image2d", (350, 800, 3), "RGB", False),
    ("us_cine", "frames", (30, 240, 320, 3), "RGB", False),
    ("ct_enhanced_multiframe", "volume", (512, 512, 2), "MONOCHROME2", True),
    ("mr_enhanced_multiframe", "frames", (10, 64, 64), "MONOCHROME2", False),
    ("cr_tibia", "image2d", (1760, 1760), "MONOCHROME2", False),
]


@pytest.mark.parametrize(("name", "kind", "shape", "photometric", "hu"), CASES)
def test_real_files_decode(name, kind, shape, photometric, hu):
    (record,) = read_dicom(need(name))
    assert record.kind == kind
    assert record.array.shape == shape
    assert record.meta["photometric"] == photometric
    assert record.meta["rescaled_to_hu"] is hu
    assert record.array.min() < record.array.max()
    assert record.identity.get("series_uid")  # raw identifiers go to identity ...
    assert "PatientID" not in record.meta and "patient_id" not in record.meta  # ... never to meta


def test_ct_small_is_in_hounsfield_units():
    (record,) = read_dicom(samples.path("ct_small"))
    raw = pydicom.dcmread(samples.path("ct_small")).pixel_array
    np.testing.assert_allclose(record.array, raw.astype(np.float32) - 1024)  # slope 1, intercept -1024
    low, median = np.percentile(record.array, [1, 50])
    assert -1100 < low < -700  # air around the body (smoothed by the downsizing of this NEMA image)
    assert -300 < median < 300  # soft tissue / water
    assert record.meta["spacing"] == pytest.approx([0.661468, 0.661468])


@pytest.mark.parametrize(
    "variant", ["MR_small_RLE", "MR_small_bigendian", "MR_small_expb", "MR_small_implicit", "MR_small_jp2klossless"]
)
def test_transfer_syntaxes_decode_to_the_same_pixels(variant):
    (plain,) = read_dicom(samples.path("mr_small"))
    (other,) = read_dicom(samples.SOURCES["pydicom"].root() / f"{variant}.dcm")
    np.testing.assert_array_equal(plain.array, other.array)
    assert other.array.dtype.isnative and other.meta["rescaled_to_hu"] is False


def test_us_cine_is_rgb_not_ybr():
    path = samples.path("us_cine")
    (record,) = read_dicom(path)
    ybr = pydicom.pixels.pixel_array(path, index=3, raw=True)
    expected = convert_color_space(ybr, "YBR_FULL", "RGB")
    assert np.abs(record.array[3].astype(int) - expected.astype(int)).max() <= 2
    assert np.abs(record.array[3].astype(int) - ybr.astype(int)).max() > 20  # YBR would look very different
    assert record.meta["source_photometric"] == "YBR_FULL_422"
    assert record.meta["burned_in_risk"] is True  # US without BurnedInAnnotation=NO is flagged
    assert record.meta["spacing"] == pytest.approx([0.5105, 0.5105], abs=1e-3)  # from the US region (cm -> mm)


def test_enhanced_ct_multiframe_becomes_a_hu_volume():
    (record,) = read_dicom(need("ct_enhanced_multiframe"))
    assert record.meta["orientation"] == "RAS"
    assert record.meta["spacing"] == pytest.approx([0.388672, 0.388672, 10.0], abs=1e-5)
    assert record.array.min() == -1024  # shared PixelValueTransformationSequence intercept applied
    assert np.all(np.diff(record.meta["slice_positions"]) > 0)


def test_monochrome1_radiograph_is_inverted_without_rescale():
    path = need("cr_tibia")
    (record,) = read_dicom(path)
    raw = pydicom.dcmread(path).pixel_array.astype(np.int64)
    assert pydicom.dcmread(path, stop_before_pixels=True).PhotometricInterpretation == "MONOCHROME1"
    assert record.meta["inverted_monochrome1"] is True
    np.testing.assert_array_equal(record.array, raw.max() + raw.min() - raw)


@pytest.mark.parametrize(("name", "frames"), [("seg_liver_1frame", 1), ("seg_liver", 3)])
def test_dicom_seg_binary_mask(name, frames):
    record = read_dicom_seg(need(name))
    assert record.meta["modality"] == "SEG"
    assert record.meta["mask_labels"] == ["background", "Liver"]
    assert record.mask is not None and record.mask.dtype == np.uint8
    assert set(np.unique(record.mask).tolist()) == {0, 1}
    assert 0.01 < record.mask.mean() < 0.5
    assert record.kind == ("image2d" if frames == 1 else "volume")
    if frames > 1:
        assert record.array.shape == (512, 512, 3)
        assert record.mask[..., 1].sum() > 0
    with pytest.raises(ReaderError, match="not a DICOM-SEG"):
        read_dicom_seg(samples.path("ct_small"))


def _files_per_modality(records):
    counts = {}
    for r in records:
        n = r.meta.get("n_files", 1) if r.kind == "volume" else 1
        counts[r.meta["modality"]] = counts.get(r.meta["modality"], 0) + n
    return counts


def test_dicomdir_tree_series_grouping():
    root = samples.path("dicomdir_tree")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records = read_dicomdir(root, mixed_geometry="slices")
    referenced = [pydicom.dcmread(f, stop_before_pixels=True).Modality for f in dicomdir_files(root)]
    expected = {m: referenced.count(m) for m in set(referenced)}
    assert expected == {"CT": 11, "MR": 17, "CR": 3}  # the tree's DICOMDIR references 31 image files
    assert _files_per_modality(records) == expected  # every referenced file ends up in exactly one record
    volumes = [r for r in records if r.kind == "volume"]
    assert volumes, "the 5-slice CT series must stack into a volume"
    for v in volumes:
        assert v.array.shape[2] == v.meta["n_files"] == len(v.meta["slice_positions"])
        assert np.all(np.diff(v.meta["slice_positions"]) > 0)
    # default: series with mixed orientations (localizers, radial MRA) are reported, the rest still read
    strict, failures = scan_dicom(root)
    mixed = [f for f in failures if "orientations" in f["reason"]]
    assert len(mixed) == 4 and len(strict) > 0
    assert all(f["file"].startswith(str(root)) for f in failures)


def test_shuffled_series_reassembles_by_position(tmp_path):
    paths, _ = write_ct_series(tmp_path, n=6, step=2.5)
    (record,) = read_dicom_series(paths)
    assert record.kind == "volume" and record.array.shape == (128, 128, 6)
    assert record.meta["spacing"] == pytest.approx([0.661468, 0.661468, 2.5], abs=1e-4)
    assert np.allclose(np.diff(record.meta["slice_positions"]), 2.5, atol=1e-3)
    # slice k carries +20k: along RAS z (inferior -> superior) the means step by exactly 20
    means = record.array.mean(axis=(0, 1))
    np.testing.assert_allclose(np.diff(means), 20.0, atol=1e-3)
    (again,) = read_dicom(tmp_path)  # directory walk, other file order
    np.testing.assert_array_equal(record.array, again.array)


def test_reversed_normal_still_sorts_inferior_to_superior(tmp_path):
    paths, _ = write_ct_series(tmp_path, n=4, step=-3.0, seed=3)  # slice k is 3k mm *below* slice 0
    (record,) = read_dicom_series(paths)
    means = record.array.mean(axis=(0, 1))
    np.testing.assert_allclose(np.diff(means), -20.0, atol=1e-3)  # superior end holds k=0


def test_mixed_orientation_is_rejected(tmp_path):
    axial = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    coronal = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]
    paths, _ = write_ct_series(tmp_path, n=4, orientations=[axial, axial, coronal, axial])
    with pytest.raises(ReaderError, match="mixes 2 slice orientations"):
        read_dicom_series(paths)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records = read_dicom_series(paths, mixed_geometry="slices")
    assert [r.kind for r in records] == ["image2d"] * 4


def test_missing_position_falls_back_to_2d_with_warning(tmp_path):
    paths, _ = write_ct_series(tmp_path, n=3, drop_ipp=True)
    with pytest.warns(UserWarning, match="2-D images instead of a volume"):
        records = read_dicom_series(paths)
    assert [r.kind for r in records] == ["image2d"] * 3


def test_duplicate_positions_are_rejected(tmp_path):
    paths, _ = write_ct_series(tmp_path, n=3, step=0.0)
    with pytest.raises(ReaderError, match="share one position"):
        read_dicom_series(paths)


@pytest.mark.parametrize("keep", [0, 200, 1500, 0.5])
def test_corrupt_dicom_raises_reader_error_naming_the_file(tmp_path, keep):
    data = samples.path("ct_small").read_bytes()
    size = int(len(data) * keep) if isinstance(keep, float) else keep
    bad = tmp_path / "truncated.dcm"
    bad.write_bytes(data[:size])
    with pytest.raises(ReaderError) as info:
        read_dicom(bad)
    assert "truncated.dcm" in str(info.value)
    assert not isinstance(info.value, NotAnImageError)  # a truncated image is a failure, never a silent skip


def test_force_only_behind_a_flag(tmp_path):
    ds = pydicom.dcmread(samples.path("ct_small"))
    ds.preamble = None
    path = tmp_path / "no_preamble.dcm"
    pydicom.dcmwrite(path, ds, enforce_file_format=False)
    with pytest.raises(ReaderError, match="force=True"):
        read_dicom(path)
    (record,) = read_dicom(path, force=True)
    assert record.meta["modality"] == "CT"


def test_constant_pixels_rejected_and_burned_in_flagged(tmp_path):
    ds = pydicom.dcmread(samples.path("ct_small"))
    ds.BurnedInAnnotation = "YES"
    ds.save_as(tmp_path / "burned.dcm")
    (record,) = read_dicom(tmp_path / "burned.dcm")
    assert record.meta["burned_in_annotation"] is True and record.meta["burned_in_risk"] is True
    ds.PixelData = np.full_like(ds.pixel_array, 7).tobytes()
    ds.save_as(tmp_path / "constant.dcm")
    with pytest.raises(ReaderError, match="constant"):
        read_dicom(tmp_path / "constant.dcm")


def test_undecodable_syntax_is_reported_and_scan_continues(tmp_path):
    path = samples.path("mr_small_jpeg_ls")
    syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    if get_decoder(syntax).is_available:
        pytest.skip("a JPEG-LS plugin is installed here")
    with pytest.raises(UnsupportedTransferSyntaxError, match="JPEG-LS") as info:
        read_dicom(path)
    assert "pylibjpeg" in str(info.value) and info.value.syntax.startswith("JPEG-LS")
    (tmp_path / "a.dcm").write_bytes(path.read_bytes())
    (tmp_path / "b.dcm").write_bytes(samples.path("ct_small").read_bytes())
    (tmp_path / "c.dcm").write_bytes(samples.path("mr_small").read_bytes()[:900])
    records, failures = scan_dicom(tmp_path)
    assert [r.meta["modality"] for r in records] == ["CT"]
    assert {f["error"] for f in failures} == {"UnsupportedTransferSyntaxError", "ReaderError"}
    assert sorted(f["file"].rsplit("/", 1)[-1] for f in failures) == ["a.dcm", "c.dcm"]


def test_iter_series_streams_one_series_at_a_time():
    root = samples.path("dicomdir_tree")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tree's localizers are read as slices, with a warning each
        chunks = list(iter_series(dicomdir_files(root), mixed_geometry="slices"))
    assert len(chunks) >= 10
    for records, _ in chunks:
        assert len({r.identity["series_uid"] for r in records}) <= 1


def test_one_bad_image_does_not_sink_a_2d_series(tmp_path):
    paths, src = write_ct_series(tmp_path, n=3, drop_ipp=True)
    ds = pydicom.dcmread(paths[1])
    ds.PixelData = np.zeros_like(src.pixel_array).tobytes()
    ds.save_as(paths[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records, failures = scan_dicom(tmp_path)
    assert len(records) == 2
    assert [(f["file"], "constant" in f["reason"]) for f in failures] == [(str(paths[1]), True)]
