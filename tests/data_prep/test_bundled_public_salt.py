"""Bundled public data uses a fixed public salt: splits and patient hashes do not depend on the machine salt."""

from __future__ import annotations

import pytest

from data_prep import records_to_samples as process
from data_prep.bundled import BUNDLED_PUBLIC_SALT, PRETRAIN_POOL, build_bundled
from lvmmed.data import deid
from lvmmed.data.shards import load_arrays, load_manifest


def _build(out, salt: str, monkeypatch) -> dict:
    monkeypatch.setenv(deid.SALT_ENV, salt)
    process._salt.cache_clear()
    built = build_bundled(out, profile="tiny", workers=1, names=["dicom_modality", "pretrain_extra"])
    return {
        name: sorted((r["key"], r["meta"]["split"], r["meta"]["patient"]) for r in load_arrays(root))
        for name, root in built.items()
    }


@pytest.mark.slow
def test_bundled_splits_do_not_depend_on_the_machine_salt(tmp_path, monkeypatch):
    first = _build(tmp_path / "a", "machine-salt-one-0123456789", monkeypatch)
    private_one = process.pseudonym("patient:x", {})
    second = _build(tmp_path / "b", "machine-salt-two-9876543210", monkeypatch)
    private_two = process.pseudonym("patient:x", {})
    process._salt.cache_clear()
    assert private_one != private_two, "the machine salt did change between the two builds (control)"
    assert first == second
    assert {split for _k, split, _p in first["dicom_modality"]} == {"train", "val", "test"}
    expected = deid.pseudonym("extra:nibabel_t1", BUNDLED_PUBLIC_SALT)
    assert expected in {p for _k, _s, p in first["pretrain_extra"]}


def test_pretrain_extra_is_train_only_and_the_pool_leaves_colin27_out(tmp_path, monkeypatch):
    rows = _build(tmp_path, "machine-salt-one-0123456789", monkeypatch)["pretrain_extra"]
    process._salt.cache_clear()
    manifest = load_manifest(tmp_path / "pretrain_extra")
    assert manifest.count("train") == len(rows) > 20
    assert manifest.count("val") == manifest.count("test") == 0
    assert not any(name.startswith("colin27") for name in PRETRAIN_POOL)
    with pytest.raises(ValueError, match="unknown bundled set"):
        build_bundled(tmp_path, names=["no_such_set"])
