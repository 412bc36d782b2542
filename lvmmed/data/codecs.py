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

**How the PNGs are written.** :func:`png_bytes` writes a plain PNG (ISO/IEC 15948, https://www.w3.org/TR/png-3/:
signature, ``IHDR``, one zlib ``IDAT``, ``IEND``) whose every row uses filter type 2 ("Up": the byte above is
subtracted). Pillow, which decodes the shards, cannot be told which row filter to write: its adaptive choice
often picks Paeth, the costliest filter to undo, and on the bundled CT and MR slices its PNGs took about 1.5x the
time to decode (about 0.85 vs 0.57 ms at 224 px) for at most 8 % fewer bytes. Decode time is what the training
pipeline pays on every epoch, bytes are paid once, so we choose the fixed Up filter. Any PNG decoder reads these
files (the tests decode them with Pillow and with libpng through torchvision).

Masks are stored as 8-bit grey ``mask.png`` with the PNG encoding (exact). Colour (HxWx3) images are stored as PNG
only on the 8-bit grid (PNG has 16-bit colour, but Pillow cannot write it); other colour images stay ``image.npy``,
so one shard set may mix both members. Nothing is pickled: PNGs are decoded
by Pillow with its decompression-bomb limit, ``.npy`` with ``allow_pickle=False``. An image or mask with more
pixels than that limit (``PIL.Image.MAX_IMAGE_PIXELS``, about 89 M) stays ``.npy``, so that every PNG written can
be read back without lifting the guard.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np

ENCODINGS = ("npy", "png")
FINE_SCALE = 4095  # 12 bits: rounding <= 1/8190, half the float16 path's worst rounding on [0, 1]
_ON_GRID = 2.0**-16  # |v - round(v*scale)/scale| up to this (image units) counts as on the grid: 1/32 of the
# 2^-11 bound, and far above the float32 rounding (~1e-7) of a windowed integer image
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPE = {1: 0, 3: 2}  # channels -> PNG colour type (0 grey, 2 truecolour)
_ZLIB_LEVEL = 6  # zlib's default; levels 1-9 decode equally fast on these images, 6 is near 9's size


def grid_scale(image: np.ndarray, levels: float | None = None) -> int:
    """The coarsest integer scale whose grid holds ``image`` (see the module docstring): 255, ``levels``, or 4095."""
    candidates = [255] + ([round(levels)] if levels and 1 <= levels <= 65535 and levels == round(levels) else [])
    for scale in candidates:
        scaled = image.astype(np.float64) * scale
        if np.abs(scaled - np.round(scaled)).max(initial=0.0) <= _ON_GRID * scale:
            return scale
    return FINE_SCALE


def encode_png(image: np.ndarray, levels: float | None = None) -> tuple[bytes, int] | None:
    """PNG bytes and scale of an HxW (or 8-bit-grid HxWx3) image in [0, 1]; None when PNG cannot hold it losslessly.

    Args:
        image: Float image, already clipped to [0, 1].
        levels: Intensity levels of the source mapped to [0, 1] (window width of integer data), if known.
    """
    scale = grid_scale(image, levels)
    if (image.ndim == 3 and scale != 255) or _over_pixel_limit(image):
        return None
    q = np.round(image.astype(np.float64) * scale)
    return png_bytes(q.astype(np.uint8 if scale <= 255 else np.uint16)), scale


def encode_mask_png(mask: np.ndarray) -> bytes | None:
    """A uint8 label map as a grey PNG (label maps are mostly constant runs: typically 20-50x smaller than npy);
    None over Pillow's pixel limit (see the module docstring)."""
    return None if _over_pixel_limit(mask) else png_bytes(mask.astype(np.uint8))


def _over_pixel_limit(array: np.ndarray) -> bool:
    """True when Pillow would refuse (or warn about) decoding an image of this many pixels."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    return limit is not None and array.shape[0] * array.shape[1] > limit


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bytes(array: np.ndarray) -> bytes:
    """A PNG of a uint8 or uint16 HxW (grey) or HxWx3 (RGB) array, every row with the "Up" filter (see the module).

    Raises:
        ValueError: Another dtype, shape or channel count, or an empty image.
    """
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"png_bytes needs uint8 or uint16, got {array.dtype}")
    channels = 1 if array.ndim == 2 else (array.shape[2] if array.ndim == 3 else 0)
    if channels not in _PNG_COLOUR_TYPE or array.size == 0:
        raise ValueError(f"png_bytes needs a non-empty HxW or HxWx3 array, got shape {array.shape}")
    height, width = array.shape[:2]
    rows = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder(">")).view(np.uint8).reshape(height, -1)
    filtered = np.empty((height, rows.shape[1] + 1), dtype=np.uint8)
    filtered[:, 0] = 2  # filter type "Up"; the first row's "above" is zero, so it is stored as is
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # modulo 256, as the PNG filters are defined
    header = struct.pack(">IIBBBBB", width, height, 8 * array.itemsize, _PNG_COLOUR_TYPE[channels], 0, 0, 0)
    return b"".join(
        (
            _PNG_SIGNATURE,
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(filtered.tobytes(), _ZLIB_LEVEL)),
            _png_chunk(b"IEND", b""),
        )
    )


def decode_mask_png(data: bytes) -> np.ndarray:
    """uint8 label map from ``mask.png``.

    Raises:
        ValueError: Not an 8-bit grey PNG.
    """
    with _open_png(data, "mask.png") as img:
        if img.mode != "L":
            raise ValueError(f"mask.png must be 8-bit grey, got mode {img.mode}")
        return np.asarray(img)


def _open_png(data: bytes, member: str) -> Any:
    """``PIL.Image.open`` for PNG bytes; Pillow's decompression-bomb refusal becomes a ``ValueError``."""
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data), formats=["PNG"])
        img.load()
    except Image.DecompressionBombError as err:
        raise ValueError(f"{member} is larger than Pillow's decompression-bomb limit: {err}") from None
    return img


def decode_png(data: bytes, scale: Any) -> np.ndarray:
    """Float32 image ``q / scale`` from PNG bytes.

    Raises:
        ValueError: No valid ``image_scale`` in the meta, values above it, a PNG over Pillow's pixel limit, or not
            a PNG of 8/16-bit grey or 8-bit RGB.
    """
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not 1 <= scale <= 65535:
        raise ValueError(f"image.png needs meta.image_scale in [1, 65535], got {scale!r}")
    with _open_png(data, "image.png") as img:
        if img.mode not in ("L", "I;16", "I;16B", "I", "RGB"):
            raise ValueError(f"image.png has unsupported mode {img.mode}")
        array = np.asarray(img)
    if array.size and array.max() > scale:
        raise ValueError(f"image.png holds the value {array.max()}, above its meta.image_scale {scale}")
    return array.astype(np.float32) / np.float32(scale)
