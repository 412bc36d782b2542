"""PNG-encoded and float16-npy shard sets of the same real data give the same tensors through the pipeline
(within float16 rounding); the codec keeps source grids exactly; verify and downstream read both."""

from __future__ import annotations

import numpy as np
import pytest

from data_prep.bundled import build_bundled
from data_prep.verify import verify_shards
from lvmmed.config import load_config
from lvmmed.data.augment import AugmentConfig
from lvmmed.data.codecs import FINE_SCALE, decode_png, encode_png, grid_scale
from lvmmed.data.pipeline import DataConfig, SkipCounter, TwoViewStream, resolve_shard_sets
from lvmmed.data.shards import decode_sample, load_arrays, load_manifest

FLOAT16_ROUNDING = 2.0**-11  # one float16 step on [0.5, 1): the float16 path's resolution on [0, 1]


@pytest.fixture(scope="module")
def png_and_npy(tmp_path_factory):
    out = tmp_path_factory.mktemp("codecs")
    names = ["mni152", "dicom_modality"]
    npy = build_bundled(out / "npy", profile="tiny", names=names)
    png = build_bundled(out / "png", profile="tiny", names=names, encoding="png")
    return npy, png


def test_real_sets_decode_to_the_same_images_and_are_smaller(png_and_npy):
    npy, png = png_and_npy
    for name in npy:
        assert load_manifest(png[name]).encoding == "png" and load_manifest(npy[name]).encoding == "npy"
        a, b = load_arrays(npy[name]), load_arrays(png[name])
        assert [s["key"] for s in a] == [s["key"] for s in b] and len(a) > 10
        diffs = [np.abs(x["image"].astype(np.float32) - y["image"]).max() for x, y in zip(a, b)]
        assert max(diffs) <= FLOAT16_ROUNDING, name
        assert all(np.array_equal(x["mask"], y["mask"]) for x, y in zip(a, b) if x["mask"] is not None)
        size = lambda root: sum(s["bytes"] for s in load_manifest(root).shards)  # noqa: E731
        assert size(png[name]) < 0.7 * size(npy[name]), name
        report = verify_shards(png[name])
        assert report.ok, report.problems[:3]


def test_the_pipeline_gives_the_same_tensors_for_both_encodings(png_and_npy):
    npy, png = png_and_npy

    def stream(root):
        data = load_config(DataConfig, overrides=[f"shards=[{root}]", "batch_size=4", "num_workers=0"])
        aug = load_config(AugmentConfig, overrides=["size=32"])
        return TwoViewStream(resolve_shard_sets(data), data, aug, 1, seed=5)

    a, b = stream(npy["mni152"]), stream(png["mni152"])
    raw_a = [r for _, r in zip(range(12), a.raw_samples(0, 0, SkipCounter(0, 0)))]
    raw_b = [r for _, r in zip(range(12), b.raw_samples(0, 0, SkipCounter(0, 0)))]
    assert [r["__key__"] for r in raw_a] == [r["__key__"] for r in raw_b]
    assert all("image.png" in r and "image_scale" in decode_sample(r)["meta"] for r in raw_b)
    for i, (ra, rb) in enumerate(zip(raw_a, raw_b)):
        va, vb = a._two_views(ra, i), b._two_views(rb, i)
        for x, y in zip(va, vb):  # same augmentation draws; intensities within float16 rounding (plus resampling)
            assert x.shape == y.shape and (x - y).abs().max() <= 2 * FLOAT16_ROUNDING


def test_codec_keeps_source_grids_exactly_and_bounds_the_rest():
    rng = np.random.default_rng(0)
    ct = rng.integers(-1000, 1001, size=(40, 40)).astype(np.float32)
    windowed = (ct + 1000) / 2000  # an integer CT window of 2000 HU, not resampled
    data, scale = encode_png(windowed, levels=2000)
    assert scale == 2000 and np.abs(decode_png(data, scale) - windowed).max() < 1e-6
    eight_bit = rng.integers(0, 256, size=(16, 16, 3)).astype(np.float32) / 255
    data, scale = encode_png(eight_bit)
    assert scale == 255 and np.array_equal(decode_png(data, 255), eight_bit)
    smooth = rng.random((32, 32)).astype(np.float32)
    assert grid_scale(smooth, levels=2000) == FINE_SCALE
    data, scale = encode_png(smooth)
    assert np.abs(decode_png(data, scale) - smooth).max() <= 0.5 / FINE_SCALE + 1e-7
    assert encode_png(rng.random((8, 8, 3)).astype(np.float32)) is None  # colour off the 8-bit grid: stays npy
    with pytest.raises(ValueError, match="image_scale"):
        decode_png(data, None)


def test_bad_png_member_is_a_shard_format_error():
    from lvmmed.data.shards import ShardFormatError

    with pytest.raises(ShardFormatError, match="decode"):
        decode_sample({"__key__": "k", "image.png": b"not a png", "meta.json": b'{"image_scale": 4095}'})


def _png_rows(data: bytes) -> list[int]:
    """The filter type byte of every row of a PNG (one IDAT, as ``png_bytes`` writes)."""
    import struct
    import zlib

    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, payload = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        header = payload if kind == b"IHDR" else header
        idat += payload if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    row = 1 + width * (depth // 8) * (3 if colour == 2 else 1)
    raw = zlib.decompress(idat)
    assert len(raw) == height * row
    return [raw[i * row] for i in range(height)]


def test_png_writer_is_read_by_pillow_and_libpng_and_uses_the_up_filter():
    """``png_bytes`` output on real slices (CT and MR) and a colour image decodes exactly with two decoders."""
    import io

    import pydicom
    import torch
    from PIL import Image
    from pydicom.data import get_testdata_file
    from torchvision.io import decode_png as libpng_decode

    from lvmmed.data.codecs import png_bytes

    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array
    mr = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array.repeat(2, axis=0).repeat(2, axis=1)
    arrays = [
        (ct - ct.min()).astype(np.uint16),
        (mr - mr.min()).astype(np.uint16),
        (mr >> 4).astype(np.uint8),
        np.stack([ct % 256, mr % 256, (ct + mr) % 256], axis=2).astype(np.uint8),
    ]
    for array in arrays:
        data = png_bytes(array)
        assert set(_png_rows(data)) == {2}
        with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
            assert np.array_equal(np.asarray(img), array)
        decoded = libpng_decode(torch.frombuffer(bytearray(data), dtype=torch.uint8)).numpy()
        decoded = decoded[0] if array.ndim == 2 else decoded.transpose(1, 2, 0)
        assert np.array_equal(decoded.astype(np.int64), array.astype(np.int64))
    for bad in (np.zeros((4, 4), np.float32), np.zeros((4, 4, 2), np.uint8), np.zeros((0, 4), np.uint8)):
        with pytest.raises(ValueError, match="png_bytes"):
            png_bytes(bad)


def test_narrow_windows_stay_within_the_float16_bound():
    """A nearly binary image (a soft mask) with a window 1 or 2 wide is not forced onto that coarse grid."""
    for levels, value in ((1, 0.0009), (1, 0.9991), (2, 0.00049), (3, 0.3)):
        image = np.zeros((8, 8), np.float32)
        image[4:] = 1.0
        image[0, 0] = value
        data, scale = encode_png(image, levels=levels)
        assert np.abs(decode_png(data, scale) - image).max() <= FLOAT16_ROUNDING, (levels, value, scale)
    on_grid = np.arange(64, dtype=np.float32).reshape(8, 8) % 2  # exactly binary: the 1-level grid is exact
    assert grid_scale(on_grid, levels=1) == 255 and grid_scale(on_grid / 2, levels=2) == 2


def test_images_over_pillows_pixel_limit_stay_npy_and_never_crash_the_reader(monkeypatch):
    from PIL import Image

    from data_prep.encode import make_sample
    from lvmmed.data.codecs import encode_mask_png, png_bytes
    from lvmmed.data.shards import ShardFormatError

    image = np.linspace(0, 1, 40 * 40, dtype=np.float32).reshape(40, 40)
    big_png = png_bytes(np.zeros((40, 40), np.uint16))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 700)  # Pillow refuses above 2x this, warns above it
    assert encode_png(image) is None and encode_mask_png(np.zeros((40, 40), np.uint8)) is None
    sample = make_sample("k", "train", image, {"modality": "CT"}, mask=np.ones((40, 40), np.uint8), encoding="png")
    assert set(sample.members) == {"image.npy", "mask.npy", "meta.json"}
    with pytest.raises(ValueError, match="decompression-bomb limit"):
        decode_png(big_png, 4095)
    with pytest.raises(ShardFormatError, match="decompression-bomb"):
        decode_sample({"__key__": "k", "image.png": big_png, "meta.json": b'{"image_scale": 4095}'})


def test_png_scale_must_be_a_number_that_bounds_the_stored_values():
    from lvmmed.data.codecs import png_bytes

    data = png_bytes(np.full((4, 4), 3000, np.uint16))
    for bad in (True, "4095", None, 0):
        with pytest.raises(ValueError, match="image_scale"):
            decode_png(data, bad)
    with pytest.raises(ValueError, match=r"above its meta\.image_scale"):
        decode_png(data, 2000)
    assert decode_png(data, 3000).max() == 1.0
