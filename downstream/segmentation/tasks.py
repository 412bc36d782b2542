"""Segmentation tasks on the bundled shard sets, and in-memory slice datasets for 64-pixel training.

Each task names a shard set under ``data_root`` (made by ``data_prep``; see docs/data_prep.md) and how its
``mask.npy`` becomes the target:

* ``seg_tissue``: MNI152 2009a slices, mask 0 background / 1 CSF-like / 2 GM / 3 WM (from nilearn's
  probability maps).
* ``seg_brainmask``: Colin27 slices (``mricron-data``), target = brain (every mask label > 0, the
  skull-stripped ``ch2bet`` support) vs background.
* ``seg_lobes``: Colin27 slices with AAL regions grouped into lobes (``mricron-data``).
* ``mask_guided_tissue``: MNI152 slices classified by slicing plane (``meta.axis`` in RAS order: sagittal,
  coronal, axial), with the tissue mask as the ROI of ``mask-guided``. The bundled templates carry no
  diagnostic label; the plane is a real, image-level property, and the task exercises the mask-guided pipeline.

A task whose optional source is not installed raises :class:`TaskUnavailable` with the command that provides it.
Slices are grouped into volumes by ``meta.volume`` (+ axis) for 3-D metrics, and into subjects by
``meta.group`` (the split unit: the patient, or a slab for single-subject templates) for the bootstrap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from downstream import splits as splits_mod
from downstream.inputs import input_spec
from downstream.shard_tasks import is_shard_task, shard_dir
from lvmmed.data import samples as bundled
from lvmmed.data.readers import read_dicom_seg
from lvmmed.data.remote import is_remote
from lvmmed.data.shards import ShardFormatError, load_arrays, load_manifest


class TaskUnavailable(RuntimeError):
    """The shard set of a task is missing (not converted yet, or its optional source is not installed)."""


@dataclass(frozen=True)
class SegTask:
    """A segmentation task on one shard set.

    Attributes:
        name: Task key.
        shard_set: Shard-set directory name under ``data_root``.
        target: ``labels`` (mask values as classes) or ``foreground`` (every label > 0 is one class).
        class_names: Class names (index = value); empty = the manifest's ``mask_labels``.
        requires: Optional data source that provides the raw files ("" = always installed).
        label_field: ``meta`` field holding the image-level class (mask-guided tasks only).
        label_names: Names of those classes (empty = the manifest's ``label_names``).
    """

    name: str
    shard_set: str
    target: str = "labels"
    class_names: tuple[str, ...] = ()
    requires: str = ""
    label_field: str = ""
    label_names: tuple[str, ...] = ()
    description: str = ""


TASKS: dict[str, SegTask] = {
    t.name: t
    for t in (
        SegTask("seg_tissue", "mni152", description="MNI152 brain tissue (CSF-like/GM/WM), nilearn probability maps"),
        SegTask("seg_brainmask", "colin27", target="foreground", class_names=("background", "brain"),
                requires="mricron-data", description="Colin27 brain mask from the skull-stripped ch2bet"),
        SegTask("seg_lobes", "colin27_aal", requires="mricron-data",
                description="Colin27 AAL regions grouped into lobes"),
        SegTask("mask_guided_tissue", "mni152", label_field="axis", label_names=("sagittal", "coronal", "axial"),
                description="MNI152 slicing-plane classification with the tissue mask as ROI"),
    )
}  # fmt: skip


def get_task(name: str) -> SegTask:
    """A bundled task, or ``shards:<dir>`` (any shard set with ``mask.npy``; class names from ``mask_labels``)."""
    if is_shard_task(name):
        return SegTask(name, str(shard_dir(name)), description="shard set")
    if name not in TASKS:
        raise KeyError(f"Unknown segmentation task {name!r}. Known: {', '.join(sorted(TASKS))}")
    return TASKS[name]


@dataclass
class SliceData:
    """Slices of one split in memory, resized to a square grid.

    Attributes:
        images: (N, C, S, S) float32 in [0, 1] (not normalised).
        masks: (N, S, S) int64 targets.
        labels: (N,) int64 image-level classes, or None.
        centers / volumes / subjects: Per-slice grouping strings.
        class_names: Names of the mask classes (index = value).
        label_names: Names of the image-level classes, or None.
    """

    images: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor | None
    centers: list[str]
    volumes: list[str]
    subjects: list[str]
    class_names: list[str]
    label_names: list[str] | None = None
    slice_index: list[int] = field(default_factory=list)
    official: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, idx: list[int] | np.ndarray | torch.Tensor) -> SliceData:
        """The slices at ``idx`` (same class names)."""
        idx_list = [int(i) for i in idx]
        t = torch.as_tensor(idx_list, dtype=torch.long)
        pick = lambda seq: [seq[i] for i in idx_list]  # noqa: E731
        return SliceData(
            self.images[t], self.masks[t], None if self.labels is None else self.labels[t], pick(self.centers),
            pick(self.volumes), pick(self.subjects), self.class_names, self.label_names,
            pick(self.slice_index) if self.slice_index else [], pick(self.official) if self.official else [],
        )  # fmt: skip

    def where_center(self, center: str) -> SliceData:
        return self.subset([i for i, c in enumerate(self.centers) if c == center])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def concat(parts: list[SliceData]) -> SliceData:
    """Concatenates slice sets with the same classes."""
    if not parts:
        raise ValueError("nothing to concatenate")
    labels = None if any(p.labels is None for p in parts) else torch.cat([p.labels for p in parts])
    join = lambda attr: [v for p in parts for v in getattr(p, attr)]  # noqa: E731
    return SliceData(
        torch.cat([p.images for p in parts]), torch.cat([p.masks for p in parts]), labels, join("centers"),
        join("volumes"), join("subjects"), parts[0].class_names, parts[0].label_names, join("slice_index"),
        join("official"),
    )  # fmt: skip


def shard_root(task: SegTask, data_root: str | Path) -> Path:
    """``<data_root>/<shard_set>``, or :class:`TaskUnavailable` saying how to provide it."""
    if is_remote(str(data_root)):  # https://, s3://, gs://: the manifest is read (and checked) by load_manifest
        return f"{str(data_root).rstrip('/')}/{task.shard_set}"  # type: ignore[return-value]
    root = Path(data_root) / task.shard_set
    if (root / "manifest.json").is_file():
        return root
    hint = ""
    if task.requires and not bundled.source_available(task.requires):
        hint = f" Its source '{task.requires}' is not installed: {bundled.SOURCES[task.requires].install}."
    raise TaskUnavailable(
        f"Task {task.name!r} needs the shard set {root} (no manifest.json).{hint} Convert the bundled data with "
        "data_prep first (see docs/data_prep.md), or point data_root=<dir> at the shard sets."
    )


def _resize(images: np.ndarray, masks: np.ndarray, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(images.astype(np.float32))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    m = torch.from_numpy(masks.astype(np.int64))
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        m = F.interpolate(m[:, None].float(), size=(size, size), mode="nearest")[:, 0].long()
    return x.clamp_(0, 1), m


def load_split(
    task: SegTask | str, data_root: str | Path, split: str | None, img_size: int = 64, in_chans: int = 1
) -> SliceData:
    """Loads one split (``None``: every sample) of a task's shard set into memory (resized, channel-matched).

    Slices are grouped into volumes by ``meta.volume`` (+ axis); a 2-D image without one is its own volume.

    Raises:
        TaskUnavailable: The shard set is missing.
        ShardFormatError: A sample has no ``mask.npy`` or an inconsistent meta.
    """
    task = get_task(task) if isinstance(task, str) else task
    root = shard_root(task, data_root)
    manifest = load_manifest(root)
    samples = load_arrays(root, split)
    if not samples:
        raise TaskUnavailable(f"Shard set {root} has no samples in split {split!r}")
    missing = [s["key"] for s in samples if s["mask"] is None]
    if missing:
        raise ShardFormatError(f"{root}: {len(missing)} samples without mask.npy (e.g. {missing[0]!r})")
    images = np.stack([s["image"] for s in samples])
    masks = np.stack([s["mask"] for s in samples])
    if task.target == "foreground":
        masks = (masks > 0).astype(np.uint8)
    names = list(task.class_names or manifest.mask_labels or samples[0]["meta"].get("mask_labels") or [])
    if not names:
        names = [f"class_{i}" for i in range(int(masks.max()) + 1)]
    if int(masks.max()) >= len(names):
        raise ShardFormatError(f"{root}: mask value {int(masks.max())} but only {len(names)} class names {names}")
    if len(names) < 2:
        raise ShardFormatError(
            f"{root}: the masks hold no foreground class (every mask value is 0), so there is nothing to segment",
            "convert the set with its label masks (docs/data_prep.md, masks), or name its classes in mask_labels",
        )
    x, m = _resize(images, masks, img_size)
    if x.shape[1] != in_chans:
        x = x.mean(1, keepdim=True) if in_chans == 1 else x.expand(-1, 3, -1, -1).contiguous()
    metas = [s["meta"] for s in samples]
    labels, label_names = None, None
    if task.label_field:
        values = [meta.get(task.label_field) for meta in metas]
        if any(v is None for v in values):
            raise ShardFormatError(f"{root}: task {task.name!r} needs meta.{task.label_field} on every sample")
        labels = torch.as_tensor([int(v) for v in values], dtype=torch.long)
        label_names = list(task.label_names or manifest.label_names or [])
        if not label_names or max(int(v) for v in values) >= len(label_names):
            raise ShardFormatError(f"{root}: task {task.name!r} has labels {sorted(set(values))}, names {label_names}")
    volumes = [f"{meta['volume']}/axis{meta.get('axis')}" if meta.get("volume") else str(s["key"])
               for s, meta in zip(samples, metas)]  # fmt: skip
    return SliceData(
        images=x, masks=m, labels=labels,
        centers=[str(meta.get("center") or meta.get("dataset") or task.shard_set) for meta in metas],
        volumes=volumes, subjects=[str(meta.get("group") or meta.get("patient") or "all") for meta in metas],
        class_names=names, label_names=label_names,
        slice_index=[int(meta.get("slice_index") or 0) for meta in metas],
        official=[str(meta.get("official_split") or "") for meta in metas],
    )  # fmt: skip


def subsample_subjects(data: SliceData, fraction: float, seed: int) -> SliceData:
    """Keeps a seeded random ``fraction`` of subjects (groups), at least one (data-fraction protocol)."""
    if fraction >= 1.0:
        return data
    subjects = sorted(set(data.subjects))
    rng = np.random.default_rng(seed)
    keep = set(rng.permutation(subjects)[: max(1, math.ceil(fraction * len(subjects)))].tolist())
    return data.subset([i for i, s in enumerate(data.subjects) if s in keep])


def normalise(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """[0, 1] intensities to the backbone's input scale."""
    return (x - mean) / std


def normalise_for(x: torch.Tensor, cfg) -> torch.Tensor:
    """[0, 1] images to the run's input spec (:func:`downstream.inputs.input_spec`: the weights' per-channel
    statistics, or ``norm_mean``/``norm_std``)."""
    spec = input_spec(cfg)
    mean = torch.tensor(spec.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    if mean.shape[1] not in (1, x.shape[1]):
        mean, std = mean.mean(1, keepdim=True), std.mean(1, keepdim=True)
    return (x - mean) / std


def split_slices(data: SliceData, mode: str, seed: int, val_frac: float, test_frac: float) -> dict[str, SliceData]:
    """Train/val/test of all slices of a set by ``official`` split or a fresh subject-grouped split (``group``)."""
    groups = np.asarray(data.subjects)
    strata = np.zeros(len(data), dtype=np.int64)
    if mode == "official":
        idx = splits_mod.official_splits(np.asarray(data.official), strata, groups, seed, val_frac)
    elif mode == "group":
        idx = splits_mod.group_splits(strata, groups, seed, val_frac, test_frac)
    else:
        raise ValueError(f"split_slices takes official or group, got {mode!r}")
    splits_mod.check_no_leak(idx, groups)
    return {k: data.subset(v) for k, v in idx.items()}


def dicom_seg_check(sample: str = "seg_liver_1frame") -> dict:
    """Reader check on a bundled DICOM-SEG liver mask: parse with ``lvmmed.data.readers.read_dicom_seg``.

    Cross-checks the label map against pydicom's raw frames (an independent decode path) and summarises it.

    Returns:
        ``{"kind", "shape", "mask_labels", "foreground_fraction", "components", "matches_raw_frames"}``.
    """
    import pydicom
    from scipy import ndimage

    path = bundled.path(sample)
    record = read_dicom_seg(path)
    labels = np.asarray(record.array)
    raw = np.asarray(pydicom.dcmread(path).pixel_array)
    raw = raw if raw.ndim == 3 else raw[None]
    # Frames are planes of the label map (in the reader's slice order); compare foreground counts per plane.
    planes = labels[None] if labels.ndim == 2 else np.moveaxis(labels, -1, 0)
    matches = sorted(int(p.astype(bool).sum()) for p in planes) == sorted(int((f > 0).sum()) for f in raw)
    _, components = ndimage.label(labels > 0)
    return {
        "kind": record.kind,
        "shape": list(labels.shape),
        "mask_labels": record.meta.get("mask_labels"),
        "foreground_fraction": float((labels > 0).mean()),
        "components": int(components),
        "matches_raw_frames": bool(matches),
    }
