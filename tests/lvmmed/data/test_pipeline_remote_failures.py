"""How remote shard sets fail (loopback HTTP on 127.0.0.1 only): a stalled server times out as a named skip, the
cache keeps sets with equal shard names apart and refuses an unusable directory, a truncated shard is one skip,
patterns may be comma braces or one ``.tar``, malformed manifests and locations are clear errors, and downstream
classification tasks read URL roots."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from lvmmed.config import load_config
from lvmmed.data.augment import AugmentConfig
from lvmmed.data.pipeline import DataConfig, SkipCounter, TwoViewStream, resolve_shard_sets
from lvmmed.data.remote import LocationError, cache_name
from lvmmed.data.shard_sets import DataQualityError
from lvmmed.data.shards import ShardFormatError, load_arrays, load_manifest
from lvmmed.errors import EXIT_FAILURE, EXIT_USAGE, OutputError, classify


def _stream(shards, *overrides, rank=0, world=1):
    data = load_config(
        DataConfig, overrides=[f"shards={json.dumps(list(shards))}", "batch_size=4", "num_workers=0", *overrides]
    )
    return TwoViewStream(resolve_shard_sets(data), data, load_config(AugmentConfig), 1, 0, rank, world)


def test_a_stalled_server_times_out_as_a_named_skip(bundled_shards, shard_server, monkeypatch):
    root = Path(bundled_shards["mni152"])
    base = shard_server(root.parent, stall={"train-000000.tar"})
    monkeypatch.setenv("LVMMED_REMOTE_TIMEOUT", "2")
    monkeypatch.setenv("LVMMED_REMOTE_RETRIES", "0")
    stream = _stream([f"{base}/{root.name}/"], "resampled=false")
    start = time.monotonic()
    handler = SkipCounter(0.0, 0)
    with pytest.raises(DataQualityError, match=r"before any sample could be read.*train-000000\.tar"):
        list(stream.epoch_samples(0, 0, handler))
    assert time.monotonic() - start < 30  # webdataset's own curl call has no read timeout: it would hang here
    assert list(handler.shards) == [f"{base}/{root.name}/train-000000.tar"]


def test_the_cache_keeps_sets_with_the_same_shard_names_apart(bundled_shards, shard_server, tmp_path):
    roots = [Path(bundled_shards["mni152"]), Path(bundled_shards["dicom_modality"])]
    base = shard_server(roots[0].parent)
    urls = [f"{base}/{r.name}/" for r in roots]
    assert all(load_manifest(r).shards[0]["name"] == "train-000000.tar" for r in roots)
    cache = tmp_path / "cache"
    stream = _stream(urls, "resampled=false", f"cache_dir={cache}")
    keys = [s["__key__"] for s in stream.epoch_samples(0, 0, SkipCounter(0.0, 0))]
    want = [s["key"] for r in roots for s in load_arrays(r, "train")]
    assert sorted(keys) == sorted(want)  # both sets' samples, not one set's twice
    cached = sorted(p.name for p in cache.iterdir())
    assert len(cached) == 2 and len({cache_name(u + "train-000000.tar") for u in urls}) == 2
    assert all(name.endswith("-train-000000.tar") for name in cached)


def test_an_unusable_cache_directory_is_refused_up_front(bundled_shards, shard_server, tmp_path):
    root = Path(bundled_shards["mni152"])
    base = shard_server(root.parent)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(OutputError, match=r"data\.cache_dir .* is not a writable directory") as err:
        _stream([f"{base}/{root.name}/"], f"cache_dir={not_a_dir}")
    assert classify(err.value)[0] == EXIT_FAILURE


def test_a_truncated_shard_is_one_skip_named_once(bundled_shards, tmp_path):
    root = tmp_path / "mni152"
    shutil.copytree(bundled_shards["mni152"], root)
    shard = root / "train-000000.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2 + 100])
    handler = SkipCounter(1.0, 10**6)
    keys = [s["__key__"] for s in _stream([str(root)], "resampled=false").epoch_samples(0, 0, handler)]
    assert keys and handler.skipped == 1
    assert handler.shards == {str(shard): 1} and len(handler.last) == 1


def test_comma_braces_and_a_single_tar_are_patterns(bundled_shards, shard_server):
    root = Path(bundled_shards["mni152"])
    base = shard_server(root.parent)
    one = load_manifest(f"{base}/{root.name}/train-000000.tar")
    assert [s["name"] for s in one.shards] == ["train-000000.tar"]
    both = load_manifest(f"{base}/{root.name}/{{train,val}}-000000.tar")
    assert [s["name"] for s in both.shards] == ["train-000000.tar", "val-000000.tar"]
    assert [s["name"] for s in load_manifest(str(root / "val-000000.tar")).shards] == ["val-000000.tar"]
    with pytest.raises(LocationError, match="one directory"):
        load_manifest(f"{base}/{{mni152,dicom_modality}}/train-000000.tar")


def test_malformed_manifests_and_locations_are_clear_errors(bundled_shards, tmp_path):
    root = tmp_path / "set"
    shutil.copytree(bundled_shards["mni152"], root)
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_bytes(b"\x93\xff binary")
    with pytest.raises(ShardFormatError, match="not valid UTF-8 JSON"):
        load_manifest(root)
    for broken in ({"name": "train-000000.tar", "count": 3}, {"name": "x.tar", "split": "train", "count": "many"}):
        (root / "manifest.json").write_text(json.dumps({**manifest, "shards": [broken]}))
        with pytest.raises(ShardFormatError, match="shard entry 0 needs a name, a split and a count"):
            load_manifest(root)
    for location in ("ftp://host/set/", "pipe:false"):
        with pytest.raises(LocationError) as err:
            load_manifest(location)
        assert classify(err.value)[0] == EXIT_USAGE


def test_downstream_classification_tasks_read_a_url_data_root(bundled_shards, shard_server):
    import numpy as np

    from downstream.tasks import PatchParams, build_image_task, build_patch_task

    parent = Path(bundled_shards["mni152"]).parent
    base = shard_server(parent)
    params = PatchParams(patch_size=16, patch_stride=16, max_per_class=20)
    for builder, name in ((build_image_task, "dicom_modality"), (build_patch_task, "mni152")):
        remote, local = builder(f"{base}/{name}", name, params), builder(parent / name, name, params)
        assert remote.source == local.source == name and list(remote.centers) == list(local.centers)
        assert np.array_equal(remote.images, local.images) and np.array_equal(remote.labels, local.labels)
