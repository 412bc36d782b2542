"""Tests for the shard format helpers (lvmmed.data.shards) and channel matching (lvmmed.data.channels)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lvmmed.data import shards
from lvmmed.data.channels import match_channels, to_chw


def test_npy_round_trip_without_pickle():
    arr = np.arange(12, dtype=np.float16).reshape(3, 4)
    assert np.array_equal(shards.decode_npy(shards.encode_npy(arr)), arr)
    with pytest.raises(shards.ShardFormatError):
        shards.encode_npy(np.array([{"a": 1}], dtype=object))
    pickled = shards.encode_npy(np.zeros(2)).replace(b"'descr': '<f8'", b"'descr': '|O' ")
    with pytest.raises(ValueError):
        shards.decode_npy(pickled)


def test_decode_sample_requires_image_and_meta():
    with pytest.raises(shards.ShardFormatError, match=r"lacks image\.npy"):
        shards.decode_sample({"__key__": "k", "meta.json": b"{}"})
    raw = {"__key__": "k", "image.npy": shards.encode_npy(np.ones((2, 2), np.float16)), "meta.json": b'{"label": 1}'}
    out = shards.decode_sample(raw)
    assert out["meta"]["label"] == 1 and out["mask"] is None and out["image"].shape == (2, 2)


def test_manifest_errors_are_clear(tmp_path):
    with pytest.raises(shards.ShardFormatError, match="data_prep convert"):
        shards.load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(shards.ShardFormatError, match="not valid UTF-8 JSON"):
        shards.load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(shards.ShardFormatError, match="format_version"):
        shards.load_manifest(tmp_path)


def test_sha256_file(tmp_path):
    file = tmp_path / "x.bin"
    file.write_bytes(b"abc")
    assert shards.sha256_file(file) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_channel_matching_shapes_and_values():
    grey = torch.rand(1, 8, 8)
    assert torch.equal(match_channels(grey, 3)[2], grey[0])
    rgb = to_chw(np.ones((8, 8, 3), np.float32))
    assert rgb.shape == (3, 8, 8)
    assert torch.allclose(match_channels(rgb, 1), torch.ones(1, 8, 8))
    assert match_channels(torch.rand(2, 1, 4, 4), 3).shape == (2, 3, 4, 4)
    with pytest.raises(ValueError):
        match_channels(torch.rand(2, 4, 4), 3)
