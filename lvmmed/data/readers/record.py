"""The reader output type and the reader errors shared by every format.

A reader turns one source (DICOM file/series, DICOM-SEG, NIfTI, PNG/JPEG) into :class:`ImageRecord` objects that
keep three things apart: the pixel ``array`` (+ optional aligned ``mask``), technical ``meta`` fields, and the raw
``identity`` fields that exist only so :mod:`lvmmed.data.deid` can hash them. ``identity`` must never be written
anywhere (shards, logs, reports); ``meta["source"]`` is a local path for failure reports only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("image2d", "volume", "frames")
IDENTITY_FIELDS = (
    "patient_id",
    "patient_name",
    "birth_date",
    "study_uid",
    "series_uid",
    "instance_uid",
    "referenced_series_uid",
)


class ReaderError(Exception):
    """A source could not be read; the message names the file and the reason."""

    def __init__(self, path: str | Path | None, reason: str):
        self.path = str(path) if path is not None else None
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path else reason)


class UnsupportedTransferSyntaxError(ReaderError):
    """Compressed pixel data whose transfer syntax has no installed pydicom decoder plugin."""

    def __init__(self, path: str | Path | None, syntax: str, install_hint: str):
        self.syntax = syntax
        self.install_hint = install_hint
        super().__init__(path, f"transfer syntax '{syntax}' cannot be decoded here; install {install_hint}")


@dataclass
class ImageRecord:
    """One decoded image, volume or frame stack.

    Attributes:
        array: ``"image2d"``: (H, W) or (H, W, 3); ``"volume"``: (X, Y, Z) in RAS+ voxel order (the
            ``nibabel.as_closest_canonical`` convention); ``"frames"``: (T, H, W) or (T, H, W, 3) for cine or
            multi-frame 2-D acquisitions without usable 3-D geometry.
        kind: ``"image2d"``, ``"volume"`` or ``"frames"``.
        meta: Technical fields only (modality, spacing, affine, photometric, rescaled_to_hu, source, ...).
            ``spacing`` is mm per spatial array axis: [row, col] for image2d and for each frame of ``frames``,
            [x, y, z] for volumes.
        identity: Raw identifiers (:data:`IDENTITY_FIELDS`) for pseudonymisation only. Never write them.
        mask: Aligned integer label map with the spatial shape of ``array`` (no colour axis), or None.
        label: Image-level class label (index or name), or None.
    """

    array: np.ndarray
    kind: str
    meta: dict[str, Any] = field(default_factory=dict)
    identity: dict[str, str] = field(default_factory=dict)
    mask: np.ndarray | None = None
    label: int | str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.mask is not None and self.mask.shape != self.spatial_shape:
            raise ValueError(f"mask shape {self.mask.shape} != spatial shape {self.spatial_shape}")

    @property
    def is_color(self) -> bool:
        """True for RGB arrays (trailing axis of length 3 beyond the spatial axes)."""
        spatial = 3 if self.kind in ("volume", "frames") else 2
        return self.array.ndim == spatial + 1 and self.array.shape[-1] == 3

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape without the colour axis."""
        return tuple(self.array.shape[:-1]) if self.is_color else tuple(self.array.shape)

    def __repr__(self) -> str:  # never print identity
        return (
            f"ImageRecord(kind={self.kind!r}, shape={self.array.shape}, dtype={self.array.dtype}, "
            f"modality={self.meta.get('modality')!r}, mask={self.mask is not None}, label={self.label!r})"
        )


def check_not_constant(array: np.ndarray, path: str | Path | None, what: str = "pixel array") -> None:
    """Rejects empty, constant or non-finite-only arrays (some decoders silently return zeros: pydicom#966)."""
    if array.size == 0:
        raise ReaderError(path, f"{what} is empty (shape {array.shape})")
    finite = np.isfinite(array) if np.issubdtype(array.dtype, np.floating) else None
    if finite is not None and not finite.any():
        raise ReaderError(path, f"{what} has no finite values")
    values = array[finite] if finite is not None else array
    if values.min() == values.max():
        raise ReaderError(path, f"{what} is constant (every value = {values.min()}); refusing an empty image")
