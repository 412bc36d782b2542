"""Remote shard sets served over loopback HTTP (127.0.0.1 only): same batches as local, patterns, ``pipe:``,
cache directory, dropped connections as counted and named skips, clear errors for missing fsspec backends."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from lvmmed.config import load_config
from lvmmed.data.augment import AugmentConfig
from lvmmed.data.pipeline import DataConfig, SkipCounter, TwoViewStream, build_loader, resolve_shard_sets
from lvmmed.data.shards import ShardFormatError, load_arrays, load_manifest


def _stream(shards, *overrides):
    data = load_config(
        DataConfig,
        overrides=[
            f"shards={json.dumps(list(shards))}",
            "batch_size=4",
            "num_workers=0",
            "shuffle_buffer=20",
            *overrides,
        ],
    )
    aug = load_config(AugmentConfig, overrides=["size=32"])
    return TwoViewStream(resolve_shard_sets(data), data, aug, 1, seed=0)


def _batches(stream, n):
    it = iter(build_loader(stream, 0))
    return [next(it) for _ in range(n)]


def test_http_set_gives_the_same_batches_as_the_local_directory(bundled_shards, shard_server):
    root = Path(bundled_shards["mni152"])
    base = shard_server(root.parent)
    remote = _stream([f"{base}/{root.name}/"])
    assert all(u.startswith(base) for s in remote.sets for u in s.urls)
    assert remote.batches_per_worker == _stream([str(root)]).batches_per_worker  # counts from the remote manifest
    for got, want in zip(_batches(remote, 3), _batches(_stream([str(root)]), 3)):
        assert torch.equal(got["index"], want["index"]) and torch.equal(got["view0"], want["view0"])
        assert got["skipped"] == 0


def test_patterns_pipe_commands_and_the_cache_directory(bundled_shards, shard_server, tmp_path):
    root = Path(bundled_shards["mni152"])
    base = shard_server(root.parent)
    names = [s["name"] for s in load_manifest(root).shards if s["split"] == "train"]
    last = len(names) - 1
    pattern = f"{base}/{root.name}/train-{{000000..{last:06d}}}.tar"
    piped = f"pipe:curl -s -f {base}/{root.name}/train-{{000000..{last:06d}}}.tar"
    want = _batches(_stream([str(root)]), 2)
    for spec, extra in ((pattern, ()), (piped, ()), (f"{base}/{root.name}", (f"cache_dir={tmp_path / 'cache'}",))):
        got = _batches(_stream([spec], *extra), 2)
        assert all(torch.equal(g["view0"], w["view0"]) for g, w in zip(got, want)), spec
    assert sorted(p.name for p in (tmp_path / "cache").rglob("*.tar"))  # shards were cached locally
    # Downstream reads whole sets through the same location handling.
    assert len(load_arrays(f"{base}/{root.name}", "val")) == load_manifest(root).count("val")


def test_dropped_connection_is_a_counted_named_skip(bundled_shards, shard_server):
    root = Path(bundled_shards["mni152"])
    train = [s["name"] for s in load_manifest(root).shards if s["split"] == "train"]
    base = shard_server(root.parent, cut=set(train))
    stream = _stream([f"{base}/{root.name}/"], "max_skip_fraction=0.5", "min_skips_to_fail=1000")
    handler = SkipCounter(0.5, 1000)
    raws = [r for _, r in zip(range(40), stream.raw_samples(0, 0, handler))]
    assert raws and handler.skipped >= 1
    assert set(handler.shards) <= {f"{base}/{root.name}/{n}" for n in train} and handler.shards
    assert any("shard http://127.0.0.1" in line for line in handler.last)
    strict = _stream([f"{base}/{root.name}/"], "max_skip_fraction=0.0", "min_skips_to_fail=2")
    with pytest.raises(Exception, match="unreadable"):
        _batches(strict, 40)


def test_missing_manifest_and_unknown_pattern_shards_are_clear_errors(bundled_shards, shard_server):
    root = Path(bundled_shards["mni152"])
    base = shard_server(root.parent)
    with pytest.raises(ShardFormatError, match=r"manifest\.json"):
        _stream([f"{base}/no-such-set/"])
    with pytest.raises(ShardFormatError, match="not in"):
        _stream([f"{base}/{root.name}/train-{{000100..000101}}.tar"])


@pytest.mark.skipif(importlib.util.find_spec("s3fs") is not None, reason="s3fs is installed")
def test_object_store_without_its_backend_names_the_package():
    from lvmmed.data.remote import RemoteError

    with pytest.raises(RemoteError, match="s3fs") as err:
        _stream(["s3://bucket/sets/mni152"])
    assert err.value.fix.startswith("pip install s3fs")


def test_epoch_mode_over_http_reads_each_sample_once(bundled_shards, shard_server):
    root = Path(bundled_shards["mni152"])
    base = shard_server(root.parent)
    keys = []
    for rank in range(3):  # 3 ranks over fewer shards: every rank stops inside a shard (the pipe is closed early)
        data = load_config(DataConfig, overrides=[f"shards=[{base}/{root.name}/]", "resampled=false", "num_workers=0"])
        stream = TwoViewStream(resolve_shard_sets(data), data, load_config(AugmentConfig), 1, 0, rank, 3)
        handler = SkipCounter(0.0, 0)
        keys += [s["__key__"] for s in stream.epoch_samples(0, 0, handler)]
        assert handler.skipped == 0
    assert len(keys) == len(set(keys)) == load_manifest(root).count("train")


def test_downstream_data_root_can_be_a_url(bundled_shards, shard_server):
    from downstream.segmentation.tasks import load_split

    root = Path(bundled_shards["mni152"])
    base = shard_server(root.parent)
    remote, local = load_split("seg_tissue", base, "test", 32), load_split("seg_tissue", root.parent, "test", 32)
    assert torch.equal(remote.images, local.images) and torch.equal(remote.masks, local.masks)
