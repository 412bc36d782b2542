"""The speed levers change no output byte: axis tasks vs volume tasks, tar members encoded in the workers and
hashed while written (identical to ``webdataset.TarWriter`` bytes and to ``sha256`` of the file)."""

from __future__ import annotations

import os
import shutil

import webdataset as wds

from data_prep import plan_files, plan_volumes
from data_prep.writer import TAR_MTIME, EncodedSample, ShardSetWriter
from lvmmed.data import samples
from lvmmed.data.shards import load_manifest, sha256_file


def _shard_bytes(out):
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.tar"))}


def _counting(axis_tasks, planned: list):
    def wrapper(*args, **kwargs):
        tasks = axis_tasks(*args, **kwargs)
        planned.extend(tasks)
        return tasks

    return wrapper


def test_axis_tasks_write_the_same_shards_as_volume_tasks(tmp_path, convert_folder, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(samples.path("t1_anatomical"), src / "a.nii")
    shutil.copy(samples.path("epi_4d"), src / "b.nii.gz")
    opts = dict(modality="MR", axes=[0, 1, 2], image_size=16, name="g", shard_maxcount=20, workers=2)
    planned = []
    original = plan_files.axis_tasks
    monkeypatch.setattr(plan_files, "axis_tasks", _counting(original, planned))
    split = convert_folder(src, tmp_path / "axis", "nifti", **opts)
    assert len(planned) == 6 and split.n_tasks == 2  # 2 volumes x 3 axes (< AXIS_TASKS_BELOW); 2 input files
    monkeypatch.setattr(plan_volumes, "AXIS_TASKS_BELOW", 1)
    monkeypatch.setattr(plan_volumes, "TAIL_AXIS_VOLUMES", 1)
    planned.clear()
    tail = convert_folder(src, tmp_path / "tail", "nifti", **opts)
    assert len(planned) == 4 and tail.n_tasks == 2  # a larger collection: only its last volume is split (1 + 3)
    monkeypatch.setattr(plan_volumes, "TAIL_AXIS_VOLUMES", 0)
    planned.clear()
    whole = convert_folder(src, tmp_path / "volume", "nifti", **opts)
    assert len(planned) == 2 and whole.n_tasks == 2
    assert _shard_bytes(tmp_path / "axis") == _shard_bytes(tmp_path / "volume") == _shard_bytes(tmp_path / "tail")
    assert load_manifest(tmp_path / "axis").data["counts"] == load_manifest(tmp_path / "volume").data["counts"]
    assert load_manifest(tmp_path / "tail").data["counts"] == load_manifest(tmp_path / "volume").data["counts"]


def test_writer_bytes_and_hash_match_webdataset_and_the_file(tmp_path):
    batch = [EncodedSample(f"k{i:03d}", "train", {"image.npy": os.urandom(700 + 97 * i), "meta.json": b"{}"})
             for i in range(9)]  # fmt: skip
    with wds.ShardWriter(str(tmp_path / "ref-%06d.tar"), maxcount=4, encoder=False, mtime=TAR_MTIME,
                         user="lvmmed", group="lvmmed", verbose=0) as sink:  # fmt: skip
        for s in batch:
            sink.write({"__key__": s.key, **s.members})
    writer = ShardSetWriter(tmp_path / "ours", "fp", maxcount=4)
    for s in batch:
        writer.write(EncodedSample(s.key, s.split, dict(s.members)).pack())  # packed as a worker packs it
    records = writer.close()
    assert [r["count"] for r in records] == [4, 4, 1]
    for k, record in enumerate(records):
        ours = tmp_path / "ours" / record["name"]
        assert ours.read_bytes() == (tmp_path / f"ref-{k:06d}.tar").read_bytes()
        assert record["sha256"] == sha256_file(ours) and record["bytes"] == ours.stat().st_size


def test_only_the_last_volumes_of_a_larger_collection_become_axis_tasks():
    """At AXIS_TASKS_BELOW volumes and more, the last TAIL_AXIS_VOLUMES volumes are cut per axis (the rest: one task
    each), counted by ``volume_index`` when the files also hold 2-D images."""
    n = plan_volumes.AXIS_TASKS_BELOW + 1
    per_volume = [
        len(plan_volumes.axis_tasks(0, i, "m:f", f"v{i}", [f"v{i}"], ["g"], {}, [0, 1, 2], n)) for i in range(n)
    ]
    tail = plan_volumes.TAIL_AXIS_VOLUMES
    assert tail >= 1 and per_volume == [1] * (n - tail) + [3] * tail
    # the rank among volumes decides, not the file index
    assert len(plan_volumes.axis_tasks(0, n + 5, "m:f", "v", ["v"], ["g"], {}, [0, 1, 2], n, volume_index=0)) == 1
    assert len(plan_volumes.axis_tasks(0, 0, "m:f", "v", ["v"], ["g"], {}, [0, 1, 2], n, volume_index=n - 1)) == 3


def test_a_volume_cut_into_axis_tasks_is_one_input_file_and_one_lost_file(tmp_path, convert_folder):
    """The manifest's input and failed file counts (and the failure fraction) count files, not axis tasks."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(samples.path("t1_anatomical"), src / "a.nii")
    shutil.copy(samples.path("epi_4d"), src / "b.nii.gz")
    (src / "c.nii.gz").write_bytes(samples.path("epi_4d").read_bytes()[:400])  # truncated: fails on read
    opts = dict(modality="MR", axes=[0, 1, 2], image_size=16, name="g", max_failure_fraction=1.0)
    result = convert_folder(src, tmp_path / "out", "nifti", **opts)
    manifest = load_manifest(tmp_path / "out").data
    assert result.n_tasks == manifest["input_files"] == 3
    assert result.failed_files == manifest["failed_files"] == 1 and abs(result.failure_fraction - 1 / 3) < 1e-9
