"""DICOM collections → tasks: a header-only pass groups files into series (one task each) and pseudonymises.

Planning reads headers only (``stop_before_pixels``) with the shared reader helpers; pixel decoding, series
assembly (:func:`lvmmed.data.readers.dicom.assemble_series`, sorted along the slice normal) and SEG reading
happen in the workers. The patient pseudonym follows :func:`lvmmed.data.deid.identity_hashes` (PatientID, else
name + birth date, else study, else the series), so every series of a patient lands in one split.

DICOM-SEG objects are paired with the series they reference (``ReferencedSeriesSequence``); their label map
becomes ``mask.npy`` of that series when both grids agree. A SEG whose images are not in ``--src`` is reported
as skipped (a mask alone is not an image). ``--src`` may be a DICOMDIR file (its referenced instances are read);
inside a folder, DICOMDIR index files are ignored (their instances are walked anyway).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pydicom.uid import UID, MediaStorageDirectoryStorage, SegmentationStorage

from lvmmed.data import deid
from lvmmed.data.readers import (
    ImageRecord,
    NotAnImageError,
    UnsupportedTransferSyntaxError,
    assemble_series,
    decode_file,
    read_dicom_seg,
)
from lvmmed.data.readers.dicom import dicomdir_files, walk_files
from lvmmed.data.readers.dicom_file import identity_fields, modality_of, read_dataset
from lvmmed.data.readers.record import ReaderError

from .records_to_samples import _salt, record_samples
from .tasks import SkipInput, Task

log = logging.getLogger(__name__)

PROCESSOR = "data_prep.plan_dicom:process_series"


def _referenced_series(ds) -> str | None:
    for item in ds.get("ReferencedSeriesSequence", []) or []:
        if item.get("SeriesInstanceUID"):
            return str(item.SeriesInstanceUID)
    return None


DICOM_SUFFIXES = ("", ".dcm", ".dicom", ".ima", ".dic")


def _header_failure_kind(file: Path, err: ReaderError) -> str:
    """Non-DICOM side files (README, CSV, images) are skipped; a DICOM-named file that fails is an error."""
    side_file = file.suffix.lower() not in DICOM_SUFFIXES or file.name.upper().startswith(("README", "LICENSE"))
    return "skipped" if side_file and "not a DICOM file" in err.reason else "error"


def plan_dicom(
    src: Path, cfg: dict[str, Any], labels: dict | None = None
) -> tuple[list[Task], list[dict[str, str]], dict[str, Any]]:
    """Groups the DICOM files under ``src`` into one task per series (``labels`` is not used for DICOM).

    Returns:
        ``(tasks, planning_failures, info)``; failures are unreadable headers (``{"file", "kind", "reason"}``).
    """
    if src.is_file() and src.name.upper() == "DICOMDIR":  # a DICOMDIR index: its referenced instances
        src = src.resolve()  # pydicom's FileSet gives resolved paths: a --src through a symlink must match them
        files = sorted(dicomdir_files(src))
        src = src.parent
    else:
        files = walk_files(src) if src.is_dir() else [src]
    if cfg.get("image_glob"):
        files = [f for f in files if f.match(cfg["image_glob"])]
    series: dict[str, list[Path]] = defaultdict(list)
    header: dict[str, Any] = {}
    segs: list[tuple[Path, str | None]] = []
    mixed: set[str] = set()
    failures = []
    salt = _salt(str(cfg.get("salt_file", "")))
    for file in files:
        rel = str(file.relative_to(src)) if src.is_dir() else file.name
        try:
            ds = read_dataset(file, force=bool(cfg.get("force")), stop_before_pixels=True)
        except ReaderError as err:
            failures.append({"file": rel, "kind": _header_failure_kind(file, err), "reason": err.reason})
            continue
        if ds.get("SOPClassUID") == MediaStorageDirectoryStorage or "DirectoryRecordSequence" in ds:
            continue
        if ds.get("SOPClassUID") == SegmentationStorage:
            segs.append((file, _referenced_series(ds)))
            continue
        if "Rows" not in ds:
            sop_name = UID(str(ds.get("SOPClassUID") or "")).name
            if "Image Storage" in sop_name:  # an image class without its image module: cut short or damaged
                reason = f"truncated or corrupt: a {sop_name} object without its image module (Rows, pixels)"
                failures.append({"file": rel, "kind": "error", "reason": reason})
            else:  # structured reports, presentation states, key objects, ...: not images
                failures.append({"file": rel, "kind": "skipped", "reason": "no image (no Rows/pixel module)"})
            continue
        uid = str(ds.get("SeriesInstanceUID") or f"file:{rel}")
        volume_source = SimpleNamespace(identity={**identity_fields(ds), "instance_uid": ""}, meta={"source": uid})
        hashes = deid.identity_hashes(volume_source, salt)
        key = uid
        if uid in header and header[uid]["patient"] != hashes["patient"]:
            # Another patient's file under the same SeriesInstanceUID (careless anonymisation): its own group, so
            # it keeps its own patient pseudonym and split instead of silently taking the first file's.
            key = f"{uid}|{hashes['patient']}"
            if uid not in mixed:
                mixed.add(uid)
                log.warning("a DICOM series UID holds files of several patients; they are grouped per patient")
        series[key].append(file)
        if key not in header:
            header[key] = {"modality": modality_of(ds), **hashes}
            if key != uid:
                header[key]["volume"] = deid.pseudonym(key, salt, len(hashes["volume"]))
    seg_of: dict[str, list[str]] = defaultdict(list)
    for file, ref in segs:
        rel = str(file.relative_to(src)) if src.is_dir() else file.name
        if ref is None or ref not in series:
            failures.append({
                "file": rel, "kind": "skipped",
                "reason": "DICOM-SEG whose referenced image series is not under --src (a mask needs its image)",
            })  # fmt: skip
        else:
            seg_of[ref].append(str(file))
    tasks = []
    order = sorted(series, key=lambda u: str(series[u][0]))
    for i, uid in enumerate(order):
        paths = sorted(series[uid])
        first = paths[0]
        display = str(first.relative_to(src)) if src.is_dir() else first.name
        h = header[uid]
        rels = [str(q.relative_to(src)) if src.is_dir() else q.name for q in paths]
        params = {"modality": cfg.get("modality") or h["modality"], "patient": h["patient"], "volume": h["volume"],
                  "segs": seg_of.get(uid, []), "rels": rels}  # fmt: skip
        if len(paths) > 1:
            display = f"{Path(display).parent}/ ({len(paths)} files of one series)"
        tasks.append(Task(i, PROCESSOR, display, [str(p) for p in paths], [h["patient"]], params))
    modalities = sorted({t.params["modality"] for t in tasks})
    info = {"modality": modalities[0] if len(modalities) == 1 else modalities, "label_names": None}
    return tasks, failures, info


def _attach_seg(records: list, seg_paths: list[str], failures: list[dict[str, str]], display: str) -> None:
    for seg_path in seg_paths:
        try:
            seg = read_dicom_seg(seg_path)
        except ReaderError as err:
            failures.append({"file": Path(seg_path).name, "kind": "error", "reason": err.reason})
            continue
        for n, rec in enumerate(records):
            if rec.spatial_shape == seg.mask.shape and rec.mask is None:
                records[n] = ImageRecord(rec.array, rec.kind, rec.meta, rec.identity, mask=seg.mask, label=rec.label)
                records[n].meta["mask_labels"] = seg.meta.get("mask_labels")
                break
        else:
            failures.append({"file": Path(seg_path).name, "kind": "error",
                             "reason": f"SEG grid {seg.mask.shape} matches no image of {display}"})  # fmt: skip


def process_series(task: Task, cfg: dict[str, Any]) -> tuple[list, list[dict[str, str]]]:
    """Worker: decodes one series (per-file failures reported, the rest kept), attaches SEG masks, encodes."""
    p = task.params
    failures: list[dict[str, str]] = []
    decoded = []
    for path, rel in zip(task.paths, p["rels"]):
        try:
            decoded.append(decode_file(path, force=bool(cfg.get("force"))))
        except NotAnImageError as err:
            failures.append({"file": rel, "kind": "skipped", "reason": err.reason})
        except (UnsupportedTransferSyntaxError, ReaderError) as err:  # corrupt, truncated, undecodable here
            failures.append({"file": rel, "kind": "error", "reason": err.reason})
    if not decoded:
        if not failures:
            raise SkipInput("no decodable image in this series")
        return [], failures
    try:
        records = assemble_series(decoded, cfg.get("mixed_geometry", "slices"))
    except ReaderError as err:
        return [], [*failures, {"file": task.display, "kind": "error", "reason": err.reason}]
    if p["segs"]:
        _attach_seg(records, p["segs"], failures, task.display)
    out = []
    for r, record in enumerate(records):
        base = {
            "dataset": cfg["name"], "modality": p["modality"], "organ": cfg.get("organ", ""),
            "center": cfg.get("center") or cfg["name"], "patient": p["patient"], "volume": p["volume"],
            "group": p["patient"], "source_index": task.index, "label": None, "label_name": None,
            "mask_labels": record.meta.get("mask_labels") if record.mask is not None else None,
        }  # fmt: skip
        out += record_samples(record, cfg, base, f"i{task.index:06d}_r{r}", task.splits[p["patient"]])
    return out, failures
