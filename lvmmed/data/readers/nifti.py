"""NIfTI (and anything else nibabel loads) -> a RAS+ volume record, with an optional label volume.

``nib.as_closest_canonical`` reorders/flips the voxel axes to RAS+
(https://nipy.org/nibabel/coordinate_systems.html); it never resamples, so an oblique affine stays oblique in
``meta["affine"]``. A label volume must live on the same grid (shape and affine within ``affine_tolerance`` mm):
resampling labels silently is a data-prep decision, not a reader's.
4-D images keep one volume (``volume_index``, default 0; the choice matters little for pretraining slices and is
configurable). NIfTI has no modality tag, so callers pass ``modality``; CT NIfTI is taken to be in HU.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from lvmmed.data.readers.record import ImageRecord, ReaderError, check_not_constant


def _load(path: str | Path):
    try:
        return nib.load(str(path))
    except FileNotFoundError as err:
        raise ReaderError(path, "no such file") from err
    except Exception as err:  # broad on purpose: nibabel raises ImageFileError, EOFError, zlib errors, ...
        raise ReaderError(path, f"not a readable NIfTI/nibabel image: {type(err).__name__}: {err}") from err


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
    meta = {
        "modality": modality.upper(),
        "source": str(path),
        "affine": canonical.affine.tolist(),
        "spacing": [float(z) for z in canonical.header.get_zooms()[:3]],
        "orientation": "".join(nib.aff2axcodes(canonical.affine)),
        "source_orientation": "".join(nib.aff2axcodes(img.affine)),
        "n_volumes": int(img.shape[3]) if img.ndim == 4 else 1,
        "rescaled_to_hu": modality.upper() == "CT",
        "photometric": "MONOCHROME2",
    }
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
        rounded = np.rint(labels)
        if not np.allclose(rounded, labels) or rounded.min() < 0:
            raise ReaderError(label_path, "label volume is not a non-negative integer label map")
        mask = rounded.astype(np.uint8 if rounded.max() < 256 else np.int32)
        meta["label_source"] = str(label_path)
    return ImageRecord(array, "volume", meta, {}, mask=mask)
