"""Turns processed 2-D arrays into shard samples: channel mode, float16 ``.npy`` or PNG, allow-listed ``meta.json``.

Everything here runs inside the worker processes, so the main process only appends bytes to tars.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from lvmmed.data.codecs import encode_mask_png, encode_png
from lvmmed.data.deid import sanitize_meta
from lvmmed.data.shards import encode_npy

from .writer import EncodedSample

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


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
    image16 = image.astype(np.float16)
    window = meta.get("window")
    png = encode_png(image, window[1] - window[0] if window else None) if encoding == "png" else None
    if png is not None:
        members, meta = {"image.png": png[0]}, dict(meta, image_scale=png[1])
    else:
        members = {"image.npy": encode_npy(np.ascontiguousarray(image16))}
    if mask is not None:
        if mask.shape != image.shape[:2]:
            raise ValueError(f"sample {key}: mask shape {mask.shape} != image grid {image.shape[:2]}")
        if mask.size and (mask.min() < 0 or mask.max() > 255):
            raise ValueError(f"sample {key}: mask values must fit uint8")
        mask_png = encode_mask_png(mask) if encoding == "png" else None
        if mask_png is not None:
            members["mask.png"] = mask_png
        else:
            members["mask.npy"] = encode_npy(np.ascontiguousarray(mask.astype(np.uint8)))
    meta = dict(meta, split=split, channels=3 if image16.ndim == 3 else 1)
    members["meta.json"] = json.dumps(sanitize_meta(meta), sort_keys=True).encode()
    return EncodedSample(key=key, split=split, members=members)
