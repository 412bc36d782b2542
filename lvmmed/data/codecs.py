"""Image codecs of the shard format: float16 ``.npy`` (default) or lossless-within-float16 PNG.

``image.npy`` holds float16 values in [0, 1] (2 bytes per pixel, no compression). ``image.png`` holds integers
``q`` with ``image = q / scale`` and ``scale`` in the sample's ``meta.json`` (``image_scale``):

* **The source's own grid** when the image lies on it: ``scale`` 255 (8-bit sources: uint8 PNG), or the number of
  intensity levels the normaliser mapped to [0, 1] (``levels``, e.g. an integer CT window of 2000 HU or an MR
  percentile window over integer intensities: uint16 PNG). Such images decode exactly (up to float32 rounding).
* **Otherwise** (resampled images are off any source grid) ``scale`` = :data:`FINE_SCALE` = 4095 in a uint16 PNG:
  the rounding error is at most ``1/8190 ≈ 1.2e-4``, half of the largest rounding error of the float16 path on
  [0, 1] (``2^-12`` for values in [0.5, 1)). So PNG and float16 decodes differ by less than ``2^-11``, one float16
  step on [0.5, 1). (Near 0 float16 is finer than this grid; the difference stays below the bound above.)

Masks are stored as 8-bit grey ``mask.png`` with the PNG encoding (exact). Colour (HxWx3) images are stored as PNG
only on the 8-bit grid (PNG has 16-bit colour, but Pillow cannot write it); other colour images stay ``image.npy``,
so one shard set may mix both members. Nothing is pickled: PNGs are decoded
by Pillow with its decompression-bomb limit, ``.npy`` with ``allow_pickle=False``.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

ENCODINGS = ("npy", "png")
FINE_SCALE = 4095  # 12 bits: rounding <= 1/8190, half the float16 path's worst rounding on [0, 1]
_ON_GRID = 1e-3  # |v*scale - round(v*scale)| below this (in grid steps) counts as lying on the grid


def grid_scale(image: np.ndarray, levels: float | None = None) -> int:
    """The coarsest integer scale whose grid holds ``image`` (see the module docstring): 255, ``levels``, or 4095."""
    candidates = [255] + ([round(levels)] if levels and 1 <= levels <= 65535 and levels == round(levels) else [])
    for scale in candidates:
        scaled = image.astype(np.float64) * scale
        if np.abs(scaled - np.round(scaled)).max(initial=0.0) <= _ON_GRID:
            return scale
    return FINE_SCALE


def encode_png(image: np.ndarray, levels: float | None = None) -> tuple[bytes, int] | None:
    """PNG bytes and scale of an HxW (or 8-bit-grid HxWx3) image in [0, 1]; None when PNG cannot hold it losslessly.

    Args:
        image: Float image, already clipped to [0, 1].
        levels: Intensity levels of the source mapped to [0, 1] (window width of integer data), if known.
    """
    from PIL import Image

    scale = grid_scale(image, levels)
    if image.ndim == 3 and scale != 255:
        return None
    q = np.round(image.astype(np.float64) * scale)
    array = np.ascontiguousarray(q.astype(np.uint8 if scale <= 255 else np.uint16))
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=6)
    return buf.getvalue(), scale


def encode_mask_png(mask: np.ndarray) -> bytes:
    """A uint8 label map as a grey PNG (label maps are mostly constant runs: typically 20-50x smaller than npy)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(mask.astype(np.uint8))).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def decode_mask_png(data: bytes) -> np.ndarray:
    """uint8 label map from ``mask.png``.

    Raises:
        ValueError: Not an 8-bit grey PNG.
    """
    from PIL import Image

    with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
        if img.mode != "L":
            raise ValueError(f"mask.png must be 8-bit grey, got mode {img.mode}")
        return np.asarray(img)


def decode_png(data: bytes, scale: Any) -> np.ndarray:
    """Float32 image ``q / scale`` from PNG bytes.

    Raises:
        ValueError: No valid ``image_scale`` in the meta, or not a PNG of 8/16-bit grey or 8-bit RGB.
    """
    from PIL import Image

    if not isinstance(scale, int | float) or not 1 <= scale <= 65535:
        raise ValueError(f"image.png needs meta.image_scale in [1, 65535], got {scale!r}")
    with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
        if img.mode not in ("L", "I;16", "I;16B", "I", "RGB"):
            raise ValueError(f"image.png has unsupported mode {img.mode}")
        array = np.asarray(img)
    return array.astype(np.float32) / np.float32(scale)
