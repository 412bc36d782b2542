"""Tests for locating bundled real data (lvmmed.data.samples)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest

from lvmmed.data import samples


def test_core_sources_resolve_to_real_files():
    ct = pydicom.dcmread(samples.path("ct_small"))
    assert ct.Modality == "CT" and ct.pixel_array.shape == (128, 128)
    t1 = nib.load(samples.path("mni152_t1"))
    gm = nib.load(samples.path("mni152_gm"))
    assert t1.shape == gm.shape == (197, 233, 189)
    assert np.allclose(t1.affine, gm.affine)


def test_unknown_name_lists_known_names():
    with pytest.raises(KeyError, match="ct_small"):
        samples.path("no_such_sample")


def test_missing_source_names_package_and_install_command(monkeypatch):
    monkeypatch.setitem(samples._SOURCE_ROOTS, "pydicom-data", lambda: None)
    with pytest.raises(samples.MissingSampleError, match=r"pydicom-data.*pip install pydicom-data"):
        samples.path("cr_chest")
    assert not samples.is_available("cr_chest")
    assert not samples.source_available("pydicom-data")


def test_missing_file_inside_installed_source(monkeypatch, tmp_path):
    monkeypatch.setitem(samples._SOURCE_ROOTS, "nibabel", lambda: tmp_path)
    with pytest.raises(samples.MissingSampleError, match=r"anatomical\.nii"):
        samples.path("t1_anatomical")


def test_lookup_never_calls_pydicom_downloader(monkeypatch):
    import pydicom.data

    def _forbidden(*args, **kwargs):
        raise AssertionError("get_testdata_file must not be used (it may download)")

    monkeypatch.setattr(pydicom.data, "get_testdata_file", _forbidden)
    for name in samples.available():
        assert samples.path(name).exists()
