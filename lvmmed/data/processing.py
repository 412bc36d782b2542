"""Intensity normalisation, 2-D slice extraction and resizing between readers and the shard writer.

* :func:`normalize_intensity` maps any modality to [0, 1] exactly like MONAI's ``ScaleIntensityRange``
  (clip=True): CT through a Hounsfield window (:data:`CT_WINDOWS` preset or explicit, default ``"wide"`` =
  [-1000, 1000] as in MONAI's CT tutorials); MR/US/CR/DX/NM and other grey data through percentiles (default
  0.5/99.5, the ``ScaleIntensityRangePercentiles`` recipe); uint8 colour by /255. The window actually used is
  returned so it can be stored in the shard (``meta["window"]``). The scaling is the one-line numpy clip rather
  than a MONAI call because ``import monai.transforms`` costs ~9 s of CPU per data_prep worker process; the
  tests check equality against MONAI's transforms.
* :func:`iter_slices` yields 2-D slices of RAS+ volumes in **radiological display orientation**: axial (axis 2)
  and coronal (axis 1) slices have the patient's right on the image's left, anterior (axial) or superior
  (coronal) at the top; sagittal (axis 0) slices have superior at the top and anterior on the left. Frames of a
  cine/multi-frame record are yielded with ``axis=None`` and ``index`` = frame number; an ``image2d`` record
  yields one item with ``axis=None, index=0``.
* :func:`resize` uses Pillow: masks nearest-neighbour (labels never blend), images bilinear with a support
  that widens when shrinking (antialiased); see its docstring for why not ``torch.nn.functional.interpolate``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

CT_WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (0, 80),
    "soft_tissue": (-160, 240),
    "lung": (-1350, 150),
    "bone": (-450, 1050),
    "wide": (-1000, 1000),
}
DEFAULT_CT_WINDOW = "wide"


def _window_bounds(window) -> tuple[float, float]:
    if isinstance(window, str):
        if window not in CT_WINDOWS:
            raise ValueError(f"unknown CT window {window!r}; presets: {sorted(CT_WINDOWS)}")
        return tuple(float(v) for v in CT_WINDOWS[window])
    low, high = (float(v) for v in window)
    if not high > low:
        raise ValueError(f"window must satisfy high > low, got {window}")
    return low, high


def normalize_intensity(
    array: np.ndarray,
    modality: str,
    window: str | tuple[float, float] | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> tuple[np.ndarray, tuple[float, float]]:
    """Scales an image/volume to float32 [0, 1].

    Args:
        array: Any shape; a trailing axis of 3 with dtype uint8 is treated as RGB.
        modality: DICOM-style code. ``"CT"`` expects Hounsfield units.
        window: CT preset name or explicit ``(low, high)``; for other modalities an explicit ``(low, high)``
            overrides the percentiles. ``None``: CT uses ``"wide"``, others use ``percentiles``.
        percentiles: Lower/upper percentiles (0-100) for non-CT grey data, computed over finite values.

    Returns:
        ``(normalized, (low, high))``: the [0, 1] array and the window that mapped to 0 and 1.

    Raises:
        ValueError: unknown preset, bad window, or an image without any intensity range.
    """
    data = np.asarray(array)
    if data.dtype == np.uint8 and data.ndim >= 3 and data.shape[-1] == 3 and window is None:
        return data.astype(np.float32) / 255.0, (0.0, 255.0)
    if window is not None and (modality.upper() == "CT" or not isinstance(window, str)):
        low, high = _window_bounds(window)
    elif modality.upper() == "CT":
        low, high = _window_bounds(DEFAULT_CT_WINDOW)
    else:
        finite = data  # the percentiles of all values = those of the flattened array: no copy when all are finite
        if np.issubdtype(data.dtype, np.floating):
            is_finite = np.isfinite(data)
            finite = data if is_finite.all() else data[is_finite]
        if finite.size == 0:
            raise ValueError("image has no finite values")
        low, high = (float(v) for v in np.percentile(finite, percentiles))
        if not high > low:  # sparse images (mostly background): fall back to the full range
            low, high = float(finite.min()), float(finite.max())
        if not high > low:
            raise ValueError(f"constant image (every value = {low}); nothing to normalise")
    out = data.astype(np.float32)  # the one copy: the rest works in place (same float32 operations, same values)
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(out).all():
        np.nan_to_num(out, copy=False, nan=low)
    out -= np.float32(low)
    out /= np.float32(high - low)
    return np.clip(out, 0.0, 1.0, out=out), (low, high)


@dataclass
class SliceItem:
    """One 2-D slice: ``image2d`` (H, W[, 3]) display-oriented, aligned ``mask2d``, spacing (row, col) in mm."""

    axis: int | None
    index: int
    image2d: np.ndarray
    mask2d: np.ndarray | None
    spacing2d: tuple[float, float] | None


def display_slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """Slice ``index`` along ``axis`` of a RAS+ (X, Y, Z[, 3]) array in radiological display orientation."""
    # The two remaining axes keep RAS order (+ colour last). A view copied (one strided read; np.take walks a
    # non-leading axis element by element, 2x slower), then flipped from that hot copy.
    plane = volume[(slice(None),) * axis + (index,)].copy()
    return np.ascontiguousarray(np.swapaxes(plane, 0, 1)[::-1, ::-1])


def _foreground_fraction(plane: np.ndarray, low: float, high: float) -> float:
    return np.count_nonzero(plane > low + 0.05 * (high - low)) / max(plane.size, 1)  # the mask's mean, 5x faster


def iter_slices(
    record,
    axes: tuple[int, ...] = (2,),
    skip_empty: bool = True,
    min_foreground: float = 0.05,
    step: int = 1,
    require_mask: bool = False,
) -> Iterator[SliceItem]:
    """Yields 2-D slices of an :class:`~lvmmed.data.readers.ImageRecord`.

    Args:
        record: The record (``"volume"``, ``"frames"`` or ``"image2d"``).
        axes: Volume axes to slice along (0 sagittal, 1 coronal, 2 axial); ignored for frames/image2d.
        skip_empty: Skip slices whose foreground fraction is below ``min_foreground``. Foreground = pixels
            above ``p1 + 5% * (p99 - p1)`` of the whole record (so air/background does not count).
        min_foreground: Minimum foreground fraction in [0, 1].
        step: Keep every ``step``-th slice/frame.
        require_mask: Skip slices whose mask has no foreground (only when the record has a mask).
    """
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    array, mask = record.array, record.mask
    spacing = record.meta.get("spacing")
    color = record.is_color
    flat = array.reshape(-1, 3) if color else array.reshape(-1)
    sample = flat[:: max(1, flat.shape[0] // 200_000)]  # percentiles of a strided sample: no full-size copy
    sample = sample.mean(axis=-1) if color else sample
    if np.issubdtype(sample.dtype, np.floating):
        sample = sample[np.isfinite(sample)]
    low, high = (float(v) for v in np.percentile(sample, (1, 99)))

    def keep(plane: np.ndarray, plane_mask: np.ndarray | None) -> bool:
        grey = plane.mean(axis=-1) if color else plane
        if skip_empty and _foreground_fraction(grey, low, high) < min_foreground:
            return False
        return not (require_mask and plane_mask is not None and not plane_mask.any())

    if record.kind == "image2d":
        if keep(array, mask):
            yield SliceItem(None, 0, array, mask, tuple(spacing) if spacing else None)
        return
    if record.kind == "frames":
        for t in range(0, array.shape[0], step):
            plane_mask = mask[t] if mask is not None else None
            if keep(array[t], plane_mask):
                yield SliceItem(None, t, array[t], plane_mask, tuple(spacing) if spacing else None)
        return
    for axis in axes:
        if axis not in (0, 1, 2):
            raise ValueError(f"volume axes must be 0, 1 or 2, got {axis}")
        rest = [a for a in (0, 1, 2) if a != axis]
        spacing2d = (float(spacing[rest[1]]), float(spacing[rest[0]])) if spacing else None
        for index in range(0, array.shape[axis], step):
            plane = display_slice(array, axis, index)
            plane_mask = display_slice(mask, axis, index) if mask is not None else None
            if keep(plane, plane_mask):
                yield SliceItem(axis, index, plane, plane_mask, spacing2d)


def _pil_resize(plane: np.ndarray, size_wh: tuple[int, int], resample) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(plane).resize(size_wh, resample))


def resize(image: np.ndarray, size: int | tuple[int, int], is_mask: bool = False) -> np.ndarray:
    """Resizes (H, W) or (H, W, C) to ``size`` ((H, W); an int means square). The dtype is kept.

    Masks use nearest-neighbour (pixel centres, labels never blend). Images use Pillow's bilinear filter, whose
    support widens with the scale factor, so shrinking is antialiased (the same numbers as ``torch``
    ``interpolate(mode="bilinear", antialias=True)``, tested). Pillow rather than torch: with several worker
    processes on 2 shared cores, torch's intra-op threads made a 224² resize 10-60x slower (21 ms vs 0.5 ms per
    mask, measured here).
    """
    from PIL import Image

    out_h, out_w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if image.shape[:2] == (out_h, out_w):
        return image.copy()
    if is_mask:
        if image.ndim != 2:
            raise ValueError(f"masks must be (H, W), got {image.shape}")
        small = image.min() >= 0 and image.max() <= 255
        plane = image.astype(np.uint8 if small else np.int32)
        return _pil_resize(plane, (out_w, out_h), Image.Resampling.NEAREST).astype(image.dtype)
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return _pil_resize(np.ascontiguousarray(image), (out_w, out_h), Image.Resampling.BILINEAR)
    planes = image[..., None] if image.ndim == 2 else image
    bilinear = Image.Resampling.BILINEAR
    channels = [np.ascontiguousarray(planes[..., c], dtype=np.float32) for c in range(planes.shape[2])]
    resized = [_pil_resize(c, (out_w, out_h), bilinear) for c in channels]
    out = resized[0] if image.ndim == 2 else np.stack(resized, axis=-1)  # the astype below copies once
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(image.dtype)
    return out.astype(image.dtype if np.issubdtype(image.dtype, np.floating) else np.float32)
