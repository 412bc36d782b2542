"""MetaImage (``.mhd`` header + ``.raw``/``.zraw`` voxels; LUNA16, older CAMUS) -> a RAS+ volume record.

Read with SimpleITK (``SimpleITK.ReadImage``), the maintained ITK reader on PyPI. ITK describes voxel positions in
LPS world coordinates (``origin + direction @ diag(spacing) @ index``, index in x, y, z order) and returns the voxel
array in z, y, x order. This reader transposes the array to x, y, z, turns the LPS affine into RAS (negating its
first two rows) and then applies ``nibabel.as_closest_canonical``, exactly as :func:`~lvmmed.data.readers.read_nifti`
does, so a scan read from ``.mhd`` and the same scan read from NIfTI give the same array, spacing and affine.
A label map (``label_path``, e.g. CAMUS ``*_gt.mhd``) must share the image grid; it is never resampled.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from lvmmed.data.readers.nifti import integer_label_map, volume_meta
from lvmmed.data.readers.record import ImageRecord, ReaderError, check_not_constant

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _read(path: str | Path):
    """``(array in x, y, z order, RAS affine)`` of one MetaImage file (3-D; 4-D keeps ``volume_index``)."""
    import SimpleITK as sitk

    if not Path(path).is_file():
        raise ReaderError(path, "no such file")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:  # SimpleITK raises RuntimeError for unreadable headers or short .raw files
        raise ReaderError(path, f"not a readable MetaImage: {str(err).strip().splitlines()[-1]}") from err
    if image.GetDimension() not in (2, 3) or image.GetNumberOfComponentsPerPixel() != 1:
        raise ReaderError(
            path, f"expected a 2-D or 3-D scalar image, got {image.GetDimension()}-D with "
            f"{image.GetNumberOfComponentsPerPixel()} components",
        )  # fmt: skip
    if image.GetDimension() == 2:  # a single frame (older CAMUS ED/ES): rows, columns as ITK gives them
        return sitk.GetArrayFromImage(image), None
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # ITK: z, y, x -> x, y, z
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return array, LPS_TO_RAS @ affine


def read_metaimage(
    path: str | Path, label_path: str | Path | None = None, modality: str = "OT", affine_tolerance: float = 1e-3
) -> ImageRecord:
    """Reads a MetaImage volume (and optional label map on the same grid), reoriented to RAS+.

    Args:
        path: ``.mhd`` (or ``.mha``) file; its ``ElementDataFile`` (``.raw``) sits next to it.
        label_path: Optional integer label map on the same grid (same shape and affine).
        modality: DICOM-style code stored in ``meta``; ``"CT"`` marks the voxels as HU (LUNA16 stores HU).
        affine_tolerance: Largest affine difference (mm) accepted between image and label.

    A 2-D file (one echocardiography frame) becomes an ``"image2d"`` record in ITK's row, column order.

    Raises:
        ReaderError: unreadable file, not 2-D/3-D, constant image, or a label on another grid.
    """
    data, affine = _read(path)
    if affine is None:
        return _image2d(path, data, label_path, modality)
    img = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    canonical = nib.as_closest_canonical(img)
    array = np.ascontiguousarray(np.asanyarray(canonical.dataobj))
    check_not_constant(array, path, "image volume")
    meta = volume_meta(path, canonical, affine, modality, 1)
    mask = None
    if label_path is not None:
        labels, label_affine = _read(label_path)
        if labels.shape != data.shape or not np.allclose(label_affine, affine, atol=affine_tolerance):
            raise ReaderError(
                label_path, f"label grid differs from image {path}: shape {labels.shape} vs {data.shape}, "
                f"affine max difference {np.abs(label_affine - affine).max():.4g} mm; resample it first",
            )  # fmt: skip
        canonical_labels = nib.as_closest_canonical(nib.Nifti1Image(np.ascontiguousarray(labels), affine))
        mask = np.ascontiguousarray(integer_label_map(np.asanyarray(canonical_labels.dataobj), label_path))
        meta["label_source"] = str(label_path)
    return ImageRecord(array, "volume", meta, {}, mask=mask)


def _image2d(path, data: np.ndarray, label_path, modality: str) -> ImageRecord:
    check_not_constant(data, path)
    mask = None
    if label_path is not None:
        labels, _ = _read(label_path)
        if labels.shape != data.shape:
            raise ReaderError(label_path, f"label shape {labels.shape} differs from image {path} {data.shape}")
        mask = np.ascontiguousarray(np.rint(labels).astype(np.uint8))
    meta = {"modality": modality.upper(), "source": str(path), "spacing": None, "photometric": "MONOCHROME2",
            "rescaled_to_hu": False}  # fmt: skip
    return ImageRecord(np.ascontiguousarray(data), "image2d", meta, {}, mask=mask)
