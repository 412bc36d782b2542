"""Real DICOM → shards: CT, MR, US cine, enhanced multi-frame, SEG pairing, bad files, PHI, round trip."""

from __future__ import annotations

import numpy as np

from data_prep.verify import verify_shards
from lvmmed.data import deid, processing, samples
from lvmmed.data.readers import read_dicom, read_dicom_seg
from lvmmed.data.shards import META_FIELDS, load_arrays, load_manifest


def test_modalities_frames_and_manifest(dicom_shards):
    out, result = dicom_shards
    rows = load_arrays(out)
    by_modality = {}
    for r in rows:
        by_modality.setdefault(r["meta"]["modality"], []).append(r)
        assert set(r["meta"]) <= set(META_FIELDS)
        assert r["image"].dtype == np.float16 and r["image"].shape[:2] == (32, 32)
    assert {"CT", "MR", "US"} <= set(by_modality)
    cine = [r for r in by_modality["US"] if r["meta"]["orig_shape"] == [240, 320]]
    assert sorted(r["meta"]["slice_index"] for r in cine) == [0, 10, 20]  # 30 frames, frame_step=10
    assert cine[0]["image"].shape == (32, 32, 3)  # channels=keep: colour US stays RGB
    mr_frames = [r for r in by_modality["MR"] if r["meta"]["orig_shape"] == [64, 64] and r["meta"]["axis"] is None]
    assert len(mr_frames) >= 1
    enhanced_ct = [r for r in by_modality["CT"] if r["meta"]["axis"] == 2]
    assert enhanced_ct, "the enhanced multi-frame CT with positions is sliced as a volume"
    assert verify_shards(out).ok
    assert load_manifest(out).count() == len(rows) == result.manifest["counts"]["total"]
    assert len(result.manifest["shards"]) >= 2  # shard_maxcount=8


def test_round_trip_equals_processed_arrays(dicom_shards):
    out, _ = dicom_shards
    record = read_dicom(samples.path("ct_small"))[0]
    normalized, window = processing.normalize_intensity(record.array, "CT", window="wide")
    expected = processing.resize(normalized, 32).astype(np.float16)
    stored = [r for r in load_arrays(out) if r["meta"]["orig_shape"] == [128, 128]]
    assert len(stored) == 1
    np.testing.assert_array_equal(stored[0]["image"], expected)
    assert stored[0]["meta"]["window"] == list(window)


def test_seg_mask_paired_with_its_series(dicom_shards):
    out, _ = dicom_shards
    seg = read_dicom_seg(samples.path("seg_liver_1frame"))
    with_mask = [r for r in load_arrays(out) if r["mask"] is not None]
    assert len(with_mask) == 1
    sample = with_mask[0]
    expected = processing.resize(seg.mask, 32, is_mask=True)
    np.testing.assert_array_equal(sample["mask"], expected)
    assert sample["meta"]["mask_labels"] == ["background", "Liver"]
    assert sample["mask"].any()


def test_bad_files_are_reported_and_nothing_else_is_lost(dicom_shards, failures_of):
    out, result = dicom_shards
    failures = failures_of(out)
    truncated = [f for name, f in failures.items() if "mr_truncated" in name]
    jpeg_ls = [f for name, f in failures.items() if "mr_jpeg_ls" in name]
    assert truncated and truncated[0]["kind"] == "error"
    assert jpeg_ls and "JPEG-LS" in jpeg_ls[0]["reason"] and "install" in jpeg_ls[0]["reason"]
    assert failures["README.txt"]["kind"] == "skipped"
    # every decodable input still produced samples: CT small, CT for SEG, enhanced CT/MR, US cine, PHI MR
    shapes = {tuple(r["meta"]["orig_shape"]) for r in load_arrays(out)}
    assert {(128, 128), (512, 512), (240, 320), (64, 64)} <= shapes
    assert result.manifest["failures"] == len(result.errors) >= 2


def test_no_phi_in_any_output_byte(dicom_shards, dicom_src, phi_values):
    out, _ = dicom_shards
    assert (dicom_src / "mr_phi.dcm").read_bytes().count(phi_values["PatientID"].encode()) == 1  # input has it
    needles = [v.encode() for v in phi_values.values()] + [b"Doe^Janet", b"Qwerty", b"8675309", b"1971-02-03"]
    salt = deid.load_salt()
    phi_patient = deid.pseudonym("id:" + phi_values["PatientID"], salt)
    assert phi_patient in {r["meta"]["patient"] for r in load_arrays(out)}  # the PHI file was converted
    files = [p for p in out.iterdir() if p.is_file()]
    assert any(p.name == "manifest.json" for p in files) and any(p.suffix == ".tar" for p in files)
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"{needle!r} leaked into {path.name}"


def test_patients_never_cross_splits(dicom_shards):
    out, _ = dicom_shards
    split_of = {}
    for r in load_arrays(out):
        p, s = r["meta"]["patient"], r["meta"]["split"]
        assert split_of.setdefault(p, s) == s
        assert r["meta"]["group"] == p
    assert len(split_of) >= 3


def test_dicomdir_file_as_source(tmp_path, convert_folder):
    dicomdir = samples.path("dicomdir_tree") / "DICOMDIR"
    result = convert_folder(dicomdir, tmp_path / "dd", "dicom", image_size=16)
    rows = load_arrays(tmp_path / "dd")
    assert len(rows) == result.manifest["counts"]["total"] > 0
    assert {"CT", "MR"} <= {r["meta"]["modality"] for r in rows}


def test_dicomdir_reached_through_a_symlink(tmp_path, convert_folder):
    """A --src path through a symlinked folder (pydicom resolves the instances' paths) converts the same set."""
    link = tmp_path / "linked_release"
    link.symlink_to(samples.path("dicomdir_tree"), target_is_directory=True)
    direct = convert_folder(samples.path("dicomdir_tree") / "DICOMDIR", tmp_path / "direct", "dicom", image_size=16)
    linked = convert_folder(link / "DICOMDIR", tmp_path / "linked", "dicom", image_size=16)
    assert linked.manifest["counts"] == direct.manifest["counts"] and linked.manifest["counts"]["total"] > 0
