"""The streaming two-view pipeline on real bundled shards: splits, mixing, node/worker splitting, exact resume,
bad-sample handling."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from lvmmed.config import load_config
from lvmmed.data.augment import AugmentConfig
from lvmmed.data.pipeline import (
    DataConfig,
    DataQualityError,
    SkipCounter,
    StreamPosition,
    TwoViewStream,
    build_loader,
    resolve_shard_sets,
)
from lvmmed.data.shards import ShardFormatError, decode_sample, load_manifest


def _stream(shards, *overrides, rank=0, world=1, seed=0, in_chans=1):
    data = load_config(
        DataConfig,
        overrides=[
            f"shards={[str(s) for s in shards]}",
            "batch_size=4",
            "num_workers=0",
            "shuffle_buffer=20",
            "shuffle_initial=5",
            *overrides,
        ],
    )
    aug = load_config(AugmentConfig, overrides=["size=32"])
    return TwoViewStream(resolve_shard_sets(data), data, aug, in_chans, seed, rank=rank, world_size=world), data


def _take(stream, workers, n):
    it = iter(build_loader(stream, workers))
    return [next(it) for _ in range(n)]


def test_batches_have_two_views_and_positions(bundled_shards):
    stream, _ = _stream([bundled_shards["mni152"]])
    batches = _take(stream, 0, 3)
    for b in batches:
        assert b["view0"].shape == b["view1"].shape == (4, 1, 32, 32)
        assert b["view0"].dtype == torch.float32 and torch.isfinite(b["view0"]).all()
        assert not torch.equal(b["view0"], b["view1"])
    assert torch.equal(torch.cat([b["index"] for b in batches]), torch.arange(12))


def test_only_the_train_split_is_read_by_default(bundled_shards):
    root = bundled_shards["mni152"]
    stream, _ = _stream([root])
    handler = SkipCounter(0.5, 5)
    raws = [r for _, r in zip(range(60), stream.raw_samples(0, 0, handler))]
    splits = {decode_sample(r)["meta"]["split"] for r in raws}
    assert splits == {"train"}
    assert all("/train-" in r["__url__"] for r in raws)
    val_stream, _ = _stream([root], "splits=[val]")
    assert {decode_sample(r)["meta"]["split"] for _, r in zip(range(10), val_stream.raw_samples(0, 0, handler))} == {
        "val"
    }


def test_epoch_is_sized_from_the_manifest(bundled_shards):
    root = bundled_shards["mni152"]
    n = load_manifest(root).count("train")
    stream, _ = _stream([root])
    assert stream.batches_per_worker == -(-n // 4)
    two_ranks, _ = _stream([root], "num_workers=2", world=2)
    assert two_ranks.batches_per_worker == -(-n // (2 * 2 * 4))


def test_mixing_weights_control_the_set_frequencies(bundled_shards):
    a, b = bundled_shards["mni152"], bundled_shards["dicom_modality"]
    stream, _ = _stream([a, b], "weights=[3.0,1.0]")
    assert [round(s.weight, 2) for s in stream.sets] == [0.75, 0.25]
    handler = SkipCounter(0.5, 5)
    names = [decode_sample(r)["meta"]["dataset"] for _, r in zip(range(400), stream.raw_samples(0, 0, handler))]
    share = names.count(stream.sets[0].name) / len(names)
    assert 0.65 < share < 0.85
    with pytest.raises(ValueError, match="weights"):
        _stream([a, b], "weights=[1.0]")


def test_parent_directory_expands_to_all_sets(bundled_shards):
    parent = Path(bundled_shards["mni152"]).parent
    stream, _ = _stream([parent])
    assert {s.name for s in stream.sets} >= {"mni152", "dicom_modality"}


def test_ranks_and_workers_get_different_streams(bundled_shards):
    root = bundled_shards["mni152"]
    r0, _ = _stream([root], rank=0, world=2)
    r1, _ = _stream([root], rank=1, world=2)
    h = SkipCounter(0.5, 5)
    keys0 = [x["__key__"] for _, x in zip(range(20), r0.raw_samples(0, 0, h))]
    keys1 = [x["__key__"] for _, x in zip(range(20), r1.raw_samples(0, 0, h))]
    keys0_w1 = [x["__key__"] for _, x in zip(range(20), r0.raw_samples(0, 1, h))]
    assert keys0 != keys1 and keys0 != keys0_w1
    again = [x["__key__"] for _, x in zip(range(20), r0.raw_samples(0, 0, h))]
    assert keys0 == again  # seeded: the same (epoch, rank, worker) stream every time


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_from_a_position_is_exact(bundled_shards, workers):
    root = bundled_shards["mni152"]
    stream, _ = _stream([root], f"num_workers={workers}")
    stream.batches_per_worker = 3  # several epoch boundaries within the test
    position = StreamPosition(workers)
    it = iter(build_loader(stream, workers))
    batches, saved = [], None
    for i in range(9):
        batches.append(next(it))
        position.update(batches[-1])
        if i == 4:
            saved = json.loads(json.dumps(position.state_dict()))
    fresh, _ = _stream([root], f"num_workers={workers}")
    fresh.batches_per_worker = 3
    pos2 = StreamPosition(workers)
    pos2.load_state_dict(saved)
    pos2.apply(fresh, fresh.batches_per_worker)
    it2 = iter(build_loader(fresh, workers))
    for expected in batches[5:]:
        got = next(it2)
        assert (got["worker"], got["epoch"]) == (expected["worker"], expected["epoch"])
        assert torch.equal(got["index"], expected["index"])
        assert torch.equal(got["view0"], expected["view0"]) and torch.equal(got["view1"], expected["view1"])
    assert {b["epoch"] for b in batches} == ({0, 1} if workers else {0, 1, 2})
    with pytest.raises(ValueError, match="num_workers"):
        StreamPosition(workers + 2).load_state_dict(saved)


def _copy_with_bad_samples(root: Path, dest: Path, corrupt_every: int) -> Path:
    """A copy of a shard set where every n-th image.npy is garbage and one pickled object array is planted."""
    dest.mkdir(parents=True)
    manifest = json.loads((root / "manifest.json").read_text())
    images = 0
    for shard in manifest["shards"]:
        with tarfile.open(root / shard["name"]) as src, tarfile.open(dest / shard["name"], "w") as out:
            for member in src.getmembers():
                data = src.extractfile(member).read()
                if member.name.endswith("image.npy"):
                    images += 1
                    if images % corrupt_every == 0:
                        buf = io.BytesIO()
                        np.save(buf, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
                        data = buf.getvalue() if images % (2 * corrupt_every) == 0 else b"not an npy file"
                info = tarfile.TarInfo(member.name)
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def test_bad_samples_are_counted_and_skipped_then_fail_past_the_limit(bundled_shards, tmp_path):
    root = Path(bundled_shards["mni152"])
    bad = _copy_with_bad_samples(root, tmp_path / "bad", corrupt_every=3)  # 1 in 3 samples is bad
    stream, _ = _stream([bad], "max_skip_fraction=0.6", "min_skips_to_fail=2")
    batch = _take(stream, 0, 3)[-1]
    assert batch["skipped"] >= 1 and torch.isfinite(batch["view0"]).all()
    strict, _ = _stream([bad], "max_skip_fraction=0.01", "min_skips_to_fail=2")
    with pytest.raises(DataQualityError, match="unreadable"):
        _take(strict, 0, 5)


def test_truncated_tar_is_skipped_not_fatal(bundled_shards, tmp_path):
    root = Path(bundled_shards["mni152"])
    dest = tmp_path / "trunc"
    dest.mkdir()
    manifest = json.loads((root / "manifest.json").read_text())
    for shard in manifest["shards"]:
        data = (root / shard["name"]).read_bytes()
        (dest / shard["name"]).write_bytes(data[: len(data) * 2 // 3] if shard["split"] == "train" else data)
    (dest / "manifest.json").write_text(json.dumps(manifest))
    stream, _ = _stream([dest], "max_skip_fraction=0.5", "min_skips_to_fail=50")
    batches = _take(stream, 0, 12)  # past the truncation point (2/3 of the only train shard)
    assert batches[-1]["skipped"] >= 1 and all(torch.isfinite(b["view0"]).all() for b in batches)


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(ShardFormatError, match="data_prep"):
        resolve_shard_sets(load_config(DataConfig, overrides=[f"shards=[{tmp_path}]"]))
