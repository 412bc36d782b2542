"""Patient identity in DICOM conversions (real pydicom test files with planted identifiers): a folder named after
the patient never names the set, one series UID shared by two patients keeps them apart, header text outside the
DICOM Modality terms is not copied, and one corrupt slice of a series is one lost file, not a lost run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from lvmmed.data import samples
from lvmmed.data.shards import load_arrays, load_manifest


def _series(folder: Path, patient_id: str, n: int, series_uid: str | None = None, **header) -> list[Path]:
    """``n`` real CT slices (pydicom's CT_small) of one patient and series, with fresh instance UIDs."""
    folder.mkdir(parents=True, exist_ok=True)
    uid, files = series_uid or generate_uid(), []
    for i in range(n):
        ds = pydicom.dcmread(samples.path("ct_small"))
        ds.PatientID, ds.PatientName, ds.SeriesInstanceUID = patient_id, f"{patient_id}^NAME", uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber, ds.ImagePositionPatient = i + 1, [0.0, 0.0, float(i)]
        for key, value in header.items():
            setattr(ds, key, value)
        ds.save_as(folder / f"{patient_id}_{i}.dcm")
        files.append(folder / f"{patient_id}_{i}.dcm")
    return files


def _all_text(out: Path) -> str:
    members = [subprocess.run(["tar", "-xOf", str(t)], capture_output=True).stdout for t in sorted(out.glob("*.tar"))]
    names = [subprocess.run(["tar", "-tf", str(t)], capture_output=True, text=True).stdout for t in out.glob("*.tar")]
    return (b"".join(members).decode("latin-1") + "".join(names) + (out / "manifest.json").read_text()).lower()


def test_a_folder_named_after_the_patient_never_names_the_set(tmp_path, convert_folder):
    src = tmp_path / "ZZTOPSECRET_PHI-12345"
    _series(src / "series1", "PHI-12345", 3, Modality="ZZTOPSECRET")
    out = tmp_path / "out"
    convert_folder(src, out, "dicom", image_size=32)
    text = _all_text(out)
    assert "zztop" not in text and "12345" not in text
    manifest = load_manifest(out)
    assert manifest.name == "dicom" and {s["meta"]["dataset"] for s in load_arrays(out)} == {"dicom"}
    assert {s["meta"]["modality"] for s in load_arrays(out)} == {"OT"}  # free text is not a DICOM Modality term


def test_one_series_uid_shared_by_two_patients_keeps_them_apart(tmp_path, convert_folder):
    src, shared = tmp_path / "in", generate_uid()
    for p in range(6):
        _series(src / f"p{p}", f"PAT{p}", 2)
    _series(src / "careless", "PAT5", 1, series_uid=shared)  # PAT5's image under PAT0's series UID
    shutil.copytree(src / "p0", src / "p0_shared")
    for file in (src / "p0_shared").glob("*.dcm"):
        ds = pydicom.dcmread(file)
        ds.SeriesInstanceUID = shared
        ds.save_as(file)
    out = tmp_path / "out"
    convert_folder(src, out, "dicom", image_size=32, name="t")
    split_of: dict[str, set[str]] = {}
    for sample in load_arrays(out):
        split_of.setdefault(sample["meta"]["patient"], set()).add(sample["meta"]["split"])
    assert len(split_of) == 6 and all(len(splits) == 1 for splits in split_of.values())


def test_one_corrupt_slice_is_one_lost_file_not_a_lost_run(tmp_path, convert_folder, failures_of):
    src = tmp_path / "in"
    files = _series(src, "PAT0", 6)
    files[2].write_bytes(files[2].read_bytes()[:2000])  # header cut short: the slice cannot be read
    out = tmp_path / "out"
    result = convert_folder(src, out, "dicom", image_size=32, name="t")
    assert len(load_arrays(out)) == 5
    assert 0 < result.failure_fraction <= 1 / 6 + 1e-9
    again = convert_folder(src, out, "dicom", image_size=32, name="t")  # nothing to do: the same verdict
    assert again.already_complete and again.failure_fraction == result.failure_fraction
