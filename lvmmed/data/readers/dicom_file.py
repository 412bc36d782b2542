"""Decoding one DICOM file with pydicom into frames + per-frame geometry + technical metadata.

Choices (attributes as defined in DICOM PS3.3, https://dicom.nema.org/medical/dicom/current/output/html/part03.html):

* ``force=True`` (reading files without the 128-byte preamble) is only used when the caller asks for it
  (pydicom#340); otherwise :class:`pydicom.errors.InvalidDicomError` becomes a :class:`ReaderError`.
* Compressed transfer syntaxes are checked against pydicom's decoder registry *before* decoding; a syntax with
  no installed plugin raises :class:`UnsupportedTransferSyntaxError` naming the plugin to install (pydicom#1440).
* ``RescaleSlope/Intercept`` (or the enhanced ``PixelValueTransformationSequence``) is applied for CT (giving
  HU, ``meta["rescaled_to_hu"] = True``) and for other quantitative modalities (MR, NM, PT), but never for
  projection X-ray / US / SEG, whose rescale is not a physical unit (fastai2#144).
* ``MONOCHROME1`` is inverted so that larger values are always brighter (``meta["inverted_monochrome1"]``).
* Decode limits (:mod:`lvmmed.data.readers.limits`): Rows x Columns x NumberOfFrames x SamplesPerPixel x
  BitsAllocated is checked before ``pixel_array`` allocates anything, so a small compressed file declaring a huge
  image is refused with a per-file failure naming the limit.
* Colour: pydicom converts YBR to RGB while decoding (``as_rgb=True``); palette colour goes through
  :func:`pydicom.pixels.apply_color_lut`; output colour is uint8 RGB.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder
from pydicom.uid import MediaStorageDirectoryStorage

from lvmmed.data.readers.limits import DecodeLimits, resolve_limits
from lvmmed.data.readers.record import ReaderError, UnsupportedTransferSyntaxError

NO_RESCALE_MODALITIES = frozenset({"CR", "DX", "MG", "IO", "PX", "XA", "RF", "US", "SEG", "OT", "SC", "ES", "XC"})
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"


class NotAnImageError(ReaderError):
    """A valid DICOM object without pixel data (DICOMDIR, SR, RTSTRUCT, ...): skipped, not a failure of the file."""


@dataclass
class DicomFile:
    """One decoded DICOM file: frames first, plus geometry per frame (None where absent)."""

    path: str
    frames: np.ndarray  # (F, H, W) or (F, H, W, 3)
    multiframe: bool
    positions: list[np.ndarray | None]  # ImagePositionPatient per frame (LPS mm)
    orientations: list[np.ndarray | None]  # ImageOrientationPatient per frame (6 direction cosines)
    pixel_spacing: list[tuple[float, float] | None]  # (row spacing, column spacing) mm per frame
    meta: dict[str, Any] = field(default_factory=dict)
    identity: dict[str, str] = field(default_factory=dict)

    @property
    def series_uid(self) -> str:
        return self.identity.get("series_uid") or f"file:{self.path}"

    @property
    def has_geometry(self) -> bool:
        return all(p is not None for p in self.positions + self.orientations + self.pixel_spacing)

    @property
    def is_color(self) -> bool:
        return self.frames.ndim == 4


def read_dataset(path: str | Path, force: bool = False, stop_before_pixels: bool = False) -> Dataset:
    """``pydicom.dcmread`` with every failure mapped to :class:`ReaderError` naming the file."""
    try:
        return pydicom.dcmread(str(path), force=force, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as err:
        raise ReaderError(path, f"not a DICOM file ({err}); pass force=True to read files without a preamble") from err
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, OverflowError) as err:
        raise ReaderError(path, f"corrupt or truncated DICOM: {type(err).__name__}: {err}") from err


def check_decodable(ds: Dataset, path: str | Path) -> None:
    """Raises :class:`UnsupportedTransferSyntaxError` when no installed plugin decodes the pixel data."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is None or not syntax.is_compressed:
        return
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as err:
        raise UnsupportedTransferSyntaxError(path, syntax.name, "a pydicom plugin for it (gdcm)") from err
    if not decoder.is_available:
        hint = "; or ".join(decoder.missing_dependencies) or "gdcm or pylibjpeg plugins"
        raise UnsupportedTransferSyntaxError(path, syntax.name, hint)


def check_declared_size(ds: Dataset, path: str | Path, limits: DecodeLimits | None = None) -> None:
    """Checks the header's declared pixel count and decoded size against the decode limits (before decoding)."""
    try:
        rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        frames = int(ds.get("NumberOfFrames") or 1)
        samples = int(ds.get("SamplesPerPixel") or 1)
        bits = int(ds.get("BitsAllocated") or 8)
    except (TypeError, ValueError) as err:
        raise ReaderError(path, f"unreadable image size in the header: {err}") from err
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        bits = max(bits, 32)
    # pixel_array decodes to float64 when a rescale/LUT applies later; the limit is on the raw decoded buffer.
    resolve_limits(limits).check(path, rows, cols, frames, samples * max(1, (bits + 7) // 8))


def _group_item(ds: Dataset, frame: int, sequence: str, keyword: str) -> Any:
    """Looks a functional-group attribute up per frame, then in the shared groups, then at the top level."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if items is not None and len(items) > index:
            inner = items[index].get(sequence)
            if inner is not None and len(inner) and keyword in inner[0]:
                return inner[0].get(keyword)
    return ds.get(keyword)


def _floats(value: Any, n: int) -> np.ndarray | None:
    try:
        out = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (n,) and np.isfinite(out).all() else None


def _ultrasound_spacing(ds: Dataset) -> np.ndarray | None:
    """(row, col) mm from the first ultrasound region when its physical units are cm (code 3)."""
    regions = ds.get("SequenceOfUltrasoundRegions")
    if not regions:
        return None
    region = regions[0]
    if region.get("PhysicalUnitsXDirection") != 3 or region.get("PhysicalUnitsYDirection") != 3:
        return None
    delta_cm = _floats([region.get("PhysicalDeltaY"), region.get("PhysicalDeltaX")], 2)
    return None if delta_cm is None else delta_cm * 10.0


def _to_uint8_rgb(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype == np.uint8:
        return rgb
    top = float(rgb.max()) if rgb.size else 0.0
    scale = 257.0 if top > 255 else 1.0  # 16-bit LUTs map 0..65535
    return np.clip(np.rint(rgb / scale), 0, 255).astype(np.uint8)


def identity_fields(ds: Dataset) -> dict[str, str]:
    """The raw identifiers of a header (patient, study, series, instance), for pseudonymisation only."""
    pairs = {
        "patient_id": "PatientID",
        "patient_name": "PatientName",
        "birth_date": "PatientBirthDate",
        "study_uid": "StudyInstanceUID",
        "series_uid": "SeriesInstanceUID",
        "instance_uid": "SOPInstanceUID",
    }
    return {key: str(ds.get(tag)) for key, tag in pairs.items() if ds.get(tag) not in (None, "")}


# DICOM PS3.3 C.7.3.1.1.1 defined terms for Modality (current and retired). Anything else becomes "OT": the tag is
# free text in the wild, and a shard keeps no header text that could carry a name.
MODALITIES = frozenset(
    [
        "AR",
        "ASMT",
        "AU",
        "BDUS",
        "BI",
        "BMD",
        "CR",
        "CT",
        "CTPROTOCOL",
        "DG",
        "DOC",
        "DX",
        "ECG",
        "EPS",
        "ES",
        "FID",
        "GM",
        "HC",
        "HD",
        "IO",
        "IOL",
        "IVOCT",
        "IVUS",
        "KER",
        "KO",
        "LEN",
        "LS",
        "MG",
        "MR",
        "M3D",
        "NM",
        "OAM",
        "OCT",
        "OP",
        "OPM",
        "OPT",
        "OPTBSV",
        "OPTENF",
        "OPV",
        "OSS",
        "OT",
        "PLAN",
        "PR",
        "PT",
        "PX",
        "REG",
        "RESP",
        "RF",
        "RG",
        "RTDOSE",
        "RTIMAGE",
        "RTPLAN",
        "RTRECORD",
        "RTSTRUCT",
        "RWV",
        "SEG",
        "SM",
        "SMR",
        "SR",
        "SRF",
        "STAIN",
        "TEXTUREMAP",
        "TG",
        "US",
        "VA",
        "XA",
        "XC",
        "CD",
        "CF",
        "CP",
        "CS",
        "DD",
        "DF",
        "DM",
        "DS",
        "EC",
        "FA",
        "FS",
        "LP",
        "MA",
        "MS",
        "OPR",
        "ST",
        "VF",
    ]
)


def modality_of(ds: Dataset) -> str:
    """The header's Modality when it is a DICOM defined term, else ``OT``."""
    modality = str(ds.get("Modality") or "OT").strip().upper()
    return modality if modality in MODALITIES else "OT"


def technical_meta(ds: Dataset, path: str | Path) -> dict[str, Any]:
    """The technical fields kept from a header (no identifiers; ``source`` is for reports only)."""
    modality = modality_of(ds)
    burned = str(ds.get("BurnedInAnnotation") or "").upper() or None
    sop_class = str(ds.get("SOPClassUID") or "")
    risky_kind = modality in ("US", "XC", "ES") or sop_class.startswith(SECONDARY_CAPTURE_PREFIX)
    meta: dict[str, Any] = {
        "modality": modality,
        "source": str(path),
        "sop_class": getattr(ds.get("SOPClassUID"), "name", sop_class),
        "transfer_syntax": getattr(getattr(ds, "file_meta", {}).get("TransferSyntaxUID"), "name", None),
        "source_photometric": str(ds.get("PhotometricInterpretation") or ""),
        "burned_in_annotation": None if burned is None else burned == "YES",
        # PHI risk flag: BurnedInAnnotation (0028,0301)=YES, or US/secondary capture without an explicit NO.
        "burned_in_risk": burned == "YES" or (risky_kind and burned != "NO"),
    }
    for key, tag in (("slice_thickness", "SliceThickness"), ("frame_time_ms", "FrameTime")):
        value = ds.get(tag)
        if value not in (None, ""):
            meta[key] = float(value)
    if ds.get("BodyPartExamined"):
        meta["body_part"] = str(ds.BodyPartExamined)
    return meta


def _rescale(ds: Dataset, frames: np.ndarray, modality: str) -> tuple[np.ndarray, bool]:
    """Applies the modality rescale per frame where it is physical; returns (array, applied)."""
    if modality in NO_RESCALE_MODALITIES:
        return frames, False
    if ds.get("ModalityLUTSequence"):
        return np.asarray(apply_modality_lut(frames, ds), dtype=np.float32), True
    out = frames.astype(np.float32)
    applied = False
    for f in range(frames.shape[0]):
        slope = _group_item(ds, f, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = _group_item(ds, f, "PixelValueTransformationSequence", "RescaleIntercept")
        if slope is None and intercept is None:
            continue
        out[f] = out[f] * float(slope if slope not in (None, "") else 1.0) + float(intercept or 0.0)
        applied = True
    return (out, True) if applied else (frames, False)


def decode_file(path: str | Path, force: bool = False, limits: DecodeLimits | None = None) -> DicomFile:
    """Reads and decodes one DICOM file.

    ``limits`` bounds the declared size before decoding (default: :meth:`DecodeLimits.from_env`).

    Raises:
        NotAnImageError: valid DICOM without pixel data (DICOMDIR, structured report, ...).
        UnsupportedTransferSyntaxError: compressed pixel data without an installed decoder plugin.
        ReaderError: anything else (corrupt, truncated, constant pixels, undecodable, over a decode limit).
    """
    ds = read_dataset(path, force=force)
    if ds.get("SOPClassUID") == MediaStorageDirectoryStorage or "DirectoryRecordSequence" in ds:
        raise NotAnImageError(path, "DICOMDIR index (use read_dicomdir)")
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        sop_uid = ds.get("SOPClassUID") or getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID")
        sop = getattr(sop_uid, "name", "unknown SOP class")
        if sop_uid is None or "Rows" in ds or "Image Storage" in sop or "Segmentation" in sop:
            raise ReaderError(path, f"image object ({sop}) without pixel data: truncated or corrupt file")
        raise NotAnImageError(path, f"no pixel data ({sop})")
    check_decodable(ds, path)
    check_declared_size(ds, path, limits)
    try:
        array = np.asarray(ds.pixel_array)  # YBR -> RGB conversion is pydicom's default (as_rgb=True)
    except Exception as err:  # broad on purpose: decoder plugins raise many types; report them all per file
        raise ReaderError(path, f"pixel data could not be decoded: {type(err).__name__}: {err}") from err

    if not array.dtype.isnative:  # big-endian syntaxes: torch and the shard writer need native byte order
        array = array.astype(array.dtype.newbyteorder("="))
    meta = technical_meta(ds, path)
    photometric = meta["source_photometric"]
    n_frames = int(ds.get("NumberOfFrames") or 1)
    samples = int(ds.get("SamplesPerPixel") or 1)
    if photometric == "PALETTE COLOR":
        array = _to_uint8_rgb(np.asarray(apply_color_lut(array, ds)))
        samples = 3
    frames_first = array if (n_frames > 1 and array.ndim == (4 if samples == 3 else 3)) else array[None]
    if samples == 3:
        frames_first = _to_uint8_rgb(frames_first)
        meta["photometric"] = "RGB"
    else:
        frames_first, applied = _rescale(ds, frames_first, meta["modality"])
        meta["rescale_applied"] = applied
        if photometric == "MONOCHROME1":
            lo, hi = frames_first.min(), frames_first.max()
            frames_first = (hi.astype(np.float64) + lo - frames_first).astype(frames_first.dtype)
            meta["inverted_monochrome1"] = True
        meta["photometric"] = "MONOCHROME2"
    meta["rescaled_to_hu"] = bool(meta["modality"] == "CT" and meta.get("rescale_applied", False))

    count = frames_first.shape[0]
    positions = [_floats(_group_item(ds, f, "PlanePositionSequence", "ImagePositionPatient"), 3) for f in range(count)]
    orientations = [
        _floats(_group_item(ds, f, "PlaneOrientationSequence", "ImageOrientationPatient"), 6) for f in range(count)
    ]
    spacing = []
    for f in range(count):
        candidates = (  # projection radiographs carry the detector spacing; US the region's physical delta
            _floats(_group_item(ds, f, "PixelMeasuresSequence", "PixelSpacing"), 2),
            _floats(ds.get("ImagerPixelSpacing"), 2),
            _ultrasound_spacing(ds),
        )
        valid = [c for c in candidates if c is not None and (c > 0).all()]
        spacing.append(tuple(float(v) for v in valid[0]) if valid else None)
    return DicomFile(
        path=str(path),
        frames=frames_first,
        multiframe=n_frames > 1,
        positions=positions,
        orientations=orientations,
        pixel_spacing=spacing,
        meta=meta,
        identity=identity_fields(ds),
    )
