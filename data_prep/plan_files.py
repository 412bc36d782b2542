"""NIfTI volumes and 2-D image folders → tasks (one per file), with optional label maps and image labels.

NIfTI: every ``*.nii``/``*.nii.gz`` (or ``image_glob``) under ``--src`` is an image unless it is some image's
label map (found through ``label_pattern``) or matches ``exclude_glob``. Label maps are read on the image grid
(:func:`lvmmed.data.readers.read_nifti` refuses other grids with a clear message).

2-D folders: layout ``classes`` (class = sub-folder path, sorted → label index), ``pairs`` (``images/`` +
``masks/`` with equal stems) or ``flat`` (labels from the ``labels`` CSV). ``auto`` picks pairs, else classes,
else flat. Without identifiers the split unit is the file (``patient_from=stem``), its folder (``parent``) or the
CSV ``patient`` column (``labels``); the chosen value is pseudonymised before it reaches a shard.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from lvmmed.data.readers import ImageRecord, load_image, read_nifti
from lvmmed.data.readers.images import IMAGE_EXTENSIONS
from lvmmed.data.readers.record import check_not_constant

from .plan_volumes import axis_tasks, prepared_volume
from .records_to_samples import pseudonym, record_samples
from .tasks import Task

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", *IMAGE_EXTENSIONS):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _all_files(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    files = (p for p in src.rglob("*") if p.is_file())
    return sorted(p for p in files if not any(part.startswith(".") for part in p.relative_to(src).parts))


def read_labels_csv(path: Path, cfg: dict[str, Any]) -> dict[str, dict[str, str]]:
    """``{file stem and file name: row}`` from a labels CSV (columns from the config)."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        fcol, lcol = cfg["labels_file_column"], cfg["labels_label_column"]
        if reader.fieldnames is None or fcol not in reader.fieldnames or lcol not in reader.fieldnames:
            raise ValueError(f"{path}: labels CSV needs columns '{fcol}' and '{lcol}', has {reader.fieldnames}")
        rows = {}
        for row in reader:
            name = row[fcol].strip()
            rows[name] = row
            rows[_stem(Path(name))] = row
    return rows


def _patient_key(file: Path, src: Path, cfg: dict[str, Any], row: dict[str, str] | None) -> str:
    mode = cfg["patient_from"]
    if mode == "labels":
        if not row or not row.get("patient"):
            raise ValueError(f"patient_from=labels but the labels CSV has no 'patient' value for {file.name}")
        return "csv:" + row["patient"]
    if mode == "parent":
        return "dir:" + str(file.parent.relative_to(src) if src.is_dir() else file.parent.name)
    return "file:" + str(file.relative_to(src) if src.is_dir() else file.name)


def _label_of(file: Path, labels: dict[str, dict[str, str]] | None, cfg: dict[str, Any]) -> str | None:
    if labels is None:
        return None
    row = labels.get(file.name) or labels.get(_stem(file))
    return None if row is None else str(row[cfg["labels_label_column"]])


def _finish(tasks: list[Task], label_of: dict[int, str | None]) -> list[str] | None:
    names = sorted({v for v in label_of.values() if v is not None})
    for t in tasks:
        value = label_of.get(t.index)
        t.params["label"] = names.index(value) if value is not None else None
        t.params["label_name"] = value
    return names or None


def plan_nifti(src: Path, cfg: dict[str, Any], labels: dict | None = None) -> tuple[list[Task], list, dict]:
    """One task per NIfTI image; label maps paired through ``label_pattern``."""
    files = [f for f in _all_files(src) if f.name.lower().endswith(NIFTI_SUFFIXES)]
    if cfg.get("image_glob"):
        files = [f for f in files if f.match(cfg["image_glob"])]
    pairs: dict[Path, Path | None] = {}
    for f in files:
        label = None
        if cfg.get("label_pattern"):
            candidate = (f.parent / cfg["label_pattern"].format(stem=_stem(f), name=f.name)).resolve()
            label = candidate if candidate.is_file() else None
        pairs[f.resolve()] = label
    label_maps = {v for v in pairs.values() if v is not None}
    exclude = cfg.get("exclude_glob")
    images = [f for f in pairs if f not in label_maps and not (exclude and f.match(exclude))]
    tasks, label_of = [], {}
    src_r = src.resolve()
    for i, f in enumerate(sorted(images)):
        rel = str(f.relative_to(src_r)) if src_r.is_dir() else f.name
        patient = pseudonym(_patient_key(f, src_r, cfg, None), cfg)
        params = {"patient": patient, "volume": pseudonym("file:" + rel, cfg),
                  "label_path": str(pairs[f]) if pairs[f] else None}  # fmt: skip
        groups = _slab_groups(f, params["volume"], cfg) if cfg.get("split_unit") == "slab" else [patient]
        label = _label_of(f, labels, cfg)
        for task in axis_tasks(len(tasks), i, "data_prep.plan_files:process_nifti", rel, [str(f)], groups, params,
                               list(cfg["axes"]), len(images)):  # fmt: skip
            tasks.append(task)
            label_of[task.index] = label
    names = _finish(tasks, label_of)
    mask_labels = list(cfg.get("mask_labels") or []) or None
    return tasks, [], {"modality": cfg.get("modality") or "OT", "label_names": names, "mask_labels": mask_labels}


def _slab_groups(file: Path, volume: str, cfg: dict[str, Any]) -> list[str]:
    """Every slab id a volume can produce (from the header: RAS+ shape), for ``split_unit=slab``."""
    import nibabel as nib

    img = nib.load(str(file))
    ornt = nib.orientations.io_orientation(img.affine)
    shape = [0, 0, 0]
    for i in range(3):
        shape[int(ornt[i, 0])] = img.shape[i]
    t = int(cfg["slab_thickness"])
    return [f"{volume}-a{a}-slab{k:03d}" for a in cfg["axes"] for k in range(-(-shape[a] // t))]


def process_nifti(task: Task, cfg: dict[str, Any]) -> list:
    """Worker: one volume (+ label map) → slices along the configured axes."""
    p = task.params
    modality = cfg.get("modality") or "OT"
    record, normalized = prepared_volume(task, cfg, modality, lambda: read_nifti(task.paths[0], p["label_path"],
                                                                                  modality=modality))  # fmt: skip
    base = sample_base(task, cfg)
    if record.mask is not None and not cfg.get("mask_labels"):
        base["mask_labels"] = None
    prefix = f"i{p.get('source_index', task.index):06d}"
    return record_samples(record, cfg, base, prefix, task.splits, p.get("axes"), normalized)


def sample_base(task: Task, cfg: dict[str, Any]) -> dict[str, Any]:
    """The meta fields every sample of a file task carries (dataset, patient, volume, label ...)."""
    p = task.params
    return {
        "dataset": cfg["name"], "organ": cfg.get("organ", ""), "center": cfg.get("center") or cfg["name"],
        "patient": p["patient"], "volume": p["volume"], "group": p["patient"], "slab_prefix": p["volume"],
        "source_index": p.get("source_index", task.index), "label": p.get("label"), "label_name": p.get("label_name"),
        "mask_labels": list(cfg.get("mask_labels") or []) or None,
    }  # fmt: skip


def plan_images(src: Path, cfg: dict[str, Any], labels: dict | None = None) -> tuple[list[Task], list, dict]:
    """One task per 2-D image (classes / pairs / flat layouts)."""
    exts = tuple(IMAGE_EXTENSIONS)
    files = [f for f in _all_files(src) if f.suffix.lower() in exts]
    if cfg.get("image_glob"):
        files = [f for f in files if f.match(cfg["image_glob"])]
    layout = cfg["layout"]
    if layout == "auto":
        layout = "pairs" if (src / "images").is_dir() and (src / "masks").is_dir() else "flat"
        if layout == "flat" and labels is None and any(f.parent != src for f in files):
            layout = "classes"
    masks: dict[str, Path] = {}
    if layout == "pairs":
        masks = {_stem(m): m for m in files if m.parent == src / "masks"}
        files = [f for f in files if f.parent == src / "images"]
    if cfg.get("exclude_glob"):
        files = [f for f in files if not f.match(cfg["exclude_glob"])]
    tasks, label_of, failures = [], {}, []
    for f in files:
        rel = str(f.relative_to(src)) if src.is_dir() else f.name
        row = (labels or {}).get(f.name) or (labels or {}).get(_stem(f))
        mask = masks.get(_stem(f))
        if layout == "pairs" and mask is None:
            failures.append({"file": rel, "kind": "error", "reason": f"no mask with stem '{_stem(f)}' in masks/"})
            continue
        i = len(tasks)
        patient = pseudonym(_patient_key(f, src, cfg, row), cfg)
        params = {"patient": patient, "volume": pseudonym("file:" + rel, cfg), "mask_path": str(mask) if mask else None}
        tasks.append(Task(i, "data_prep.plan_files:process_image", rel, [str(f)], [patient], params))
        if layout == "classes" and labels is None:
            label_of[i] = str(f.parent.relative_to(src))
        else:
            label_of[i] = _label_of(f, labels, cfg)
    names = _finish(tasks, label_of)
    mask_labels = list(cfg.get("mask_labels") or []) or None
    return tasks, failures, {"modality": cfg.get("modality") or "OT", "label_names": names, "mask_labels": mask_labels}


def process_image(task: Task, cfg: dict[str, Any]) -> list:
    """Worker: one 2-D image (+ mask) → one sample."""
    p = task.params
    array = load_image(task.paths[0])
    check_not_constant(array, task.display)
    mask = None
    if p.get("mask_path"):
        mask = load_image(p["mask_path"], as_mask=True)
        if set(np.unique(mask).tolist()) == {0, 255}:  # binary PNG convention
            mask = (mask > 0).astype(np.uint8)
    modality = cfg.get("modality") or "OT"
    record = ImageRecord(array, "image2d", {"modality": modality, "spacing": None}, {}, mask=mask)
    return record_samples(record, cfg, sample_base(task, cfg), f"i{task.index:06d}", task.splits[p["patient"]])
