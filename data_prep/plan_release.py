"""A catalog entry's release (:class:`~data_prep.catalog_release.Release`) → tasks, failures and a plan.

One task per image file (2-D image or volume), per DICOM series (through :mod:`data_prep.plan_dicom`) or per block
of HDF5 patches. The plan counts what the conversion will do before any pixel is read: inputs, images, masks
paired, images whose mask is missing (``missing_mask`` failures: they are not converted), classes with counts,
patients, official splits and the files that are ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lvmmed.config import ConfigError
from lvmmed.data.readers import ImageRecord, ReaderError, load_image, read_nifti
from lvmmed.data.readers.hdf5 import hdf5_length, read_hdf5_labels, read_hdf5_patches
from lvmmed.data.readers.metaimage import read_metaimage
from lvmmed.data.readers.record import check_not_constant

from .catalog_release import (
    IMAGE_SUFFIXES,
    VOLUME_SUFFIXES,
    Item,
    Labels,
    Release,
    find_csv,
    masks_optional_for,
    official_split,
    read_csv_rows,
    scan_release,
    suffix_of,
    summarize_counts,
)
from .plan_dicom import plan_dicom
from .plan_files import sample_base
from .plan_volumes import axis_tasks, first_axis_only, prepared_volume
from .records_to_samples import pseudonym, record_samples
from .tasks import Task

_MASK_KEYS = ("masks", "mask_path", "label_path", "segs")  # task params naming a mask (all planners)
HDF5_BLOCK = 4096  # patches per task: ~110 MB of 96x96x3 uint8 in a worker at most


def _label_source(release: Release, cfg: dict[str, Any]) -> Labels | None:
    """The entry's label source, or a user ``labels=`` CSV (columns from the config) replacing it."""
    if cfg.get("labels"):
        return Labels("csv", cfg["labels"], cfg["labels_file_column"], cfg["labels_label_column"],
                      patient_column="patient")  # fmt: skip
    return release.labels


class _LabelTable:
    """Looks up an image's classes (and CSV patient) from a CSV, a one-hot CSV or the regex ``label`` group."""

    def __init__(self, src: Path, labels: Labels | None, notes: list[str]):
        self.labels, self.rows, self.all_names = labels, {}, None
        if labels is None or labels.kind == "group":
            return
        path = find_csv(src, labels.csv)
        if path is None:
            raise ConfigError(f"labels CSV {labels.csv!r} not found under {src}")
        header, rows = read_csv_rows(path, labels.header)
        need = [labels.file_column] + ([labels.label_column] if labels.kind == "csv" else list(labels.columns))
        missing = [c for c in need if c and c not in header]
        if missing:
            raise ConfigError(f"{path.name}: labels CSV needs columns {missing}, has {header}")
        self.columns = list(labels.columns) or [c for c in header if c != labels.file_column]
        if labels.kind == "onehot":
            self.all_names = [labels.names.get(c, c) for c in self.columns]
        for row in rows:
            name = row[labels.file_column].strip()
            self.rows[name] = row
            self.rows.setdefault(name[: len(name) - len(suffix_of(name))], row)
        notes.append(f"labels from {path.name} ({len(rows)} rows)")

    def row(self, item: Item) -> dict[str, str] | None:
        name = item.rel.rsplit("/", 1)[-1]
        return self.rows.get(name) or self.rows.get(name[: len(name) - len(suffix_of(name))])

    def classes(self, item: Item) -> list[str] | None:
        lab = self.labels
        if lab is None:
            return None
        if lab.kind == "group":
            raw = item.groups.get("label")
            return None if raw is None else [lab.names.get(raw, raw)]
        row = self.row(item)
        if row is None:
            return None
        if lab.kind == "onehot":
            return [lab.names.get(c, c) for c in self.columns if float(row[c] or 0) > 0.5]
        raw = row[lab.label_column].strip()
        values = raw.split(lab.multi_sep) if lab.multi_sep else [raw]
        return [lab.names.get(v.strip(), v.strip()) for v in values if v.strip()]


def plan_release(src: Path, cfg: dict[str, Any], release: Release) -> tuple[list[Task], list, dict]:
    """Tasks for one release (format from ``cfg["format"]``); ``info["plan"]`` holds the plan counts."""
    fmt = cfg["format"]
    if fmt == "dicom":
        return _plan_dicom(src, cfg)
    if fmt == "hdf5":
        return _plan_hdf5(src, cfg, release)
    notes: list[str] = []
    scan = scan_release(src, release)
    table = _LabelTable(src, _label_source(release, cfg), notes)
    multi = bool(table.labels and (table.labels.multi_sep or table.labels.kind == "onehot"))
    tasks, failures, classes_of, files, volumes = [], [], {}, 0, 0
    n_volumes = sum(1 for it in scan.items if suffix_of(it.rel) in VOLUME_SUFFIXES)
    for item in scan.items:
        if item.missing and not masks_optional_for(release, item):
            reason = f"the release pairs this image with {item.missing[0]}, which is missing"
            failures.append({"file": item.rel, "kind": "missing_mask", "reason": reason})
            continue
        suffix = suffix_of(item.rel)
        volume = suffix in VOLUME_SUFFIXES
        if not volume and suffix not in IMAGE_SUFFIXES:
            raise ConfigError(f"{item.rel}: the entry's image pattern matched a {suffix!r} file (not an image)")
        if volume and len(item.masks) > 1:
            raise ConfigError(f"{item.rel}: several label volumes per image are not supported")
        row = table.row(item) if table.labels and table.labels.kind != "group" else None
        key = _patient_key(release, item, row)
        patient = pseudonym(key, cfg)
        index = len(tasks)
        params = {
            "patient": patient, "volume": pseudonym("file:" + item.rel, cfg),
            "masks": [str(src / m) for m in item.masks], "mask_merge": release.mask_merge,
            "mask_channel": release.mask_channel, "mask_values": list(release.mask_values) or None,
            "official_split": item.official_split,
        }  # fmt: skip
        if volume:
            new = axis_tasks(index, files, "data_prep.plan_release:process_volume", item.rel, [str(src / item.rel)],
                             [patient], params, list(cfg["axes"]), n_volumes, volumes)  # fmt: skip
            volumes += 1
        else:
            params["source_index"] = files
            new = [Task(index, "data_prep.plan_release:process_image2d", item.rel, [str(src / item.rel)], [patient],
                        params)]  # fmt: skip
        files += 1
        for task in new:
            tasks.append(task)
            classes_of[task.index] = table.classes(item)
    names = _set_labels(tasks, classes_of, multi, table.all_names)
    plan = _plan_counts(tasks, failures, names, classes_of, scan.ignored, notes)
    return tasks, failures, _info(cfg, names, multi, plan)


def _patient_key(release: Release, item: Item, row: dict[str, str] | None) -> str:
    if release.patient == "group":
        return "pat:" + item.groups["patient"]
    if release.patient == "csv":
        column = release.labels.patient_column if release.labels else "patient"
        if row is not None and row.get(column, "").strip():
            return "csv:" + row[column].strip()
        raise ConfigError(f"{item.rel}: no row with a '{column}' value in the labels CSV (the patient key)")
    return "file:" + item.rel


def _set_labels(
    tasks: list[Task], classes_of: dict[int, list[str] | None], multi: bool, all_names: list[str] | None = None
) -> list[str] | None:
    """Sets ``label``/``label_name`` (and multi-hot ``labels``) on every task; returns the class names.

    The names are the one-hot CSV's class columns in their order, else the sorted classes found.
    """
    names = all_names or sorted({c for cs in classes_of.values() if cs for c in cs})
    for t in tasks:
        classes = classes_of.get(t.index)
        if not classes:
            t.params.update(label=None, label_name=None, labels=[0] * len(names) if multi and classes == [] else None)
            continue
        t.params["label"] = names.index(classes[0]) if len(classes) == 1 else None
        t.params["label_name"] = "|".join(classes)
        t.params["labels"] = [int(n in classes) for n in names] if multi else None
    return names or None


def _plan_counts(tasks, failures, names, classes_of, ignored, notes) -> dict[str, Any]:
    split_values = [t.params.get("official_split") for t in tasks if _first_of_input(t)]
    class_values = [c for t in tasks if _first_of_input(t) for c in (classes_of.get(t.index) or [])]
    inputs = [t for t in tasks if _first_of_input(t)]  # a volume sliced by several axis tasks counts once
    return {
        "inputs": len(inputs),
        "images": sum(t.params.get("n_images", len(t.paths)) for t in inputs),
        "masks_paired": sum(1 for t in inputs if any(t.params.get(k) for k in _MASK_KEYS)),
        "missing_masks": sum(1 for f in failures if f["kind"] == "missing_mask"),
        "classes": summarize_counts(class_values) if names else None,
        "unlabelled": sum(1 for t in inputs if not classes_of.get(t.index)) if names else None,
        "patients": len({g for t in tasks for g in t.groups}),
        "official_splits": summarize_counts(split_values) if any(split_values) else None,
        "ignored": len(ignored),
        "ignored_examples": ignored[:5],
        "notes": notes,
    }


def _first_of_input(task: Task) -> bool:
    """True for the first task of an input (axis tasks of a volume share the input)."""
    return task.params.get("axis_rank", 0) == 0


def plan_counts_of(tasks: list[Task], failures: list[dict[str, str]]) -> dict[str, Any]:
    """Plan counts for tasks made by the generic planners (``--format`` without a catalog entry)."""
    classes_of = {t.index: [t.params["label_name"]] if t.params.get("label_name") else None for t in tasks}
    names = sorted({c[0] for c in classes_of.values() if c}) or None
    ignored = [f["file"] for f in failures if f["kind"] == "skipped"]
    return _plan_counts(tasks, failures, names, classes_of, ignored, [])


def _info(cfg: dict[str, Any], names, multi: bool, plan: dict[str, Any]) -> dict[str, Any]:
    mask_labels = list(cfg.get("mask_labels") or []) or None
    return {"modality": cfg.get("modality") or "OT", "label_names": names, "mask_labels": mask_labels,
            "multi_label": multi, "plan": plan}  # fmt: skip


def _plan_dicom(src: Path, cfg: dict[str, Any]) -> tuple[list[Task], list, dict]:
    if cfg.get("labels"):
        raise ConfigError("a labels CSV cannot be used with DICOM input (labels come from no header field); "
                          "remove labels= / --labels")  # fmt: skip
    tasks, failures, info = plan_dicom(src, cfg)
    info["plan"] = plan_counts_of(tasks, failures)
    return tasks, failures, info


def _plan_hdf5(src: Path, cfg: dict[str, Any], release: Release) -> tuple[list[Task], list, dict]:
    """PatchCamelyon-style ``*_x.h5`` (patches) + ``*_y.h5`` (labels) + optional ``*_meta.csv`` (``wsi``)."""
    scan = scan_release(src, release)
    names_map = release.labels.names if release.labels else {}
    tasks, notes, split_values, class_values, used = [], [], [], [], set()
    files = []
    for item in scan.items:
        x = src / item.rel
        y, meta_csv = (x.with_name(x.name.replace("_x.h5", suffix)) for suffix in ("_y.h5", "_meta.csv"))
        used |= {p.relative_to(src).as_posix() for p in (y, meta_csv) if p.is_file()}
        n = hdf5_length(x, "x")
        labels = [names_map.get(str(v), str(v)) for v in read_hdf5_labels(y, 0, n)] if y.is_file() else None
        class_values += labels or []
        files.append((item, x, y, meta_csv, n, labels))
    names = sorted(set(class_values)) or None
    for item, x, y, meta_csv, n, labels in files:
        wsi = None
        if release.patient == "hdf5" and meta_csv.is_file():
            header, rows = read_csv_rows(meta_csv)
            wsi = [r["wsi"] for r in rows] if "wsi" in header and len(rows) == n else None
        if wsi is None:
            notes.append(f"{item.rel}: no {meta_csv.name} with a 'wsi' column: every patch is its own patient")
        split = official_split(release, item.groups.get("split"))
        for start in range(0, n, HDF5_BLOCK):
            stop = min(n, start + HDF5_BLOCK)
            keys = [f"wsi:{wsi[i]}" if wsi else f"patch:{item.rel}:{i}" for i in range(start, stop)]
            patients = [pseudonym(k, cfg) for k in keys]
            params = {"start": start, "stop": stop, "patients": patients, "official_split": split,
                      "has_labels": labels is not None, "names_map": names_map, "label_names": names,
                      "volume": pseudonym("file:" + item.rel, cfg), "n_images": stop - start}  # fmt: skip
            tasks.append(Task(len(tasks), "data_prep.plan_release:process_hdf5", f"{item.rel}[{start}:{stop}]",
                              [str(x), str(y)], sorted(set(patients)), params))  # fmt: skip
            split_values += [split] * (stop - start)
    plan = _plan_counts(tasks, [], None, {}, [f for f in scan.ignored if f not in used], notes)
    plan["official_splits"] = summarize_counts(split_values) if any(split_values) else None
    plan["classes"] = summarize_counts(class_values) if names else None
    plan["unlabelled"] = sum(t.params["n_images"] for t in tasks if not t.params["has_labels"]) if names else None
    return tasks, [], _info(cfg, names, False, plan)


def _base(task: Task, cfg: dict[str, Any]) -> dict[str, Any]:
    """:func:`data_prep.plan_files.sample_base` plus the release fields (multi-hot labels, official split)."""
    p = task.params
    return {**sample_base(task, cfg), "labels": p.get("labels"), "official_split": p.get("official_split")}


def merged_mask(paths: list[str], merge: str, shape: tuple[int, ...], channel: int | None = None) -> np.ndarray | None:
    """One label map from a release's mask files (``values``, ``index`` or ``union``; see catalog_release)."""
    if not paths:
        return None
    out = np.zeros(shape, dtype=np.uint8)
    for k, path in enumerate(paths):
        mask = load_image(path, as_mask=True) if channel is None else _mask_channel(path, channel)
        if mask.shape != tuple(shape):
            raise ReaderError(path, f"mask shape {mask.shape} != image shape {tuple(shape)}")
        if merge == "values" and len(paths) == 1:
            return mask
        out[mask > 0] = k + 1 if merge == "index" else 1
    return out


def _mask_channel(path: str, channel: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        array = np.asarray(img)
    return np.ascontiguousarray(array[..., channel] if array.ndim == 3 else array).astype(np.uint8)


def process_image2d(task: Task, cfg: dict[str, Any]) -> list:
    """Worker: one 2-D image (+ merged masks) → one sample."""
    p = task.params
    array = load_image(task.paths[0])
    check_not_constant(array, task.display)
    mask = merged_mask(p["masks"], p["mask_merge"], array.shape[:2], p.get("mask_channel"))
    record = ImageRecord(array, "image2d", {"modality": cfg.get("modality") or "OT", "spacing": None}, {}, mask=mask)
    return record_samples(record, cfg, _base(task, cfg), f"i{p['source_index']:06d}", task.splits[p["patient"]])


def process_volume(task: Task, cfg: dict[str, Any]) -> list:
    """Worker: one volume (NIfTI/Analyze through nibabel, MetaImage through SimpleITK) + label map → slices."""
    p = task.params
    label = p["masks"][0] if p["masks"] else None
    reader = read_metaimage if suffix_of(task.paths[0]) in (".mhd", ".mha") else read_nifti
    modality = cfg.get("modality") or "OT"

    def read():
        record = _read_any_volume(reader, task.paths[0], label, modality)
        if record.mask is not None and p.get("mask_values"):
            record.mask = remap_labels(record.mask, p["mask_values"], label)
        return record

    record, normalized = prepared_volume(task, cfg, modality, read)
    if not first_axis_only(task, record, cfg):
        return []
    prefix = f"i{p['source_index']:06d}"
    return record_samples(record, cfg, _base(task, cfg), prefix, task.splits, p.get("axes"), normalized)


def _read_any_volume(reader, path: str, label: str | None, modality: str):
    """A 3-D volume, or a 2-D NIfTI (CAMUS frames) as an ``image2d`` record (rows = the second voxel axis)."""
    import nibabel as nib

    if reader.__name__ == "read_nifti":
        shape = nib.load(path).shape
        if len(shape) == 2 or (len(shape) == 3 and shape[2] == 1):
            array = np.asanyarray(nib.load(path).dataobj).reshape(shape[:2]).T
            check_not_constant(array, path)
            mask = None
            if label is not None:
                mask = np.rint(np.asanyarray(nib.load(label).dataobj)).reshape(shape[:2]).T.astype(np.uint8)
            return ImageRecord(np.ascontiguousarray(array), "image2d", {"modality": modality, "spacing": None}, {},
                               mask=None if mask is None else np.ascontiguousarray(mask))  # fmt: skip
    return reader(path, label, modality=modality)


def remap_labels(mask: np.ndarray, codes: list[int], source: str | None = None) -> np.ndarray:
    """Maps a release's label codes to 0..k-1 (code ``codes[k]`` → k); an unknown code is an error."""
    lut = {int(c): k for k, c in enumerate(codes)}
    values = np.unique(mask)
    unknown = [int(v) for v in values if int(v) not in lut]
    if unknown:
        raise ReaderError(source, f"label codes {unknown[:5]} are not among the release's codes {codes}")
    out = np.zeros(mask.shape, dtype=np.uint8)
    for v in values:
        out[mask == v] = lut[int(v)]
    return out


def process_hdf5(task: Task, cfg: dict[str, Any]) -> list:
    """Worker: one block of HDF5 patches (+ labels) → one sample per patch."""
    p = task.params
    records = read_hdf5_patches(task.paths[0], p["start"], p["stop"], "x", cfg.get("modality") or "PATH")
    labels = read_hdf5_labels(task.paths[1], p["start"], p["stop"], "y") if p["has_labels"] else None
    names = p["label_names"] or []
    out = []
    for i, record in enumerate(records):
        name = p["names_map"].get(str(int(labels[i])), str(int(labels[i]))) if labels is not None else None
        patient = p["patients"][i]
        base = {
            "dataset": cfg["name"], "organ": cfg.get("organ", ""), "center": cfg.get("center") or cfg["name"],
            "patient": patient, "volume": p["volume"], "group": patient, "source_index": task.index,
            "label": names.index(name) if name in names else None, "label_name": name,
            "official_split": p["official_split"], "slice_index": p["start"] + i,
        }  # fmt: skip
        out += record_samples(record, cfg, base, f"i{task.index:06d}_p{p['start'] + i:07d}", task.splits[patient])
    return out
