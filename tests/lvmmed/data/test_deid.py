"""Pseudonymisation and the PHI leak test on a real CT with planted identifiers."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pydicom
import pytest

from lvmmed.data import samples
from lvmmed.data.deid import identity_hashes, load_salt, pseudonym, sanitize_meta
from lvmmed.data.processing import iter_slices, normalize_intensity
from lvmmed.data.readers import read_dicom, read_dicom_seg
from lvmmed.data.shards import META_FIELDS

SALT = "0123456789abcdef-test-salt"
PHI = {"PatientName": "Qwertyuiop^Zxcvbnm", "PatientID": "PID-8675309-XYZ", "PatientBirthDate": "19011231"}


def test_pseudonym_is_stable_salted_and_sized():
    a = pseudonym("1CT1", SALT)
    assert a == pseudonym("1CT1", SALT) and len(a) == 16 and int(a, 16) >= 0
    assert a != pseudonym("1CT1", SALT + "x") and a != pseudonym("1CT2", SALT)
    assert len(pseudonym("1CT1", SALT, length=32)) == 32
    with pytest.raises(ValueError):
        pseudonym("1CT1", "")


def test_load_salt_creates_a_private_file_once(tmp_path, monkeypatch):
    monkeypatch.delenv("LVMMED_SALT", raising=False)
    path = tmp_path / "cfg" / "salt"
    salt = load_salt(path)
    assert len(salt) >= 32 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_salt(path) == salt  # stable across runs
    monkeypatch.setenv("LVMMED_SALT", "from-the-environment-123")
    assert load_salt(path) == "from-the-environment-123"  # env wins
    monkeypatch.setenv("MY_SALT", "short")
    with pytest.raises(ValueError, match="shorter"):
        load_salt("env:MY_SALT")
    with pytest.raises(ValueError, match="not set"):
        load_salt("env:LVMMED_UNSET_SALT_VAR")


def test_sanitize_meta_keeps_only_the_allow_list():
    meta = {
        "modality": "CT",
        "spacing": np.array([0.5, 0.5]),
        "window": (np.float32(-1000), 1000.0),
        "source": "/data/Doe^John/1.dcm",
        "affine": [[1, 0, 0, 0]],
        "PatientName": "Doe^John",
        "label": np.int64(3),
    }
    clean = sanitize_meta(meta)
    assert set(clean) <= set(META_FIELDS)
    assert clean == {"modality": "CT", "spacing": [0.5, 0.5], "window": [-1000.0, 1000.0], "label": 3}
    json.dumps(clean)
    with pytest.raises(TypeError):
        sanitize_meta({"modality": object()})


def _planted_ct(tmp_path, name="Qwertyuiop_scan.dcm", **extra):
    ds = pydicom.dcmread(samples.path("ct_small"))
    for key, value in {**PHI, **extra}.items():
        setattr(ds, key, value)
    ds.save_as(tmp_path / name)
    return tmp_path / name


def test_no_identifier_reaches_what_would_be_written(tmp_path):
    path = _planted_ct(tmp_path)  # the identifier is even in the file name (meta["source"])
    (record,) = read_dicom(path)
    assert record.identity["patient_id"] == PHI["PatientID"]  # read, kept apart ...
    _, window = normalize_intensity(record.array, record.meta["modality"])
    (item,) = iter_slices(record)
    written = sanitize_meta(
        {
            **record.meta,
            **identity_hashes(record, SALT),
            "window": window,
            "axis": item.axis,
            "slice_index": item.index,
            "dataset": "ct_small",
        }
    )
    blob = json.dumps(written) + repr(record)
    for value in [*PHI.values(), "Qwertyuiop", "8675309", SALT, record.identity["series_uid"]]:
        assert value not in blob  # ... never written
    assert written["patient"] == pseudonym("id:" + PHI["PatientID"], SALT)
    assert "source" not in written and written["modality"] == "CT"


def test_identity_hashes_group_by_patient_not_by_file(tmp_path):
    a = _planted_ct(tmp_path, "a.dcm", SeriesInstanceUID="1.2.3.4.1", SOPInstanceUID="1.2.3.4.1.1")
    b = _planted_ct(tmp_path, "b.dcm", SeriesInstanceUID="1.2.3.4.2", SOPInstanceUID="1.2.3.4.2.1")
    (ra,), (rb,) = read_dicom(a), read_dicom(b)
    ha, hb = identity_hashes(ra, SALT), identity_hashes(rb, SALT)
    assert ha["patient"] == hb["patient"] and ha["volume"] != hb["volume"]
    assert identity_hashes(ra, SALT + "2")["patient"] != ha["patient"]


def test_seg_identity_is_hashed_not_copied():
    record = read_dicom_seg(samples.path("seg_liver_1frame"))
    hashes = identity_hashes(record, SALT)
    blob = json.dumps(sanitize_meta({**record.meta, **hashes}))
    for value in record.identity.values():
        assert value not in blob
    assert json.loads(blob)["mask_labels"] == ["background", "Liver"]
