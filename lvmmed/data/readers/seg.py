"""DICOM-SEG (Segmentation Storage) -> an integer label map.

Each SEG frame is one segment's plane (``ReferencedSegmentNumber`` in the per-frame
``SegmentIdentificationSequence``). Frames at the same position are merged into one label map whose value is the
segment number (later segments win where segments overlap, a choice the standard leaves open), and the planes are
stacked along the slice normal like any series (:func:`lvmmed.data.readers.geometry.stack_volume`). FRACTIONAL
segmentations are binarised at half of ``MaximumFractionalValue`` (configurable). ``meta["mask_labels"]`` lists
the segment labels by value, index 0 being ``"background"``. The referenced source series UID goes to
``identity["referenced_series_uid"]`` so a pipeline can pair the mask with its image without writing the UID.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.uid import SegmentationStorage

from lvmmed.data.readers.dicom_file import (
    _floats,
    _group_item,
    check_declared_size,
    check_decodable,
    identity_fields,
    read_dataset,
    technical_meta,
)
from lvmmed.data.readers.geometry import check_same_orientation, slice_normal, stack_volume
from lvmmed.data.readers.record import ImageRecord, ReaderError


def _segment_numbers(ds, count: int) -> list[int]:
    numbers = []
    for f in range(count):
        number = _group_item(ds, f, "SegmentIdentificationSequence", "ReferencedSegmentNumber")
        numbers.append(int(number) if number is not None else 1)
    return numbers


def read_dicom_seg(path: str | Path, fractional_threshold: float = 0.5, force: bool = False) -> ImageRecord:
    """Reads a DICOM-SEG file into a uint8 label map (``array`` and ``mask`` are the same map).

    Args:
        path: The SEG file.
        fractional_threshold: Fraction of ``MaximumFractionalValue`` at or above which a FRACTIONAL pixel is in.
        force: Pass ``force=True`` to ``pydicom.dcmread``.

    Returns:
        A ``"volume"`` record (RAS+, when frames carry positions at >= 2 distinct locations), an ``"image2d"``
        (one location) or ``"frames"`` (no geometry) record with ``meta["modality"] == "SEG"``.

    Raises:
        ReaderError: not a SEG object, undecodable, more than 255 segments, or an empty mask.
    """
    ds = read_dataset(path, force=force)
    if ds.get("SOPClassUID") != SegmentationStorage:
        raise ReaderError(path, f"not a DICOM-SEG object (SOP class {getattr(ds.get('SOPClassUID'), 'name', None)})")
    check_decodable(ds, path)
    check_declared_size(ds, path)
    try:
        pixels = np.asarray(ds.pixel_array)
    except Exception as err:  # broad on purpose: report any decoder failure with the file name
        raise ReaderError(path, f"SEG pixel data could not be decoded: {type(err).__name__}: {err}") from err
    frames = pixels if pixels.ndim == 3 else pixels[None]
    if str(ds.get("SegmentationType", "BINARY")).upper() == "FRACTIONAL":
        top = float(ds.get("MaximumFractionalValue") or frames.max() or 1)
        frames = frames >= fractional_threshold * top
    else:
        frames = frames > 0
    count = frames.shape[0]
    numbers = _segment_numbers(ds, count)
    segments = {
        int(s.SegmentNumber): str(s.get("SegmentLabel") or f"segment_{s.SegmentNumber}")
        for s in ds.get("SegmentSequence", [])
    }
    top_label = max([*numbers, *segments, 0])
    if top_label > 255:
        raise ReaderError(path, f"{top_label} segments do not fit a uint8 label map")
    mask_labels = ["background"] + [segments.get(v, f"segment_{v}") for v in range(1, top_label + 1)]

    meta = technical_meta(ds, path)
    meta.update(modality="SEG", mask_labels=mask_labels, segmentation_type=str(ds.get("SegmentationType", "")))
    identity = identity_fields(ds)
    referenced = ds.get("ReferencedSeriesSequence")
    if referenced and referenced[0].get("SeriesInstanceUID"):
        identity["referenced_series_uid"] = str(referenced[0].SeriesInstanceUID)

    positions = [_floats(_group_item(ds, f, "PlanePositionSequence", "ImagePositionPatient"), 3) for f in range(count)]
    orientations = [
        _floats(_group_item(ds, f, "PlaneOrientationSequence", "ImageOrientationPatient"), 6) for f in range(count)
    ]
    spacing = _floats(_group_item(ds, 0, "PixelMeasuresSequence", "PixelSpacing"), 2)
    geometry = all(p is not None for p in positions + orientations) and spacing is not None

    if not geometry:
        labels = (frames * np.asarray(numbers, dtype=np.uint8)[:, None, None]).astype(np.uint8)
        record = ImageRecord(labels, "frames", {**meta, "spacing": None}, identity, mask=labels)
    else:
        orientation = check_same_orientation(orientations, str(path))
        normal = slice_normal(orientation)
        keys = [round(float(np.dot(p, normal)), 3) for p in positions]
        planes: dict[float, np.ndarray] = {}
        where: dict[float, np.ndarray] = {}
        for frame, number, key, position in zip(frames, numbers, keys, positions):
            plane = planes.setdefault(key, np.zeros(frame.shape, np.uint8))
            plane[frame] = number
            where.setdefault(key, position)
        spacing2d = (float(spacing[0]), float(spacing[1]))
        if len(planes) == 1:
            labels = next(iter(planes.values()))
            record = ImageRecord(labels, "image2d", {**meta, "spacing": list(spacing2d)}, identity, mask=labels)
        else:
            ordered = list(planes)
            labels, geo = stack_volume(
                [planes[k] for k in ordered], [where[k] for k in ordered], orientation, spacing2d, str(path)
            )
            labels = labels.astype(np.uint8)
            record = ImageRecord(labels, "volume", {**meta, **geo}, identity, mask=labels)
    if not record.array.any():
        raise ReaderError(path, "segmentation mask is empty (no foreground pixel)")
    return record
