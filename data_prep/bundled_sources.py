"""Bundled 2-D sets: ``dicom_modality`` (pydicom + pydicom-data files) and ``color2d`` (scikit-image photos).

``dicom_modality``: every decodable bundled DICOM image whose Modality is an imaging modality (CT, MR, CR, DX, US,
NM, MG, XA, PT, RF; test patterns ``OT``, ``SEG`` and ``RTDOSE`` are left out), one sample per 2-D image, per
cine/multi-frame frame (every ``frame_step``-th, at most ``max_frames``) or per volume slice. ``label`` is the
index of the modality in the manifest's ``label_names``. Identical instances stored in several transfer syntaxes
share a SOPInstanceUID and are converted once (uncompressed copy preferred). ``patient`` is the salted hash of
PatientID (of the file name when PatientID is empty), so no patient crosses splits. Caveat: CR has 2 distinct
images, NM 1; this is a pipeline benchmark, not a scientific one. Images are stored grey (colour US → BT.601 luma)
so one set has one channel count.

``color2d``: the fundus photograph (``retina``) and the IHC histology image (``ihc``) cut into a non-overlapping
tile grid; label = fundus / histology. Split unit = a 2x2 block of tiles of one image (two source images only),
so held-out tiles are unseen regions of the same two images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lvmmed.data import samples
from lvmmed.data.readers import ImageRecord, ReaderError, load_image, read_dicom, read_nifti
from lvmmed.data.readers.dicom_file import check_decodable, read_dataset

from .encode import foreground_fraction
from .records_to_samples import pseudonym, record_samples
from .tasks import SkipInput, Task

IMAGING_MODALITIES = ("CT", "MR", "CR", "DX", "US", "NM", "MG", "XA", "PT", "RF")
_TINY_MAX_FILE_FRAMES = 64  # the tiny profile leaves out the 120-frame cine (3 s of JPEG decoding)


def _dicom_candidates() -> list[tuple[str, Path]]:
    out = []
    for source in ("pydicom", "pydicom-data"):
        if not samples.source_available(source):
            continue
        root = samples.SOURCES[source].root()
        out += [(source, f) for f in sorted(root.rglob("*")) if f.is_file() and f.name.upper() != "DICOMDIR"]
    return out


def plan_dicom_modality(cfg: dict[str, Any]) -> tuple[list[Task], dict[str, Any]]:
    """Scans the bundled DICOM headers (no pixels) into one task per distinct decodable image object."""
    found = []
    for source, file in _dicom_candidates():
        try:
            ds = read_dataset(file, stop_before_pixels=True)
            check_decodable(ds, file)
        except ReaderError:
            continue  # not DICOM, corrupt, or undecodable here: not part of this set
        modality = str(ds.get("Modality", "")).upper()
        if modality not in IMAGING_MODALITIES or "Rows" not in ds:
            continue
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if cfg.get("profile") == "tiny" and frames > _TINY_MAX_FILE_FRAMES:
            continue
        compressed = bool(ds.file_meta.get("TransferSyntaxUID") and ds.file_meta.TransferSyntaxUID.is_compressed)
        uid = str(ds.get("SOPInstanceUID", "")) or f"{source}:{file.name}"
        rel = f"{source}/{file.relative_to(samples.SOURCES[source].root())}"
        pid = str(ds.get("PatientID", "")).strip()
        found.append((uid, compressed, rel, file, modality, pid))
    seen: set[str] = set()
    chosen = []
    for uid, _compressed, rel, file, modality, pid in sorted(found, key=lambda x: (x[0], x[1], x[2])):
        if cfg.get("dedupe", True) and uid in seen:
            continue
        seen.add(uid)
        chosen.append((rel, file, modality, pid))
    chosen.sort()
    label_names = sorted({c[2] for c in chosen})
    tasks = []
    for i, (rel, file, modality, pid) in enumerate(chosen):
        patient = pseudonym(f"patient:{pid}" if pid else f"file:{rel}", cfg)
        params = {"modality": modality, "label": label_names.index(modality), "patient": patient}
        tasks.append(Task(i, "data_prep.bundled_sources:process_dicom", rel, [str(file)], [patient], params))
    info = {
        "modality": label_names,
        "label_names": label_names,
        "mask_labels": None,
        "source": "pydicom 3.0.2 test files + pydicom-data 1.0.0 (MIT): decodable imaging DICOM, one instance per "
        "SOPInstanceUID, label = Modality tag",
    }
    return tasks, info


def process_dicom(task: Task, cfg: dict[str, Any]) -> list:
    """Worker: one DICOM file → grey samples labelled by modality."""
    p = task.params
    try:
        records = read_dicom(task.paths[0])
    except ReaderError as err:  # e.g. 12-bit JPEG Extended: Pillow claims the syntax but cannot decode it
        raise SkipInput(f"not decodable here: {err.reason}") from None
    out = []
    for r_index, record in enumerate(records):
        base = {
            "dataset": "dicom_modality", "modality": p["modality"], "organ": "", "center": "pydicom",
            "patient": p["patient"], "group": p["patient"], "source_index": task.index,
            "volume": pseudonym(f"object:{task.display}:{r_index}", cfg),
            "label": p["label"], "label_name": p["modality"], "mask_labels": None,
        }  # fmt: skip
        out += record_samples(record, cfg, base, f"i{task.index:06d}_r{r_index}", task.splits[p["patient"]])
    return out


_PHOTOS = {"retina": ("fundus", "FUNDUS", "eye"), "ihc": ("histology", "PATH", "tissue")}


def plan_color2d(cfg: dict[str, Any]) -> tuple[list[Task], dict[str, Any]]:
    """One task per photo; groups = 2x2 tile blocks."""
    label_names = [_PHOTOS[n][0] for n in _PHOTOS]
    tasks = []
    for i, name in enumerate(_PHOTOS):
        grid = int(cfg["tile_grid"][name])
        blocks = sorted({f"{name}-block{r // 2}{c // 2}" for r in range(grid) for c in range(grid)})
        params = {"photo": name, "grid": grid, "label": i, "patient": pseudonym(f"photo:{name}", cfg)}
        tasks.append(
            Task(i, "data_prep.bundled_sources:process_photo", name, [str(samples.path(name))], blocks, params)
        )
    info = {
        "modality": ["FUNDUS", "PATH"],
        "label_names": label_names,
        "mask_labels": None,
        "source": "scikit-image 0.26.0 data: retina.jpg (fundus, CC0, Häggström/Wikimedia) and ihc.png "
        "(immunohistochemistry); non-overlapping tiles, split unit = 2x2 tile block",
    }
    return tasks, info


def process_photo(task: Task, cfg: dict[str, Any]) -> list:
    """Worker: tiles one colour photo into labelled samples (tiles that are mostly black are skipped)."""
    p = task.params
    rgb = load_image(task.paths[0])
    label_name, modality, organ = _PHOTOS[p["photo"]]
    grid = p["grid"]
    th, tw = rgb.shape[0] // grid, rgb.shape[1] // grid
    out = []
    for r in range(grid):
        for c in range(grid):
            tile = np.ascontiguousarray(rgb[r * th : (r + 1) * th, c * tw : (c + 1) * tw])
            if foreground_fraction(tile) < 0.5:  # retina corners are black
                continue
            group = f"{p['photo']}-block{r // 2}{c // 2}"
            base = {
                "dataset": "color2d", "modality": modality, "organ": organ, "center": p["photo"],
                "patient": p["patient"], "volume": p["patient"], "group": group, "source_index": task.index,
                "label": p["label"], "label_name": label_name, "mask_labels": None,
            }  # fmt: skip
            record = ImageRecord(tile, "image2d", {"modality": modality, "spacing": None}, {})
            out += record_samples(record, cfg, base, f"i{task.index:06d}_t{r:02d}{c:02d}", task.splits[group])
    return out


# ---- pretrain_extra: every other bundled medical image, for pretraining only (no labels, no held-out split) ----
_EXTRA_VOLUMES = {  # nibabel's test data (MIT): name → (file, modality)
    "nibabel_t1": ("anatomical.nii", "MR"),
    "nibabel_epi4d": ("example4d.nii.gz", "MR"),
    "nibabel_functional": ("functional.nii", "MR"),
}
_EXTRA_DICOM = ("0.dcm", "1.dcm")  # nibabel's Siemens MR DICOM slices
_EXTRA_PHOTOS = {"microaneurysms": ("FUNDUS", "eye", 2), "cell": ("MICROSCOPY", "cell", 2)}  # scikit-image: grid


def plan_pretrain_extra(cfg: dict[str, Any]) -> tuple[list[Task], dict[str, Any]]:
    """One task per extra source file; every sample goes to ``train`` (``split_fractions = [1, 0, 0]``)."""
    tasks: list[Task] = []
    if samples.source_available("nibabel"):
        root = samples.SOURCES["nibabel"].root()
        for name, (file, modality) in _EXTRA_VOLUMES.items():
            if (root / file).is_file():
                params = {"kind": "volume", "name": name, "modality": modality}
                tasks.append(_extra_task(len(tasks), name, root / file, params, cfg))
        for file in _EXTRA_DICOM:
            if (root / file).is_file():
                params = {"kind": "dicom", "name": f"nibabel_{file[0]}", "modality": "MR"}
                tasks.append(_extra_task(len(tasks), f"nibabel_{file}", root / file, params, cfg))
    if samples.source_available("scikit-image"):
        root = samples.SOURCES["scikit-image"].root()
        for name, (modality, _organ, grid) in _EXTRA_PHOTOS.items():
            if (root / f"{name}.png").is_file():
                params = {"kind": "photo", "name": name, "modality": modality, "grid": grid}
                tasks.append(_extra_task(len(tasks), name, root / f"{name}.png", params, cfg))
    info = {
        "modality": sorted({t.params["modality"] for t in tasks}),
        "label_names": None,
        "mask_labels": None,
        "source": "nibabel 5.4.2 test data (MIT: anatomical.nii, example4d.nii.gz, functional.nii first volumes, "
        "all three axes; 0.dcm, 1.dcm) + scikit-image 0.26.0 data (microaneurysms.png, cell.png, 2x2 tiles); "
        "pretraining only, every sample in train",
    }
    return tasks, info


def _extra_task(index: int, display: str, path: Path, params: dict[str, Any], cfg: dict[str, Any]) -> Task:
    group = pseudonym(f"extra:{params['name']}", cfg)
    params = {**params, "patient": group}
    return Task(index, "data_prep.bundled_sources:process_extra", display, [str(path)], [group], params)


def process_extra(task: Task, cfg: dict[str, Any]) -> list:
    """Worker: one extra source → unlabelled samples (volumes sliced along every configured axis)."""
    p = task.params
    base = {
        "dataset": "pretrain_extra", "modality": p["modality"], "organ": "", "center": p["name"],
        "patient": p["patient"], "volume": p["patient"], "group": p["patient"], "source_index": task.index,
        "label": None, "label_name": None, "mask_labels": None,
    }  # fmt: skip
    split = task.splits[p["patient"]]
    if p["kind"] == "volume":  # 4-D series: the reader keeps the first volume
        record = read_nifti(task.paths[0], modality=p["modality"], volume_index=0)
        return record_samples(record, cfg, base, f"i{task.index:06d}", split)
    if p["kind"] == "dicom":
        out = []
        for r_index, record in enumerate(read_dicom(task.paths[0])):
            out += record_samples(record, {**cfg, "axes": [2]}, base, f"i{task.index:06d}_r{r_index}", split)
        return out
    image = load_image(task.paths[0])
    grid, out = p["grid"], []
    th, tw = image.shape[0] // grid, image.shape[1] // grid
    for r in range(grid):
        for c in range(grid):
            tile = np.ascontiguousarray(image[r * th : (r + 1) * th, c * tw : (c + 1) * tw])
            record = ImageRecord(tile, "image2d", {"modality": p["modality"], "spacing": None}, {})
            out += record_samples(record, cfg, base, f"i{task.index:06d}_t{r}{c}", split)
    return out
