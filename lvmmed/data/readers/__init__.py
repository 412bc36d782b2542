"""Readers: DICOM (files, series, DICOMDIR, SEG), NIfTI and 2-D image folders -> :class:`ImageRecord`.

Every reader returns pixel data, technical ``meta`` and raw ``identity`` separately; only
:mod:`lvmmed.data.deid` may touch ``identity`` (to hash it). See ``docs/readers.md``.
"""

from lvmmed.data.readers.dicom import (
    assemble_series,
    group_files,
    iter_series,
    read_dicom,
    read_dicom_series,
    read_dicomdir,
    scan_dicom,
    scan_dicomdir,
)
from lvmmed.data.readers.dicom_file import NotAnImageError, decode_file
from lvmmed.data.readers.images import load_image, read_image_folder
from lvmmed.data.readers.nifti import read_nifti
from lvmmed.data.readers.record import (
    IDENTITY_FIELDS,
    ImageRecord,
    ReaderError,
    UnsupportedTransferSyntaxError,
    check_not_constant,
)
from lvmmed.data.readers.seg import read_dicom_seg

__all__ = [
    "IDENTITY_FIELDS",
    "ImageRecord",
    "NotAnImageError",
    "ReaderError",
    "UnsupportedTransferSyntaxError",
    "assemble_series",
    "check_not_constant",
    "decode_file",
    "group_files",
    "iter_series",
    "load_image",
    "read_dicom",
    "read_dicom_seg",
    "read_dicom_series",
    "read_dicomdir",
    "read_image_folder",
    "read_nifti",
    "scan_dicom",
    "scan_dicomdir",
]
