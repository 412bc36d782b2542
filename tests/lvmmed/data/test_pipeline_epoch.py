"""Epoch mode: every sample exactly once per epoch across simulated ranks and workers, on real bundled shards."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch

from lvmmed.config import load_config
from lvmmed.data.augment import AugmentConfig
from lvmmed.data.pipeline import DataConfig, SkipCounter, TwoViewStream, build_loader, resolve_shard_sets
from lvmmed.data.split import epoch_batches, epoch_ranges


def reshard(root: Path, dest: Path, n_shards: int) -> Path:
    """Rewrites every sample of a real shard set into ``n_shards`` train shards (members kept contiguous)."""
    manifest = json.loads((root / "manifest.json").read_text())
    samples: list[list[tuple[str, bytes]]] = []
    for shard in manifest["shards"]:
        with tarfile.open(root / shard["name"]) as tar:
            for member in tar.getmembers():
                key = member.name.split(".", 1)[0]
                if not samples or samples[-1][0][0].split(".", 1)[0] != key:
                    samples.append([])
                samples[-1].append((member.name, tar.extractfile(member).read()))
    dest.mkdir(parents=True)
    shards = []
    for i in range(n_shards):
        name = f"train-{i:06d}.tar"
        part = samples[i::n_shards]
        with tarfile.open(dest / name, "w") as tar:
            for members in part:
                for member_name, data in members:
                    info = tarfile.TarInfo(member_name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        shards.append({"name": name, "split": "train", "count": len(part), "bytes": 0, "sha256": ""})
    manifest["shards"] = shards
    manifest["counts"] = {"train": len(samples), "val": 0, "test": 0, "total": len(samples)}
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


@pytest.fixture(scope="module")
def five_shards(bundled_shards, tmp_path_factory) -> Path:
    return reshard(Path(bundled_shards["mni152"]), tmp_path_factory.mktemp("five") / "mni152", 5)


def _epoch_stream(shards, rank, world, workers, *extra):
    data = load_config(
        DataConfig,
        overrides=[
            f"shards=[{shards}]",
            "resampled=false",
            "batch_size=4",
            f"num_workers={workers}",
            "shuffle_buffer=10",
            "shuffle_initial=3",
            *extra,
        ],
    )
    aug = load_config(AugmentConfig, overrides=["size=32"])
    return TwoViewStream(resolve_shard_sets(data), data, aug, 1, seed=3, rank=rank, world_size=world)


def _all_keys(root: Path) -> list[str]:
    keys = []
    for shard in json.loads((root / "manifest.json").read_text())["shards"]:
        with tarfile.open(root / shard["name"]) as tar:
            keys.extend(dict.fromkeys(m.name.split(".", 1)[0] for m in tar.getmembers()))
    return keys


@pytest.mark.parametrize("epoch", [0, 1])
def test_8_ranks_x_2_workers_over_5_shards_read_every_sample_once(five_shards, epoch):
    everything = _all_keys(five_shards)
    world, workers = 8, 2
    assert len(everything) > 2 * world * workers  # shards (5) << parts (16) << samples: splits inside shards
    seen: list[str] = []
    sizes = []
    for rank in range(world):
        stream = _epoch_stream(five_shards, rank, world, workers)
        for worker in range(workers):
            keys = [s["__key__"] for s in stream.epoch_samples(epoch, worker, SkipCounter(0.0, 0))]
            sizes.append(len(keys))
            seen.extend(keys)
    assert len(seen) == len(set(seen)), "a sample was read twice in one epoch"
    assert set(seen) == set(everything) and len(seen) == len(everything)
    assert max(sizes) - min(sizes) <= 1  # balanced slices: equal batch counts per rank after padding


def test_epoch_ranges_cover_every_sample_once_and_change_order_per_epoch():
    counts = [7, 0, 13, 5, 9]
    for parts in (1, 3, 16, 40):
        covered = [
            (shard, i)
            for part in range(parts)
            for shard, first, stop in epoch_ranges(counts, part, parts, seed=1, epoch=2)
            for i in range(first, stop)
        ]
        assert sorted(covered) == [(s, i) for s, c in enumerate(counts) for i in range(c)]
    first_shards = {epoch_ranges(counts, 0, 4, seed=1, epoch=e)[0][0] for e in range(8)}
    assert len(first_shards) > 1  # the shard order is reshuffled every epoch


def test_every_rank_yields_the_same_number_of_full_batches_with_padding_counted(five_shards):
    total = len(_all_keys(five_shards))
    world = 3
    streams = [_epoch_stream(five_shards, r, world, 0) for r in range(world)]
    expected = epoch_batches(total, world, 4)
    assert {s.batches_per_worker for s in streams} == {expected}
    seen, padded = [], 0
    for s in streams:
        s.batches_per_worker = expected
        it = iter(build_loader(s, 0))
        batches = [next(it) for _ in range(expected)]
        assert all(b["view0"].shape[0] == 4 and b["epoch"] == 0 for b in batches)
        assert next(it)["epoch"] == 1  # then the next epoch starts
        padded += sum(b["padded"] for b in batches)
        seen.extend(i for b in batches for i in b["index"].tolist())
    assert padded == world * expected * 4 - total


def test_epoch_mode_rejects_resampling_only_options(five_shards):
    with pytest.raises(ValueError, match="resampled"):
        _epoch_stream(five_shards, 0, 1, 0, "mixing=equal")


def test_epoch_mode_resumes_exactly(five_shards):
    from lvmmed.data.pipeline import StreamPosition

    stream = _epoch_stream(five_shards, 1, 2, 0)
    position = StreamPosition(0)
    it = iter(build_loader(stream, 0))
    batches, saved = [], None
    for i in range(stream.batches_per_worker + 3):  # across an epoch boundary
        batches.append(next(it))
        position.update(batches[-1])
        if i == 2:
            saved = position.state_dict()
    fresh = _epoch_stream(five_shards, 1, 2, 0)
    resumed = StreamPosition(0)
    resumed.load_state_dict(saved)
    resumed.apply(fresh, fresh.batches_per_worker)
    it2 = iter(build_loader(fresh, 0))
    for expected in batches[3:]:
        got = next(it2)
        assert got["epoch"] == expected["epoch"] and torch.equal(got["index"], expected["index"])
        assert torch.equal(got["view0"], expected["view0"])
