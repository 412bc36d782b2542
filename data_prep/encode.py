"""Turns processed 2-D arrays into shard samples: channel mode, float16 ``.npy`` or PNG, allow-listed ``meta.json``.

Everything here runs inside the worker processes. Two steps take the fast road to the same bytes: the float16
conversion of [0, 1] images (:func:`unit_float16`; numpy's ``astype`` converts one value at a time) and the ``.npy``
header, built once per shape (:func:`npy_bytes`).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import numpy as np

from lvmmed.data.codecs import encode_mask_png, encode_png
from lvmmed.data.deid import sanitize_meta
from lvmmed.data.shards import encode_npy

from .writer import EncodedSample

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_ONE = 0x3F800000  # bits of float32 1.0: non-negative floats up to 1.0 have bits <= this
_HALF_NORMAL = 0x38800000  # bits of 2**-14, the smallest normal float16
_REBIASED_ZERO = 0x38000000  # bits of 2**-15: after rounding, anything below rebiases to float16 +0


def unit_float16(image: np.ndarray) -> np.ndarray:
    """``image.astype(np.float16)`` for a float32 array in [0, 1], bit for bit, 2-3x faster.

    IEEE round-to-nearest-even on the float32 bits (numpy's ``astype`` rounds the same way, one value at a time):
    a value from 2**-14 keeps its sign and exponent (rebased from 127 to 15) and the top 10 of its 23 mantissa
    bits, rounded on the 13 it drops (a carry rolls into the exponent, as it should). Zero and values below 2**-15
    clamp to +0; the rare values in (0, 2**-14) are float16 subnormals, ``rint(x * 2**24)``. Equal to numpy on every
    float32 in [0, 1] (checked exhaustively when written; tests/data_prep/test_pool_output_identity.py checks every
    rounding boundary). Other input (another dtype, -0.0, values outside [0, 1]) takes ``astype``.
    """
    if image.dtype != np.float32 or not (image.flags.c_contiguous or image.flags.f_contiguous) or not image.size:
        return image.astype(np.float16)
    bits = image.view(np.uint32)
    if int(bits.max()) > _ONE:
        return image.astype(np.float16)
    work = bits >> 13
    work &= 1  # ties to even: a tie rounds up when the kept mantissa is odd
    work += bits
    work += 0x0FFF
    np.maximum(work, _REBIASED_ZERO, out=work)
    work -= _REBIASED_ZERO
    work >>= 13
    out = work.astype(np.uint16)
    np.subtract(bits, 1, out=work)  # wraps 0 to the top: (0, 2**-14) becomes [0, 2**-14 - 1)
    subnormal = work < _HALF_NORMAL - 1
    if subnormal.any():
        out[subnormal] = np.rint(image[subnormal] * np.float32(2.0**24)).astype(np.uint16)
    return out.view(np.float16)


@lru_cache(maxsize=64)
def _npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    empty = np.zeros(shape, dtype=np.dtype(dtype))
    encoded = encode_npy(empty)
    return encoded[: len(encoded) - empty.nbytes]


def npy_bytes(array: np.ndarray) -> bytes:
    """``encode_npy(np.ascontiguousarray(array))``: the ``.npy`` header of a C-order array of this shape and dtype,
    then the array's bytes (what ``np.save`` writes)."""
    if array.dtype.hasobject:
        return encode_npy(array)  # refused there
    array = np.ascontiguousarray(array)
    return _npy_header(array.dtype.str, array.shape) + array.tobytes()


def apply_channels(image: np.ndarray, mode: str) -> np.ndarray:
    """``keep`` | ``grey`` (BT.601 luma for colour) | ``rgb`` (grey replicated) on an HxW(x3) array."""
    if mode == "grey" and image.ndim == 3:
        return image[..., :3].astype(np.float32) @ _LUMA
    if mode == "rgb" and image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=-1)
    return image


def foreground_fraction(image: np.ndarray) -> float:
    """Fraction of pixels above 5% of the [min, max] range (grey or colour)."""
    grey = image.mean(axis=-1) if image.ndim == 3 else image
    lo, hi = float(np.min(grey)), float(np.max(grey))
    if not np.isfinite(hi - lo) or hi - lo <= 0:
        return 0.0
    return float(np.mean(grey > lo + 0.05 * (hi - lo)))


def make_sample(
    key: str,
    split: str,
    image: np.ndarray,
    meta: dict[str, Any],
    mask: np.ndarray | None = None,
    encoding: str = "npy",
) -> EncodedSample:
    """Encodes one sample.

    Args:
        key: Sample key without dots.
        split: train / val / test.
        image: HxW or HxWx3 array already normalised to [0, 1] (clipped again here) and resized.
        meta: Candidate meta fields; anything outside ``META_FIELDS`` is dropped.
        mask: Optional HxW integer label map (stored as uint8).
        encoding: ``npy`` (float16) or ``png`` (``lvmmed.data.codecs``; colour off the 8-bit grid stays npy).

    Raises:
        ValueError: A key with a dot, a non-finite image, or a mask on another grid or with values > 255.
    """
    if "." in key or "/" in key:
        raise ValueError(f"sample key {key!r} must not contain dots or slashes")
    image = np.asarray(image, dtype=np.float32)
    if not np.isfinite(image).all():
        raise ValueError(f"sample {key}: image has non-finite values after normalisation")
    image = np.clip(image, 0.0, 1.0)
    window = meta.get("window")
    png = encode_png(image, window[1] - window[0] if window else None) if encoding == "png" else None
    if png is not None:
        members, meta = {"image.png": png[0]}, dict(meta, image_scale=png[1])
    else:
        members = {"image.npy": npy_bytes(unit_float16(image))}
    if mask is not None:
        if mask.shape != image.shape[:2]:
            raise ValueError(f"sample {key}: mask shape {mask.shape} != image grid {image.shape[:2]}")
        if mask.size and (mask.min() < 0 or mask.max() > 255):
            raise ValueError(f"sample {key}: mask values must fit uint8")
        mask_png = encode_mask_png(mask) if encoding == "png" else None
        if mask_png is not None:
            members["mask.png"] = mask_png
        else:
            members["mask.npy"] = npy_bytes(mask.astype(np.uint8))
    meta = dict(meta, split=split, channels=3 if image.ndim == 3 else 1)
    members["meta.json"] = json.dumps(sanitize_meta(meta), sort_keys=True).encode()
    return EncodedSample(key=key, split=split, members=members)
