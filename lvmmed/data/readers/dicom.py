"""DICOM files, folders, series and DICOMDIR trees -> :class:`ImageRecord` lists.

Series assembly: files are grouped by ``SeriesInstanceUID``; single-frame files
with ``ImagePositionPatient``, ``ImageOrientationPatient`` and ``PixelSpacing`` are sorted by position along the
slice normal and stacked into a RAS+ volume (:mod:`lvmmed.data.readers.geometry`). A series without that
geometry falls back to one 2-D record per file, with a warning. A series mixing orientations or shapes is
rejected with a clear :class:`ReaderError` (``mixed_geometry="error"``, default) or read as 2-D slices
(``mixed_geometry="slices"``). Enhanced multi-frame files (per-frame functional groups) become volumes when every
frame has a position; cine and other multi-frame files become ``"frames"`` records.

Scanning never stops at a bad file: each failure is collected as ``{"file", "reason", "error"}`` (fail
loudly per file, record it, don't crash the run). Files that are valid DICOM without pixel
data (DICOMDIR indexes, reports) are skipped silently. :func:`iter_series` first groups files by a header-only
pass and then decodes one series at a time, so memory holds a single series' pixels.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

import pydicom
from pydicom.fileset import FileSet
from pydicom.uid import MediaStorageDirectoryStorage

from lvmmed.data.readers.dicom_file import DicomFile, NotAnImageError, decode_file, read_dataset
from lvmmed.data.readers.geometry import check_same_orientation, stack_volume
from lvmmed.data.readers.record import ImageRecord, ReaderError, check_not_constant

log = logging.getLogger(__name__)
MIXED_GEOMETRY = ("error", "slices")


def _spacing_2d(spacing: tuple[float, float] | None) -> list[float] | None:
    return [float(spacing[0]), float(spacing[1])] if spacing is not None else None


def _file_2d_records(item: DicomFile) -> list[ImageRecord]:
    """A file as 2-D record(s): one image2d, or one frames record for a multi-frame file."""
    check_not_constant(item.frames, item.path)
    meta = {**item.meta, "spacing": _spacing_2d(item.pixel_spacing[0])}
    if item.multiframe:
        meta["n_frames"] = int(item.frames.shape[0])
        return [ImageRecord(item.frames, "frames", meta, dict(item.identity))]
    return [ImageRecord(item.frames[0], "image2d", meta, dict(item.identity))]


def _volume_record(planes, positions, orientation, spacing, base: DicomFile, where: str, n_files: int):
    array, geometry = stack_volume(planes, positions, orientation, spacing, where)
    check_not_constant(array, where, "volume")
    meta = {**base.meta, **geometry, "n_files": n_files}
    identity = {k: v for k, v in base.identity.items() if k != "instance_uid" or n_files == 1}
    return ImageRecord(array, "volume", meta, identity)


def _multiframe_records(item: DicomFile, mixed_geometry: str) -> list[ImageRecord]:
    if item.is_color or item.frames.shape[0] < 2 or not item.has_geometry:
        return _file_2d_records(item)
    try:
        orientation = check_same_orientation(item.orientations, item.path)
        if len(set(item.pixel_spacing)) != 1:
            raise ReaderError(item.path, "frames have different PixelSpacing")
        return [
            _volume_record(list(item.frames), item.positions, orientation, item.pixel_spacing[0], item, item.path, 1)
        ]
    except ReaderError:
        if mixed_geometry == "slices":
            warnings.warn(f"{item.path}: frames do not form one volume; returning frames", stacklevel=2)
            return _file_2d_records(item)
        raise


def _each_2d(items: list[DicomFile], failures: list[dict] | None) -> list[ImageRecord]:
    records = []
    for item in items:
        try:
            records.extend(_file_2d_records(item))
        except ReaderError as err:
            if failures is None:
                raise
            failures.append(_failure(item.path, err))
    return records


def assemble_series(
    items: list[DicomFile], mixed_geometry: str = "error", failures: list[dict] | None = None
) -> list[ImageRecord]:
    """Records for decoded files of ONE series (see the module docstring for the rules).

    Args:
        items: Decoded files sharing one SeriesInstanceUID.
        mixed_geometry: ``"error"`` or ``"slices"``.
        failures: When given, per-file failures of 2-D records (e.g. a constant image) are appended here
            instead of failing the whole series.
    """
    if mixed_geometry not in MIXED_GEOMETRY:
        raise ValueError(f"mixed_geometry must be one of {MIXED_GEOMETRY}, got {mixed_geometry!r}")
    records: list[ImageRecord] = []
    singles = [it for it in items if not it.multiframe]
    for item in items:
        if item.multiframe:
            records.extend(_multiframe_records(item, mixed_geometry))
    if not singles:
        return records
    where = f"series of {len(singles)} files starting {singles[0].path}"
    stackable = len(singles) > 1 and all(it.has_geometry and not it.is_color for it in singles)
    if len(singles) > 1 and not stackable:
        warnings.warn(
            f"{where}: ImagePositionPatient/ImageOrientationPatient/PixelSpacing missing (or colour); "
            f"returning {len(singles)} 2-D images instead of a volume",
            stacklevel=2,
        )
    if not stackable:
        return records + _each_2d(singles, failures)
    try:
        orientation = check_same_orientation([it.orientations[0] for it in singles], where)
        spacings = {it.pixel_spacing[0] for it in singles}
        if len(spacings) != 1:
            raise ReaderError(where, f"series mixes PixelSpacing values {sorted(spacings)}")
        planes = [it.frames[0] for it in singles]
        positions = [it.positions[0] for it in singles]
        records.append(
            _volume_record(planes, positions, orientation, singles[0].pixel_spacing[0], singles[0], where, len(singles))
        )
    except ReaderError:
        if mixed_geometry != "slices":
            raise
        warnings.warn(f"{where}: geometry is mixed; returning 2-D images", stacklevel=2)
        records.extend(_each_2d(singles, failures))
    return records


def _failure(file: str | Path, err: ReaderError) -> dict:
    return {"file": str(file), "reason": err.reason, "error": type(err).__name__}


def group_files(files: Iterable[str | Path], force: bool = False) -> tuple[dict[str, list[Path]], list[dict]]:
    """Header-only pass: files grouped by SeriesInstanceUID (a file without one is its own group).

    Returns ``(groups, failures)``; unreadable headers are failures, DICOMDIR indexes are skipped.
    """
    groups: dict[str, list[Path]] = defaultdict(list)
    failures = []
    for file in files:
        try:
            ds = read_dataset(file, force=force, stop_before_pixels=True)
        except ReaderError as err:
            failures.append(_failure(file, err))
            continue
        if ds.get("SOPClassUID") == MediaStorageDirectoryStorage or "DirectoryRecordSequence" in ds:
            continue
        groups[str(ds.get("SeriesInstanceUID") or f"file:{file}")].append(Path(file))
    return groups, failures


def iter_series(
    files: Iterable[str | Path], force: bool = False, mixed_geometry: str = "error"
) -> Iterator[tuple[list[ImageRecord], list[dict]]]:
    """Yields ``(records, failures)`` one series at a time, so memory holds a single series' pixels.

    The first item carries the header-pass failures (with no records) when there are any.
    """
    groups, failures = group_files(files, force)
    if failures:
        yield [], failures
    for paths in groups.values():
        decoded, series_failures = [], []
        for file in paths:
            try:
                decoded.append(decode_file(file, force=force))
            except NotAnImageError as err:
                log.debug("skipping %s", err)
            except ReaderError as err:
                series_failures.append(_failure(file, err))
        records = []
        if decoded:
            try:
                records = assemble_series(decoded, mixed_geometry, series_failures)
            except ReaderError as err:
                series_failures.append({"file": decoded[0].path, "reason": str(err), "error": type(err).__name__})
        yield records, series_failures


def _collect(chunks: Iterable[tuple[list[ImageRecord], list[dict]]]) -> tuple[list[ImageRecord], list[dict]]:
    records, failures = [], []
    for chunk_records, chunk_failures in chunks:
        records.extend(chunk_records)
        failures.extend(chunk_failures)
    return records, failures


def walk_files(root: str | Path) -> list[Path]:
    """Every non-hidden file under ``root``, in a stable (sorted) order."""
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out.extend(Path(folder, f) for f in sorted(files) if not f.startswith("."))
    return out


def read_dicom_series(
    files: Iterable[str | Path], force: bool = False, mixed_geometry: str = "error"
) -> list[ImageRecord]:
    """Reads the given files, groups them by SeriesInstanceUID and assembles each series.

    Args:
        files: DICOM file paths (any order).
        force: Pass ``force=True`` to ``pydicom.dcmread`` (files without a preamble).
        mixed_geometry: ``"error"`` rejects a series mixing orientations/shapes; ``"slices"`` reads it as 2-D.

    Raises:
        ReaderError: the first failing file or series (use :func:`scan_dicom` to collect failures instead).
    """
    groups: dict[str, list[DicomFile]] = defaultdict(list)
    for file in files:
        try:
            item = decode_file(file, force=force)
        except NotAnImageError:
            continue
        groups[item.series_uid].append(item)
    records = []
    for items in groups.values():
        records.extend(assemble_series(items, mixed_geometry))
    return records


def scan_dicom(
    path: str | Path, force: bool = False, mixed_geometry: str = "error"
) -> tuple[list[ImageRecord], list[dict]]:
    """Like :func:`read_dicom` but returns ``(records, failures)``; failures are ``{"file", "reason", "error"}``."""
    path = Path(path)
    if not path.exists():
        raise ReaderError(path, "no such file or directory")
    files = walk_files(path) if path.is_dir() else [path]
    return _collect(iter_series(files, force, mixed_geometry))


def read_dicom(path: str | Path, force: bool = False, mixed_geometry: str = "error") -> list[ImageRecord]:
    """Reads a DICOM file, or walks a directory and assembles its series.

    For a single file any failure raises :class:`ReaderError`. For a directory, per-file and per-series failures
    are logged as warnings and skipped (use :func:`scan_dicom` to get them).
    """
    path = Path(path)
    if path.is_file():
        decoded = decode_file(path, force=force)
        return assemble_series([decoded], mixed_geometry)
    records, failures = scan_dicom(path, force=force, mixed_geometry=mixed_geometry)
    for failure in failures:
        log.warning("skipped %s: %s", failure["file"], failure["reason"])
    return records


def dicomdir_files(path: str | Path) -> list[Path]:
    """Instance files referenced by a DICOMDIR (``path`` is the DICOMDIR file or its folder)."""
    path = Path(path)
    index = path / "DICOMDIR" if path.is_dir() else path
    try:
        fileset = FileSet(read_dataset(index))
    except (ValueError, KeyError, AttributeError, pydicom.errors.InvalidDicomError) as err:
        raise ReaderError(index, f"not a usable DICOMDIR: {err}") from err
    return [Path(instance.path) for instance in fileset]


def scan_dicomdir(path: str | Path, force: bool = False, mixed_geometry: str = "error"):
    """Like :func:`read_dicomdir` but returns ``(records, failures)``."""
    return _collect(iter_series(dicomdir_files(path), force, mixed_geometry))


def read_dicomdir(path: str | Path, force: bool = False, mixed_geometry: str = "error") -> list[ImageRecord]:
    """Reads every instance a DICOMDIR references (pydicom :class:`~pydicom.fileset.FileSet`), grouped by series."""
    records, failures = scan_dicomdir(path, force=force, mixed_geometry=mixed_geometry)
    for failure in failures:
        log.warning("skipped %s: %s", failure["file"], failure["reason"])
    return records
