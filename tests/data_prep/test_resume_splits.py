"""Atomic shards, exact resume after a crash, config fingerprints, and patient-level split assignment."""

from __future__ import annotations

import json

import pytest

from data_prep.patient_split import assign_splits, stratum_of
from data_prep.verify import verify_shards
from data_prep.writer import ResumeError, ShardSetWriter


def _shards(out):
    return [(s["name"], s["count"], s["sha256"]) for s in json.loads((out / "manifest.json").read_text())["shards"]]


def test_crash_leaves_no_manifest_and_resume_is_exact(dicom_src, tmp_path, monkeypatch, convert_folder):
    opts = dict(image_size=16, frame_step=3, shard_maxcount=3, name="dcm")
    clean = tmp_path / "clean"
    convert_folder(dicom_src, clean, "dicom", **opts)
    reference = _shards(clean)
    assert len(reference) >= 4

    crashed = tmp_path / "crashed"
    original = ShardSetWriter._finish
    calls = {"n": 0}

    def crash_on_third(self, split, fname):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash while finishing a shard")
        return original(self, split, fname)

    monkeypatch.setattr(ShardSetWriter, "_finish", crash_on_third)
    with pytest.raises(RuntimeError, match="simulated crash"):
        convert_folder(dicom_src, crashed, "dicom", **opts)
    monkeypatch.setattr(ShardSetWriter, "_finish", original)
    assert not (crashed / "manifest.json").exists()
    assert len(list(crashed.glob("*.tar"))) == 2 and list(crashed.glob("*.tar.tmp"))  # partial never renamed
    assert not verify_shards(crashed).ok

    result = convert_folder(dicom_src, crashed, "dicom", **opts)
    assert result.resumed == 2 * 3  # the two completed shards were kept, not rewritten
    assert _shards(crashed) == reference  # byte-identical to the uninterrupted run
    assert not list(crashed.glob("*.tmp")) and verify_shards(crashed).ok

    again = convert_folder(dicom_src, crashed, "dicom", **opts)
    assert again.already_complete and _shards(crashed) == reference


def test_other_config_refuses_to_resume(tmp_path):
    ShardSetWriter(tmp_path, "fingerprint-a").close()
    with pytest.raises(ResumeError, match="different config"):
        ShardSetWriter(tmp_path, "fingerprint-b")
    ShardSetWriter(tmp_path, "fingerprint-b", overwrite=True).close()


def test_rank_split_is_deterministic_disjoint_and_non_empty():
    groups = [f"{i:016x}" for i in range(40)]
    a = assign_splits(groups, [0.8, 0.1, 0.1])
    assert a == assign_splits(list(reversed(groups)), [0.8, 0.1, 0.1])
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 32, "val": 4, "test": 4}
    small = assign_splits(["aa", "bb", "cc"], [0.8, 0.1, 0.1])
    assert sorted(small.values()) == ["test", "train", "val"]
    assert set(assign_splits(["aa", "bb"], [0.8, 0.1, 0.1]).values()) == {"train"}


def test_rank_split_is_stratified_per_axis_and_threshold_is_stable():
    slabs = [f"mni152-a{a}-slab{k:03d}" for a in range(3) for k in range(10)]
    a = assign_splits(slabs, [0.8, 0.1, 0.1])
    for axis in range(3):
        assert {a[g] for g in slabs if stratum_of(g) == f"mni152-a{axis}"} == {"train", "val", "test"}
    groups = [f"{i:016x}" for i in range(200)]
    t1 = assign_splits(groups, [0.8, 0.1, 0.1], "threshold")
    t2 = assign_splits([*groups, "ffff0000"], [0.8, 0.1, 0.1], "threshold")
    assert all(t1[g] == t2[g] for g in groups)  # adding a patient never moves the others
    assert 0.6 < sum(v == "train" for v in t1.values()) / 200 < 0.95


@pytest.mark.slow
@pytest.mark.multiprocess
def test_process_pool_gives_identical_shards(dicom_src, tmp_path, convert_folder):
    opts = dict(image_size=16, frame_step=3, shard_maxcount=5, name="dcm")
    convert_folder(dicom_src, tmp_path / "one", "dicom", **opts)
    convert_folder(dicom_src, tmp_path / "two", "dicom", **{**opts, "workers": 2})
    assert _shards(tmp_path / "one") == _shards(tmp_path / "two")


def test_a_failed_fsync_in_the_finisher_stops_the_run_and_journals_only_the_shards_before_it(tmp_path, monkeypatch):
    """One process: full shards are fsynced, renamed and journalled by a finisher thread, in order. When one fails,
    the error reaches the caller and no later shard is renamed or journalled (the journal stays a prefix)."""
    from data_prep import writer as writer_module
    from data_prep.writer import EncodedSample

    original, calls = writer_module._Shard.sync, {"n": 0}

    def fail_second(shard):
        calls["n"] += 1
        if calls["n"] == 2:
            shard.fh.close()
            raise OSError("simulated fsync failure")
        original(shard)

    monkeypatch.setattr(writer_module._Shard, "sync", fail_second)
    writer = ShardSetWriter(tmp_path, "fp", maxcount=2)
    with pytest.raises(OSError, match="simulated fsync"):
        for i in range(9):
            writer.write(EncodedSample(f"k{i}", "train", {"meta.json": b"{}"}))
        writer.close()
    writer.abort()
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == ["train-000000.tar"]
    assert [s["name"] for s in json.loads((tmp_path / "progress.json").read_text())["shards"]] == ["train-000000.tar"]
    assert list(tmp_path.glob("train-00000[1-4].tar.tmp"))  # later shards stay temporary
