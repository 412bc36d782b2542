"""Any shard set as a downstream task: ``task=shards:<dir>`` (a data_prep output folder with ``manifest.json``).

The task kind is read from the samples, or chosen with ``task_kind``:

* ``classification``: every sample has ``meta.label`` (an integer; class names from the manifest's
  ``label_names``);
* ``multilabel``: samples carry ``meta.labels``, a multi-hot vector over ``label_names`` (per-label AUROC, macro
  AUROC, F1 at a threshold tuned on val);
* ``segmentation``: samples carry ``mask.npy`` (run by :mod:`downstream.segmentation`; Dice/IoU/HD95 per class,
  and per volume when ``meta.volume`` says the slices come from volumes).

``auto`` picks multi-label when any sample has ``meta.labels``, else classification when every sample has a
label, else segmentation when samples have masks. A set with none of them is refused with a message naming what
it lacks and how data_prep adds it.

Splits (``split_mode``): ``shard`` (the set's own patient-level split), ``official`` (``meta.official_split``, the
release's split; val carved from its train by patient when the release has none), ``group`` (a fresh
patient-grouped split per seed) or ``random``. OOD test set: ``ood_shards=<dir>`` (another shard set with the same
classes) or ``ood_center=<name>`` (the samples of one ``meta.center`` held out of train/val/test).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from downstream.tasks import TaskData, TaskDataError
from lvmmed.data.remote import is_remote
from lvmmed.data.shards import ShardFormatError, iter_samples, load_arrays, load_manifest

PREFIX = "shards:"
KINDS = ("auto", "classification", "multilabel", "segmentation")


def is_shard_task(task: str) -> bool:
    """True for ``shards:<dir>`` task names."""
    return str(task).startswith(PREFIX)


def shard_dir(task: str) -> Path:
    """The folder of a ``shards:<dir>`` task (``~`` expanded), checked to hold a manifest; a remote location
    (``https://``, ``s3://``, ``gs://``) is returned as given and checked when its manifest is read."""
    text = str(task)[len(PREFIX) :]
    if is_remote(text):
        return text  # type: ignore[return-value]
    root = Path(text).expanduser()
    if not (root / "manifest.json").is_file():
        raise TaskDataError(
            f"{root} is not a shard set (no manifest.json). Convert your data first, e.g. "
            f"`python -m data_prep convert --format images --src <folder> --out {root}`"
        )
    return root


def _name(root: Path | str) -> str:
    return Path(str(root).rstrip("/")).name


def task_label(task: str) -> str:
    """A short name for result paths and tables: the shard set's folder name."""
    return Path(str(task)[len(PREFIX) :].rstrip("/")).name if is_shard_task(task) else str(task)


@lru_cache(maxsize=8)
def _metas(root: str) -> tuple[tuple[dict, bool], ...]:
    """``(meta, has_mask)`` of every sample (images are decoded and dropped: only the metadata is kept)."""
    return tuple((s["meta"], s["mask"] is not None) for s in iter_samples(root))


def describe(root: Path) -> dict:
    """What a shard set offers: counts, labels, multi-labels, masks, centers, official splits."""
    rows = _metas(str(root))
    metas = [m for m, _ in rows]
    return {
        "samples": len(rows),
        "with_label": sum(m.get("label") is not None for m in metas),
        "with_labels": sum(m.get("labels") is not None for m in metas),
        "with_mask": sum(has_mask for _, has_mask in rows),
        "centers": sorted({str(m.get("center")) for m in metas if m.get("center")}),
        "official_splits": sorted({str(m["official_split"]) for m in metas if m.get("official_split")}),
    }


def detect_kind(root: Path, requested: str = "auto") -> str:
    """The task kind of a shard set (see the module docstring).

    Raises:
        TaskDataError: The set lacks what the kind needs (the message names the missing field).
    """
    if requested not in KINDS:
        raise ValueError(f"task_kind must be one of {KINDS}, got {requested!r}")
    info = describe(root)
    n = info["samples"]
    if n == 0:
        raise TaskDataError(f"{root} holds no samples")
    needs = {
        "classification": ("with_label", "meta.label (an image-level class: convert with --labels CSV or class "
                           "folders)"),
        "multilabel": ("with_labels", "meta.labels (a multi-hot vector: convert a multi-label CSV)"),
        "segmentation": ("with_mask", "mask.npy (a label map per image: convert with masks)"),
    }  # fmt: skip
    if requested != "auto":
        field, what = needs[requested]
        if info[field] < n:
            raise TaskDataError(f"{_name(root)}: task_kind={requested} needs {what}; {n - info[field]} of {n} samples "
                                f"lack it ({_offers(info)})")  # fmt: skip
        return requested
    if info["with_labels"]:
        return "multilabel"
    if info["with_label"] == n:
        return "classification"
    if info["with_mask"] == n:
        return "segmentation"
    raise TaskDataError(
        f"{_name(root)} has no task: samples need meta.label (classification), meta.labels (multi-label) or mask.npy "
        f"(segmentation) on every sample ({_offers(info)}). Re-convert with `--labels <csv>` or class folders, or "
        "with an images/ + masks/ folder pair"
    )


def _offers(info: dict) -> str:
    return (f"{info['samples']} samples: {info['with_label']} with meta.label, {info['with_labels']} with "
            f"meta.labels, {info['with_mask']} with mask.npy")  # fmt: skip


def _to_chw(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image, dtype=np.float16)
    return img[None] if img.ndim == 2 else np.moveaxis(img[..., :3], -1, 0)


def _common_size(images: list[np.ndarray]) -> np.ndarray:
    """Stacks (C, h, w) images; differing sizes are resized (bilinear) to the most common size."""
    shapes = [i.shape for i in images]
    if len(set(shapes)) == 1:
        return np.stack(images)
    import torch
    import torch.nn.functional as F

    h, w = max(set(s[-2:] for s in shapes), key=[s[-2:] for s in shapes].count)
    chans = max(s[0] for s in shapes)
    out = []
    for img in images:
        t = torch.from_numpy(img.astype(np.float32))[None]
        t = t.expand(-1, chans, -1, -1) if t.shape[1] != chans else t
        out.append(F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0].numpy().astype(np.float16))
    return np.stack(out)


def load_shard_task(task: str, kind: str = "auto", ood_shards: str = "", ood_center: str = "") -> TaskData:
    """A classification or multi-label :class:`~downstream.tasks.TaskData` from ``shards:<dir>``.

    Images stay at the set's size (float16 in [0, 1]); the method's input spec adapts them later.

    Raises:
        TaskDataError: Not a shard set, or it lacks labels (segmentation sets are run by downstream.segmentation).
    """
    root = shard_dir(task)
    kind = detect_kind(root, kind)
    if kind == "segmentation":
        raise TaskDataError(
            f"{_name(root)} has masks but no image-level labels: run a segmentation method on it "
            f"(method=seg-unet), or convert it with labels for classification"
        )
    data = _build(root, kind, task)
    if ood_shards:
        ood_root = shard_dir(PREFIX + ood_shards if not is_shard_task(ood_shards) else ood_shards)
        data.ood = _build(ood_root, detect_kind(ood_root, kind), f"{task}:ood")
        if data.ood.class_names != data.class_names:
            raise TaskDataError(f"OOD set {_name(ood_root)} has classes {data.ood.class_names} != {data.class_names}")
    if ood_center:
        held = data.centers == ood_center
        if not held.any():
            raise TaskDataError(
                f"ood_center={ood_center!r} is not a center of {_name(root)}: {sorted(set(data.centers.tolist()))}"
            )
        if held.all():
            raise TaskDataError(f"ood_center={ood_center!r} holds every sample of {_name(root)}; nothing left to train")
        ood = data.subset(np.flatnonzero(held), f"{task}:ood")
        ood.source = f"{_name(root)}:{ood_center}"
        kept = data.subset(np.flatnonzero(~held))
        kept.ood = data.ood if data.ood is not None else ood
        data = kept
    return data


def _build(root: Path, kind: str, name: str) -> TaskData:
    manifest = load_manifest(root)
    samples = load_arrays(root)
    metas = [s["meta"] for s in samples]
    names = list(manifest.label_names or [])
    if kind == "multilabel":
        rows = [m.get("labels") for m in metas]
        width = max(len(r) for r in rows if r is not None)
        if any(r is not None and len(r) != width for r in rows):
            raise ShardFormatError(f"{_name(root)}: meta.labels vectors of different lengths")
        labels = np.asarray([r if r is not None else [0] * width for r in rows], dtype=np.float32)
        names = names if len(names) == width else [f"label_{i}" for i in range(width)]
    else:
        labels = np.asarray([int(m["label"]) for m in metas], dtype=np.int64)
        if not names or int(labels.max()) >= len(names):
            names = [str(i) for i in range(int(labels.max()) + 1)]
    groups = np.asarray([str(m.get("group") or m.get("patient") or s["key"]) for s, m in zip(samples, metas)])
    data = TaskData(
        name, _name(root), _common_size([_to_chw(s["image"]) for s in samples]), labels, groups,
        np.asarray([str(m.get("center") or m.get("dataset") or _name(root)) for m in metas]),
        np.asarray([str(m.get("split") or "train") for m in metas]), names, kind=kind,
        official=np.asarray([str(m.get("official_split") or "") for m in metas]),
    )  # fmt: skip
    return data
