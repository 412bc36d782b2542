"""Downstream classification tasks built from lvmmed shard sets (``<data_root>/<set>/manifest.json``).

A task turns one shard set into arrays: images (N, C, H, W) float32 in [0, 1], integer labels, the split unit
(``group``), the ``center`` and the shard split of every sample, plus an optional OOD evaluation set from another
source. Tasks (bundled data, see :mod:`lvmmed.data.samples` and :mod:`data_prep.bundled`):

* ``tissue``: patches of MNI152 2009a slices labelled background / csf_like / gm / wm from the slice's tissue mask
  (majority label of the central window). OOD set: the same patches from Colin27 (``colin27``, when built).
* ``tissue_ood``: the same training data, but the primary test set is Colin27 (train on one template, test on the
  other).
* ``region``: patches of Colin27 slices labelled by AAL lobe (``colin27_aal``; needs Debian mricron-data).
* ``brain_sector``: MNI152 patches at the pretraining resolution labelled by the coarse brain sector at their
  centre, split by interleaved thin slabs (``slab_width`` / ``slab_gap``); the headline task of the demo
  (:mod:`downstream.sector_task`).
* ``modality``: whole images of the bundled DICOM files labelled by Modality (``dicom_modality``). A pipeline check:
  CR has 2 distinct images and NM 1, so scores say little about generalisation.
* ``color2d``: fundus vs histology tiles (``color2d``): clearly separable real classes (pipeline sanity check).

Patch tasks: ``patch_size`` source pixels with stride ``patch_stride``; the label is the most frequent mask value in
the central window of side max(2, patch_size // 8); at most ``max_per_class`` patches per class and split are kept
(deterministic choice, independent of the run seed, so every seed and method sees the same task). Patches inherit
their slice's group and split, so the shard set's group-wise split carries over.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from downstream.sector_task import SECTOR_NAMES, SLAB_PATTERN, sector_plane, sector_volume, slab_split
from lvmmed.data.remote import is_remote
from lvmmed.data.shards import load_arrays, load_manifest


class TaskDataError(FileNotFoundError):
    """The shard set a task needs is missing or unusable; the message says how to build it."""


@dataclass
class TaskData:
    """Arrays of one task (read-only by convention: the loader caches them)."""

    name: str
    source: str
    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    centers: np.ndarray
    splits: np.ndarray
    class_names: list[str]
    ood: TaskData | None = None
    notes: str = ""
    kind: str = "classification"
    official: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def multilabel(self) -> bool:
        """True when ``labels`` is an (N, C) multi-hot matrix."""
        return self.kind == "multilabel"

    @property
    def strata(self) -> np.ndarray:
        """One integer per sample for stratified splits and k-shot: the class, or for multi-label the first
        positive label (C when none is positive)."""
        if not self.multilabel:
            return self.labels
        positive = self.labels > 0.5
        return np.where(positive.any(1), positive.argmax(1), self.labels.shape[1]).astype(np.int64)

    def subset(self, index: np.ndarray, name: str | None = None) -> TaskData:
        return TaskData(
            name or self.name, self.source, self.images[index], self.labels[index], self.groups[index],
            self.centers[index], self.splits[index], self.class_names, None, self.notes, self.kind,
            None if self.official is None else self.official[index],
        )  # fmt: skip


@dataclass(frozen=True)
class PatchParams:
    patch_size: int = 16
    patch_stride: int = 4
    max_per_class: int = 200
    slab_width: int = 8
    slab_gap: int = 4


@dataclass
class TaskSpec:
    """How to build a task: its shard set, the builder and an optional OOD set (built the same way)."""

    name: str
    shard_set: str
    builder: Callable[[Path, str, PatchParams], TaskData]
    ood_set: str = ""
    ood_is_test: bool = False
    description: str = ""
    requires: str = ""
    extra: dict = field(default_factory=dict)


def _set_dir(data_root: str | Path, shard_set: str) -> Path:
    if is_remote(str(data_root)):  # https://, s3://, gs://: the manifest is read (and checked) by load_manifest
        return f"{str(data_root).rstrip('/')}/{shard_set}"  # type: ignore[return-value]
    root = Path(data_root) / shard_set
    if not (root / "manifest.json").is_file():
        raise TaskDataError(
            f"Shard set '{shard_set}' not found under {data_root} (no {root}/manifest.json). Build it with "
            f"`python -m data_prep bundled --out {data_root}` (colin27* sets need Debian mricron-data: `make data`)."
        )
    return root


def _cap(labels: np.ndarray, splits: np.ndarray, max_per_class: int, salt: str) -> np.ndarray:
    """Indices keeping at most ``max_per_class`` per (split, class), chosen with a task-fixed RNG."""
    rng = np.random.default_rng(zlib.crc32(salt.encode()))
    keep = []
    for split in np.unique(splits):
        for c in np.unique(labels):
            idx = np.flatnonzero((splits == split) & (labels == c))
            if max_per_class and len(idx) > max_per_class:
                idx = np.sort(rng.choice(idx, max_per_class, replace=False))
            keep.append(idx)
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def _to_chw(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image, dtype=np.float32)
    return img[None] if img.ndim == 2 else np.moveaxis(img[..., :3], -1, 0)


def centre_label(mask_patch: np.ndarray, window: int) -> int:
    """Most frequent value in the central ``window``×``window`` of a mask patch (ties → smaller value)."""
    h, w = mask_patch.shape
    r0, c0 = (h - window) // 2, (w - window) // 2
    centre = mask_patch[r0 : r0 + window, c0 : c0 + window]
    return int(np.bincount(centre.ravel()).argmax())


def build_patch_task(root: Path | str, name: str, pp: PatchParams) -> TaskData:
    """Patches of the slices of a shard set with masks, labelled by the mask's central majority."""
    manifest = load_manifest(root)
    set_name = manifest.root.name  # the last part of a directory or URL
    class_names = list(manifest.mask_labels or [])
    samples = load_arrays(root)
    if not samples or samples[0]["mask"] is None:
        raise TaskDataError(f"{root} has no masks: a patch task needs a shard set with mask.npy")
    p, s, window = pp.patch_size, pp.patch_stride, max(2, pp.patch_size // 8)
    images, labels, groups, centers, splits = [], [], [], [], []
    for sample in samples:
        img, mask, meta = _to_chw(sample["image"]), np.asarray(sample["mask"]), sample["meta"]
        h, w = mask.shape
        if p > min(h, w):
            raise ValueError(f"patch_size {p} exceeds the {h}x{w} slices of {set_name}")
        for r in range(0, h - p + 1, s):
            for c in range(0, w - p + 1, s):
                images.append(img[:, r : r + p, c : c + p])
                labels.append(centre_label(mask[r : r + p, c : c + p], window))
                groups.append(meta.get("group") or meta.get("patient") or sample["key"])
                centers.append(meta.get("center") or meta.get("dataset") or set_name)
                splits.append(meta.get("split", "train"))
    labels_a, splits_a = np.asarray(labels, dtype=np.int64), np.asarray(splits)
    keep = _cap(labels_a, splits_a, pp.max_per_class, f"{name}:{set_name}")
    if not class_names:
        class_names = [str(i) for i in range(int(labels_a.max()) + 1)]
    return TaskData(
        name, set_name, np.stack(images)[keep], labels_a[keep], np.asarray(groups)[keep], np.asarray(centers)[keep],
        splits_a[keep], class_names,
    )  # fmt: skip


def build_sector_task(root: Path | str, name: str, pp: PatchParams) -> TaskData:
    """Patches of the mni152 set labelled by brain sector, split by interleaved slabs (:mod:`downstream.sector_task`).

    Raises:
        TaskDataError: The set has no masks or volume slices, or does not match the installed MNI152 template.
    """
    set_name = load_manifest(root).root.name
    samples = load_arrays(root)
    if not samples or samples[0]["mask"] is None:
        raise TaskDataError(f"{root} has no masks: {name} needs the mni152 shard set with its tissue masks")
    if pp.slab_width < 1 or pp.slab_gap < 0:
        raise ValueError(f"slab_width must be >= 1 and slab_gap >= 0, got {pp.slab_width}, {pp.slab_gap}")
    shape = sector_volume()[1]
    p, stride, window = pp.patch_size, pp.patch_stride, max(2, pp.patch_size // 8)
    images, labels, groups, splits = [], [], [], []
    for sample in samples:
        meta, mask = sample["meta"], np.asarray(sample["mask"])
        axis, index = meta.get("axis"), meta.get("slice_index")
        if axis is None or index is None:
            raise TaskDataError(f"{set_name}: {name} needs volume slices (meta.axis / meta.slice_index)")
        rest = [shape[a] for a in (0, 1, 2) if a != axis]
        if list(meta.get("orig_shape") or []) != [rest[1], rest[0]]:
            raise TaskDataError(
                f"{set_name} slice {sample['key']} has source shape {meta.get('orig_shape')}, but the installed "
                f"MNI152 template slices are {[rest[1], rest[0]]}: rebuild the shards (python -m data_prep bundled)"
            )
        where = slab_split(int(axis), int(index), pp.slab_width, pp.slab_gap)
        if where is None:  # a gap slice between two slabs
            continue
        h, w = mask.shape
        if p > min(h, w):
            raise ValueError(f"patch_size {p} exceeds the {h}x{w} slices of {set_name}")
        sectors, img = sector_plane(int(axis), int(index), (h, w)), _to_chw(sample["image"])
        for r in range(0, h - p + 1, stride):
            for c in range(0, w - p + 1, stride):
                if centre_label(mask[r : r + p, c : c + p], window) == 0:  # patch centre outside the brain
                    continue
                images.append(img[:, r : r + p, c : c + p])
                labels.append(centre_label(sectors[r : r + p, c : c + p], window))
                groups.append(f"{set_name}-a{axis}-slab{where[1]:03d}")
                splits.append(where[0])
    if not labels:
        raise TaskDataError(f"{set_name}: no brain-centred patches of {p} px for {name}")
    labels_a, splits_a = np.asarray(labels, dtype=np.int64), np.asarray(splits)
    keep = _cap(labels_a, splits_a, pp.max_per_class, f"{name}:{set_name}")
    notes = f"slabs of {pp.slab_width} slices, gap {pp.slab_gap}, dealt {'/'.join(SLAB_PATTERN)}"
    return TaskData(
        name, set_name, np.stack(images)[keep], labels_a[keep], np.asarray(groups)[keep],
        np.full(len(keep), set_name), splits_a[keep], list(SECTOR_NAMES), notes=notes,
    )  # fmt: skip


def build_image_task(root: Path | str, name: str, pp: PatchParams) -> TaskData:
    """Whole images labelled by ``meta.label`` (names from the manifest's ``label_names``)."""
    manifest = load_manifest(root)
    set_name = manifest.root.name  # the last part of a directory or URL
    samples = load_arrays(root)
    if not samples:
        raise TaskDataError(f"{root} holds no samples")
    shapes = {tuple(s["image"].shape) for s in samples}
    if len(shapes) != 1:
        raise ValueError(f"{set_name}: images of different shapes {sorted(shapes)}; convert with a fixed image_size")
    if any(s["meta"].get("label") is None for s in samples):
        raise TaskDataError(f"{set_name}: samples without meta.label cannot form a classification task")
    labels = np.asarray([int(s["meta"]["label"]) for s in samples], dtype=np.int64)
    names = list(manifest.label_names or [str(i) for i in range(int(labels.max()) + 1)])
    splits = np.asarray([s["meta"].get("split", "train") for s in samples])
    keep = _cap(labels, splits, pp.max_per_class, f"{name}:{set_name}")
    return TaskData(
        name, set_name, np.stack([_to_chw(s["image"]) for s in samples])[keep], labels[keep],
        np.asarray([s["meta"].get("group") or s["meta"].get("patient") or s["key"] for s in samples])[keep],
        np.asarray([s["meta"].get("center") or s["meta"].get("dataset") or set_name for s in samples])[keep],
        splits[keep], names,
    )  # fmt: skip


TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Adds a task to :data:`TASKS` (used by the bundled tasks below; projects may add their own)."""
    TASKS[spec.name] = spec
    return spec


register_task(TaskSpec("tissue", "mni152", build_patch_task, ood_set="colin27",
                       description="MNI152 tissue patches (bg/csf_like/gm/wm); OOD: Colin27"))  # fmt: skip
register_task(TaskSpec("tissue_ood", "mni152", build_patch_task, ood_set="colin27", ood_is_test=True,
                       description="train MNI152, test Colin27 tissue patches", requires="mricron-data"))  # fmt: skip
register_task(TaskSpec("region", "colin27_aal", build_patch_task,
                       description="Colin27 patches labelled by AAL lobe", requires="mricron-data"))  # fmt: skip
register_task(TaskSpec("brain_sector", "mni152", build_sector_task,
                       description="MNI152 patches labelled by brain sector, interleaved-slab split"))  # fmt: skip
register_task(TaskSpec("modality", "dicom_modality", build_image_task,
                       description="imaging modality of bundled DICOM images (pipeline check)"))  # fmt: skip
register_task(TaskSpec("color2d", "color2d", build_image_task, description="fundus vs histology tiles"))


def list_tasks() -> list[str]:
    return sorted(TASKS)


@lru_cache(maxsize=16)
def _load_cached(name: str, data_root: str, pp: PatchParams) -> TaskData:
    if name not in TASKS:
        raise KeyError(f"Unknown task {name!r}. Known: {', '.join(list_tasks())}")
    spec = TASKS[name]
    data = spec.builder(_set_dir(data_root, spec.shard_set), name, pp)
    if spec.ood_set:
        try:
            ood = spec.builder(_set_dir(data_root, spec.ood_set), f"{name}:ood", pp)
        except TaskDataError:
            if spec.ood_is_test:
                raise
            ood = None
        if ood is not None and ood.class_names != data.class_names:
            raise ValueError(f"OOD set {spec.ood_set} has classes {ood.class_names} != {data.class_names}")
        data.ood = ood
    return data


def load_task(name: str, data_root: str | Path, patch_size: int = 16, patch_stride: int = 4,
              max_per_class: int = 200, slab_width: int = 8, slab_gap: int = 4) -> TaskData:  # fmt: skip
    """Builds (and caches per process) task ``name`` from the shard sets under ``data_root``.

    ``slab_width`` / ``slab_gap`` (source slices) apply to the slab-split task ``brain_sector`` only.

    Raises:
        TaskDataError: A required shard set is missing (the message says how to build it).
        KeyError: Unknown task.
    """
    pp = PatchParams(int(patch_size), int(patch_stride), int(max_per_class), int(slab_width), int(slab_gap))
    return _load_cached(name, str(data_root) if is_remote(str(data_root)) else str(Path(data_root).resolve()), pp)
