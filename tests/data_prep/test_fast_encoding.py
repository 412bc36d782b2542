"""The encoding shortcuts give the bytes of the slow roads: float16 conversion, ``.npy`` members, tar headers."""

from __future__ import annotations

import random

import numpy as np
import pytest

from data_prep.encode import npy_bytes, unit_float16
from data_prep.tar_format import member_header, sample_tar, tarfile_header
from data_prep.writer import EncodedSample, tar_members
from lvmmed.data import samples
from lvmmed.data.readers import read_nifti
from lvmmed.data.shards import encode_npy


def _as_float32(bits: np.ndarray) -> np.ndarray:
    return bits.astype(np.uint32).view(np.float32)


def _same_float16(x: np.ndarray) -> None:
    ours, numpy_ = unit_float16(x).view(np.uint16), x.astype(np.float16).view(np.uint16)
    wrong = np.flatnonzero(ours != numpy_)
    assert wrong.size == 0, f"{wrong.size} values differ, e.g. float32 bits {x.view(np.uint32)[wrong[:5]]}"


def test_unit_float16_equals_numpy_at_every_rounding_boundary():
    """Every exponent of [0, 1] x both parities of the kept mantissa x the dropped bits around the tie."""
    exponents = np.arange(0, 128, dtype=np.uint32)  # float32 exponents 0 (zero/subnormal) .. 127 (1.0)
    kept = np.array([0, 1, 2, 0x155, 0x2AA, 0x3FE, 0x3FF], dtype=np.uint32) << 13
    dropped = np.array([0, 1, 0x7FF, 0xFFE, 0xFFF, 0x1000, 0x1001, 0x17FF, 0x1FFE, 0x1FFF], dtype=np.uint32)
    bits = (exponents[:, None, None] << 23) | kept[None, :, None] | dropped[None, None, :]
    bits = bits.ravel()
    _same_float16(_as_float32(bits[bits <= 0x3F800000]))


def test_unit_float16_equals_numpy_on_dense_ranges_and_real_slices():
    rng = np.random.default_rng(0)
    near_subnormal = np.arange(0x38000000 - 2**18, 0x38800000 + 2**18, 7, dtype=np.uint32)  # 2**-15 .. 2**-14
    _same_float16(_as_float32(near_subnormal))
    _same_float16(_as_float32(rng.integers(0, 0x3F800001, 2_000_000, dtype=np.uint32)))
    volume = read_nifti(samples.path("mni152_t1"), modality="MR").array.astype(np.float32)
    scaled = np.clip(volume / np.float32(volume.max()), 0, 1)
    _same_float16(np.ascontiguousarray(scaled[:, :, 90]))
    _same_float16(np.asfortranarray(scaled[40]))  # another memory order
    outside = np.array([[-0.0, 0.5], [1.5, np.float32(2.0**-20)]], dtype=np.float32)
    _same_float16(outside)  # -0.0 and > 1 take numpy's own conversion


@pytest.mark.parametrize(
    "array",
    [np.arange(12, dtype=np.float16).reshape(3, 4), np.asfortranarray(np.ones((5, 7), np.float16)),
     np.arange(60, dtype=np.uint8).reshape(3, 4, 5)[:, ::2], np.zeros((0, 3), np.float32)],
)  # fmt: skip
def test_npy_bytes_equal_encode_npy_of_the_c_order_array(array):
    assert npy_bytes(array) == encode_npy(np.ascontiguousarray(array))


def test_tar_headers_equal_tarfile_for_many_names_and_sizes():
    rng = random.Random(0)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789_.-"
    for _ in range(3000):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 120)))
        if rng.random() < 0.05:
            name += "é"  # non-ASCII: tarfile's pax path
        size = rng.choice([0, 1, 511, 512, 513, rng.randint(0, 10**7), rng.randint(8**11 - 5, 8**11 + 5)])
        assert member_header(name, size) == tarfile_header(name, size), (name, size)


def test_sample_tar_is_what_tar_members_and_tarfile_write():
    members = {"meta.json": b'{"a": 1}', "image.npy": bytes(range(256)) * 3}
    expected = b""
    for field_name in sorted(members):
        data = members[field_name]
        expected += tarfile_header(f"k0.{field_name}", len(data)) + data + b"\0" * (-len(data) % 512)
    assert sample_tar("k0", members) == expected == tar_members(EncodedSample("k0", "train", members))
