"""Payloads for the release trees: real pixels from packaged images, written under a release's file names.

Sources (:mod:`lvmmed.data.samples`): pydicom's CT (grey PNG/JPEG and DICOM), the MNI152 T1 with its GM/WM tissue
map on the same grid (NIfTI, Analyze, MetaImage volumes and label maps), scikit-image's fundus photograph and
histology tile (colour images). Everything is cropped to a few pixels so 59 conversions stay fast.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import numpy as np

SIDE = 24  # 2-D payload side (pixels)


@lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from lvmmed.data import samples
    from lvmmed.data.readers import load_image

    retina = load_image(samples.path("retina"))[300:1100:20, 300:1100:20][:SIDE, :SIDE]  # fundus, real pixels
    ihc = load_image(samples.path("ihc"))[::8, ::8][:SIDE, :SIDE]
    import pydicom

    ct = pydicom.dcmread(samples.path("ct_small")).pixel_array.astype(np.float32)[::5, ::5][:SIDE, :SIDE]
    grey = np.clip((ct - ct.min()) / (np.ptp(ct) or 1) * 255, 0, 255).astype(np.uint8)
    return retina, ihc, grey


@lru_cache(maxsize=1)
def _volume() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MNI152 T1 (every 16th voxel) and its GM/WM tissue map on the same grid, with the affine."""
    import nibabel as nib

    from lvmmed.data import samples

    t1 = nib.load(samples.path("mni152_t1"))
    gm = np.asarray(nib.load(samples.path("mni152_gm")).dataobj)[::16, ::16, ::16]
    wm = np.asarray(nib.load(samples.path("mni152_wm")).dataobj)[::16, ::16, ::16]
    image = np.asarray(t1.dataobj)[::16, ::16, ::16].astype(np.int16)
    labels = np.where(wm > 128, 2, np.where(gm > 128, 1, 0)).astype(np.uint8)
    affine = t1.affine.copy()
    affine[:3, :3] *= 16
    return image, labels, affine


def _png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(array).save(path)


def write_payload(path: Path, kind: str, index: int) -> None:
    """Writes one file of ``kind`` (see :class:`tests.data_prep.release_trees.Tree`); ``index`` varies the pixels."""
    retina, ihc, grey = _photos()
    suffix = "".join(path.suffixes[-2:]).lower() if path.name.lower().endswith(".nii.gz") else path.suffix.lower()
    if kind in ("grey", "rgb"):
        base = np.roll(grey if kind == "grey" else (ihc if suffix in (".tiff", ".tif", ".bmp") else retina), index, 0)
        _png(np.ascontiguousarray(base), path)
    elif kind in ("mask", "mask3"):
        mask = np.zeros((SIDE, SIDE), np.uint8)
        mask[4 + index % 5 : 14, 6:18] = 255
        _png(np.stack([mask // 255 * 2, mask, mask], -1) if kind == "mask3" else mask, path)
    elif kind in ("vol", "seg", "vol2d", "seg2d", "segwhs"):
        image, labels, affine = _volume()
        data = (image if kind.startswith("vol") else labels).copy()
        if kind == "segwhs":  # MM-WHS stores its own label codes (background 0, LV myocardium 205, LA 420, ...)
            data = np.array([0, 205, 420], np.int16)[labels]
        if kind.endswith("2d"):
            data = data[:, :, data.shape[2] // 2]
        _write_volume(path, suffix, np.roll(data, index, 0) if kind.startswith("vol") else data, affine)
    elif kind.startswith("dcm:"):
        _write_dicom(path, kind[4:], index)
    elif kind in ("h5x", "h5y"):
        import h5py

        with h5py.File(path, "w") as fh:
            if kind == "h5x":
                fh["x"] = np.stack([np.roll(ihc[:8, :8], i, 0) for i in range(6)])
            else:
                fh["y"] = np.array([0, 1, 0, 1, 1, 0], np.uint8).reshape(6, 1, 1, 1)
    elif kind == "text":
        path.write_text("side file\n")
    else:
        raise ValueError(f"unknown payload kind {kind!r}")


def _write_volume(path: Path, suffix: str, data: np.ndarray, affine: np.ndarray) -> None:
    import nibabel as nib

    if suffix in (".mhd", ".mha"):
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(np.ascontiguousarray(data.T))  # x, y(, z) -> ITK's z, y, x
        sitk.WriteImage(image, str(path))
    elif suffix == ".hdr":
        nib.save(nib.AnalyzeImage(data, affine), str(path))
    else:
        nib.save(nib.Nifti1Image(data, affine), str(path))


def _write_dicom(path: Path, patient: str, index: int) -> None:
    import pydicom
    from pydicom.uid import generate_uid

    from lvmmed.data import samples

    ds = pydicom.dcmread(samples.path("ct_small"))
    ds.PatientID, ds.PatientName = patient, patient
    ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer)
    path.write_bytes(buffer.getvalue())
