"""NIfTI (and anything else nibabel loads) -> a RAS+ volume record, with an optional label volume.

``nib.as_closest_canonical`` reorders/flips the voxel axes to RAS+
(https://nipy.org/nibabel/coordinate_systems.html); it never resamples, so an oblique affine stays oblique in
``meta["affine"]``. A label volume must live on the same grid (shape and affine within ``affine_tolerance`` mm):
resampling labels silently is a data-prep decision, not a reader's.
4-D images keep one volume (``volume_index``, default 0; the choice matters little for pretraining slices and is
configurable). NIfTI has no modality tag, so callers pass ``modality``; CT NIfTI is taken to be in HU.

Before any voxel is read, the header is checked: the declared shape x dtype against the decode limits
(:mod:`lvmmed.data.readers.limits`) and, for uncompressed files, against the file size (a truncated file is named
as such); a zero voxel size or a singular affine is refused with a reason that says so (reorienting would fail
with an obscure "Cannot drop coordinates").
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from lvmmed.data.readers.limits import DecodeLimits, resolve_limits
from lvmmed.data.readers.record import ImageRecord, ReaderError, check_not_constant


def _load(path: str | Path, limits: DecodeLimits | None = None):
    try:
        img = nib.load(str(path))
    except FileNotFoundError as err:
        raise ReaderError(path, "no such file") from err
    except Exception as err:  # broad on purpose: nibabel raises ImageFileError, EOFError, zlib errors, ...
        raise ReaderError(path, f"not a readable NIfTI/nibabel image: {type(err).__name__}: {err}") from err
    check_header(img, path, limits)
    return img


def check_header(img, path: str | Path, limits: DecodeLimits | None = None) -> None:
    """Declared size vs decode limits and file size; zero voxel size / singular affine (before reading voxels)."""
    shape = tuple(int(n) for n in img.shape)
    itemsize = np.dtype(img.get_data_dtype()).itemsize
    if len(shape) >= 2:
        limit = resolve_limits(limits)
        per_volume = shape[2] if len(shape) > 2 else 1
        limit.check(path, shape[0], shape[1], per_volume, itemsize)
        total = int(np.prod(shape, dtype=np.int64)) * itemsize
        if total > limit.max_bytes:
            gib, cap = total / 2**30, limit.max_bytes / 2**30
            reason = (
                f"declares {shape} x {itemsize} bytes = {gib:.2f} GiB, over the decode limit max_bytes={cap:.2f} GiB"
            )
            raise ReaderError(path, reason + "; refused before decoding")
        file = Path(str(path))
        offset = getattr(img.header, "get_data_offset", lambda: None)()
        if file.suffix.lower() == ".nii" and offset is not None and file.is_file():
            needed = int(offset) + total
            if file.stat().st_size < needed:
                declared = f"{shape} {img.get_data_dtype()} voxels ({needed:,} bytes with the header)"
                raise ReaderError(
                    path, f"truncated: the header declares {declared}, the file holds {file.stat().st_size:,}"
                )
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    linear = np.asarray(img.affine, dtype=np.float64)[:3, :3]
    if (
        any(z == 0 or not np.isfinite(z) for z in zooms)
        or not np.isfinite(linear).all()
        or abs(np.linalg.det(linear)) < 1e-12
    ):
        raise ReaderError(
            path,
            f"singular affine / zero voxel size (voxel sizes {zooms}, affine determinant "
            f"{np.linalg.det(linear) if np.isfinite(linear).all() else float('nan'):.3g}): the header's geometry is "
            "broken; fix pixdim and the qform/sform (nibabel: header.set_zooms, img.set_sform) and convert again",
        )


def _canonical_array(img, path, volume_index: int | None) -> tuple[np.ndarray, object]:
    if img.ndim < 3 or img.ndim > 4:
        raise ReaderError(path, f"expected a 3-D or 4-D image, got shape {img.shape}")
    try:  # reorienting a non-RAS proxy image already reads the voxels
        canonical = nib.as_closest_canonical(img)
        data = np.asanyarray(canonical.dataobj)
    except Exception as err:  # broad on purpose: truncated gz, short file
        raise ReaderError(path, f"voxel data could not be read: {type(err).__name__}: {err}") from err
    if data.ndim == 4:
        index = 0 if volume_index is None else volume_index
        if not -data.shape[3] <= index < data.shape[3]:
            raise ReaderError(path, f"volume_index {index} out of range for {data.shape[3]} volumes")
        data = data[..., index]
    if not data.dtype.isnative:  # big-endian files: torch and shard writers want native byte order
        data = data.astype(data.dtype.newbyteorder("="))
    return np.ascontiguousarray(data), canonical


def volume_meta(
    path: str | Path,
    canonical: nib.spatialimages.SpatialImage,
    source_affine: np.ndarray,
    modality: str,
    n_volumes: int,
) -> dict:
    """The ``meta`` of a volume record reoriented to RAS+ (``canonical``) from a source with ``source_affine``."""
    return {
        "modality": modality.upper(),
        "source": str(path),
        "affine": canonical.affine.tolist(),
        "spacing": [float(z) for z in canonical.header.get_zooms()[:3]],
        "orientation": "".join(nib.aff2axcodes(canonical.affine)),
        "source_orientation": "".join(nib.aff2axcodes(source_affine)),
        "n_volumes": n_volumes,
        "rescaled_to_hu": modality.upper() == "CT",
        "photometric": "MONOCHROME2",
    }  # fmt: skip


def integer_label_map(values: np.ndarray, label_path: str | Path) -> np.ndarray:
    """``values`` as an integer label map (uint8, or int32 past 255 labels).

    Raises:
        ReaderError: the values are not non-negative integers.
    """
    rounded = np.rint(values)
    if not np.allclose(rounded, values) or rounded.min() < 0:
        raise ReaderError(label_path, "label volume is not a non-negative integer label map")
    return rounded.astype(np.uint8 if rounded.max() < 256 else np.int32)


def read_nifti(
    path: str | Path,
    label_path: str | Path | None = None,
    modality: str = "OT",
    volume_index: int | None = None,
    affine_tolerance: float = 1e-3,
) -> ImageRecord:
    """Reads an image (and optional label map) and reorients both to RAS+.

    Args:
        path: Image file (``.nii``, ``.nii.gz``, or any format nibabel loads).
        label_path: Optional integer label volume on the same grid.
        modality: DICOM-style modality code stored in ``meta`` (``"CT"`` marks the data as HU).
        volume_index: Volume kept from a 4-D image (default 0); ``meta["n_volumes"]`` records how many there were.
        affine_tolerance: Maximum absolute affine difference (mm) accepted between image and label.

    Raises:
        ReaderError: unreadable file, constant image, or label grid different from the image grid.
    """
    img = _load(path)
    array, canonical = _canonical_array(img, path, volume_index)
    check_not_constant(array, path, "image volume")
    meta = volume_meta(path, canonical, img.affine, modality, int(img.shape[3]) if img.ndim == 4 else 1)
    mask = None
    if label_path is not None:
        label_img = _load(label_path)
        if label_img.shape[:3] != img.shape[:3] or not np.allclose(label_img.affine, img.affine, atol=affine_tolerance):
            raise ReaderError(
                label_path,
                f"label grid differs from image {path}: shape {label_img.shape[:3]} vs {img.shape[:3]}, "
                f"affine max difference {np.abs(label_img.affine - img.affine).max():.4g} mm; resample it first "
                f"(nibabel.processing.resample_from_to(label, image, order=0))",
            )
        labels, _ = _canonical_array(label_img, label_path, 0)
        mask = integer_label_map(labels, label_path)
        meta["label_source"] = str(label_path)
    return ImageRecord(array, "volume", meta, {}, mask=mask)
