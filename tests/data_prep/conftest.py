"""Fixtures for data_prep tests: real bundled files arranged as small collections, converted once per session."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from lvmmed.data import samples

PHI = {"PatientName": "Doe^Janet^Qwerty", "PatientID": "PHI-ID-8675309", "PatientBirthDate": "19710203"}


def _convert_folder(src: Path, out: Path, fmt: str, **overrides):
    """Runs data_prep.convert in-process (1 worker, no progress bar) with ``key=value`` overrides."""
    from data_prep.convert import _yaml_value, convert, resolve_config

    items = [f"{k}={_yaml_value(v)}" for k, v in {"format": fmt, "workers": 1, **overrides}.items()]
    return convert(src, out, resolve_config(None, None, items), progress=False)


def _failures_of(out: Path) -> dict[str, dict]:
    return {f["file"]: f for f in json.loads((out / "failures.json").read_text())}


@pytest.fixture
def convert_folder():
    """``convert_folder(src, out, fmt, **overrides) -> RunResult`` (in-process, 1 worker)."""
    return _convert_folder


@pytest.fixture
def failures_of():
    """``failures_of(out) -> {file: {"file", "kind", "reason"}}`` from failures.json."""
    return _failures_of


@pytest.fixture(scope="session")
def phi_values() -> dict[str, str]:
    """The identifying header values planted in ``mr_phi.dcm``."""
    return dict(PHI)


@pytest.fixture(scope="session")
def dicom_src(tmp_path_factory) -> Path:
    """A DICOM folder of real files: CT, MR, US cine, enhanced multi-frame CT/MR, a SEG with its (re-labelled)
    CT, a truncated MR, a JPEG-LS MR (no decoder installed), a README, and an MR carrying PHI values."""
    root = tmp_path_factory.mktemp("dicom_src")
    for name in ("ct_small", "us_cine", "ct_enhanced_multiframe", "mr_enhanced_multiframe", "seg_liver_1frame"):
        shutil.copy(samples.path(name), root / f"{name}.dcm")
    pydicom_dir = samples.SOURCES["pydicom"].root()
    shutil.copy(pydicom_dir / "MR_truncated.dcm", root / "mr_truncated.dcm")
    shutil.copy(samples.path("mr_small_jpeg_ls"), root / "mr_jpeg_ls.dcm")
    (root / "README.txt").write_text("not a DICOM file\n")
    # The SEG's source CT is not bundled: pair it with the real 512x512 axial CT by giving that CT the referenced
    # series UID (header edit only; pixels untouched).
    seg = pydicom.dcmread(samples.path("seg_liver_1frame"), stop_before_pixels=True)
    ct = pydicom.dcmread(samples.path("ct_axial"))
    ct.SeriesInstanceUID = seg.ReferencedSeriesSequence[0].SeriesInstanceUID
    ct.save_as(root / "ct_for_seg.dcm")
    # Real MR pixels with identifying header values that must never reach a shard.
    mr = pydicom.dcmread(samples.path("mr_small"))
    for key, value in PHI.items():
        setattr(mr, key, value)
    mr.SeriesInstanceUID, mr.SOPInstanceUID = generate_uid(), generate_uid()
    mr.file_meta.MediaStorageSOPInstanceUID = mr.SOPInstanceUID
    mr.save_as(root / "mr_phi.dcm")
    return root


@pytest.fixture(scope="session")
def dicom_shards(dicom_src, tmp_path_factory):
    """``(out_dir, RunResult)`` of converting :func:`dicom_src` at 32 px, every 10th cine frame."""
    out = tmp_path_factory.mktemp("dicom_shards") / "set"
    result = _convert_folder(dicom_src, out, "dicom", image_size=32, frame_step=10, shard_maxcount=8, name="dcm")
    return out, result
