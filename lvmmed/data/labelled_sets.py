"""Labelled evaluation arrays from an lvmmed shard set: whole images with ``meta.label``, or mask-labelled patches.

Small and read once into memory: the pretraining monitor (``pretrain/monitor.py``) fits a k-NN memory on one
split and scores another; any stage can use the same arrays (the stages meet only through ``lvmmed``).

Label sources (``labels``):

* ``image``: every sample's ``meta.label`` (an integer class; names from the manifest's ``label_names``).
* ``mask``: square patches of ``patch_size`` source pixels, stride ``patch_stride``, from every sample with a mask;
  a patch's label is the most frequent mask value in its central window of side ``max(2, patch_size // 8)``
  (ties go to the smaller value), the convention of the downstream patch tasks (``downstream/tasks.py``).
  Class names come from the manifest's ``mask_labels``.
* ``auto``: ``image`` when every sample read has ``meta.label``, else ``mask`` when every sample has a mask.

Subsampling (``max_samples`` > 0): at most that many samples per split, class-balanced: classes take turns, each
in an order fixed by a permutation seeded with the set's name and the split only (not the run seed), so every run
of every seed sees the same evaluation samples. Patches are labelled for all positions first and cut out only for
the kept ones, so a large set costs the memory of its slices, not of every patch.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lvmmed.data.remote import is_pattern, is_remote
from lvmmed.data.shards import MANIFEST_NAME, ShardFormatError, iter_samples, load_manifest
from lvmmed.errors import InputError

LABEL_SOURCES = ("auto", "image", "mask")


class LabelledSetError(InputError):
    """A shard set cannot serve as a labelled evaluation set: missing, no labels, too few classes or samples."""

    default_fix = (
        "give a shard set whose samples carry meta.label (convert with --labels CSV or class folders) or mask.npy"
    )


@dataclass
class LabelledSplit:
    """One split: images as a list of float32 (C, H, W) arrays in [0, 1] (sizes may differ) and integer labels."""

    images: list[np.ndarray]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class LabelledSet:
    """The labelled splits of one shard set."""

    name: str
    kind: str  # "image" or "mask"
    class_names: list[str]
    splits: dict[str, LabelledSplit] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def check_location(root: str | Path) -> None:
    """Raises :class:`LabelledSetError` when a local ``root`` is not a shard-set directory (remote: checked on read)."""
    if is_remote(str(root)) or is_pattern(str(root)):
        return
    path = Path(root)
    if not path.exists():
        raise LabelledSetError(f"{path} does not exist", fix="give an existing shard-set directory")
    if not (path / MANIFEST_NAME).is_file():
        raise LabelledSetError(
            f"{path} is not a shard set (no {MANIFEST_NAME})",
            fix="give one shard-set directory made by `python -m data_prep convert` (not a parent of several)",
        )


def balanced_subset(labels: np.ndarray, max_samples: int, salt: str) -> np.ndarray:
    """Sorted indices of at most ``max_samples`` samples, classes taking turns (see the module docstring)."""
    labels = np.asarray(labels)
    if max_samples <= 0 or len(labels) <= max_samples:
        return np.arange(len(labels))
    rng = np.random.default_rng(zlib.crc32(salt.encode()))
    turn = np.empty(len(labels), dtype=np.int64)  # position of each sample within its class's shuffled order
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        turn[rng.permutation(members)] = np.arange(len(members))
    order = np.lexsort((labels, turn))  # first turn of every class, then the second, ...
    return np.sort(order[:max_samples])


def _chw(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image, dtype=np.float32)
    return img[None] if img.ndim == 2 else np.moveaxis(img[..., :3], -1, 0)


def patch_labels(mask: np.ndarray, patch_size: int, patch_stride: int) -> np.ndarray:
    """(rows, cols) labels of the patches of one mask: the majority value of each patch's central window."""
    mask = np.asarray(mask)
    if patch_size > min(mask.shape):
        raise LabelledSetError(f"patch_size {patch_size} exceeds a {mask.shape[0]}x{mask.shape[1]} mask",
                               fix="lower the patch size")  # fmt: skip
    window = max(2, patch_size // 8)
    first = (patch_size - window) // 2
    views = np.lib.stride_tricks.sliding_window_view(mask, (patch_size, patch_size))[::patch_stride, ::patch_stride]
    centre = views[..., first : first + window, first : first + window].astype(np.int64)
    counts = np.stack([(centre == v).sum((-1, -2)) for v in range(int(centre.max()) + 1)], axis=-1)
    return counts.argmax(-1)  # the first maximum: ties go to the smaller value


def _read_split(root: str | Path, split: str) -> list[dict]:
    return list(iter_samples(root, split))


def _kind(samples: list[dict], requested: str, name: str) -> str:
    with_label = sum(s["meta"].get("label") is not None for s in samples)
    with_mask = sum(s["mask"] is not None for s in samples)
    n = len(samples)
    if requested == "image" and with_label < n:
        raise LabelledSetError(
            f"{name}: labels=image needs meta.label on every sample; {n - with_label} of {n} lack it"
        )
    if requested == "mask" and with_mask < n:
        raise LabelledSetError(f"{name}: labels=mask needs mask.npy on every sample; {n - with_mask} of {n} lack it")
    if requested != "auto":
        return requested
    if with_label == n:
        return "image"
    if with_mask == n:
        return "mask"
    raise LabelledSetError(
        f"{name} has no labels: of {n} samples, {with_label} carry meta.label and {with_mask} a mask "
        "(every sample needs one or the other)"
    )


def _image_split(samples: list[dict], max_samples: int, salt: str) -> LabelledSplit:
    labels = np.asarray([int(s["meta"]["label"]) for s in samples], dtype=np.int64)
    keep = balanced_subset(labels, max_samples, salt)
    return LabelledSplit([_chw(samples[i]["image"]) for i in keep], labels[keep])


def _mask_split(samples: list[dict], patch_size: int, patch_stride: int, max_samples: int, salt: str) -> LabelledSplit:
    grids = [patch_labels(s["mask"], patch_size, patch_stride) for s in samples]
    where = np.asarray([(i, r, c) for i, g in enumerate(grids) for r in range(g.shape[0]) for c in range(g.shape[1])])
    labels = np.concatenate([g.ravel() for g in grids]).astype(np.int64) if grids else np.zeros(0, np.int64)
    keep = balanced_subset(labels, max_samples, salt)
    images = []
    for i, r, c in where[keep] if len(keep) else []:
        top, left = r * patch_stride, c * patch_stride
        images.append(_chw(samples[i]["image"])[:, top : top + patch_size, left : left + patch_size].copy())
    return LabelledSplit(images, labels[keep])


def load_labelled_set(
    root: str | Path,
    splits: tuple[str, ...] = ("train", "val"),
    labels: str = "auto",
    patch_size: int = 16,
    patch_stride: int = 8,
    max_samples: int = 0,
) -> LabelledSet:
    """Reads the given splits of a shard set as labelled arrays (see the module docstring).

    Args:
        root: Shard-set directory (with ``manifest.json``) or remote location (:mod:`lvmmed.data.remote`).
        splits: Splits to read, e.g. ``("train", "val")``; each must hold at least one sample.
        labels: ``auto`` | ``image`` | ``mask``.
        patch_size, patch_stride: Patch geometry in source pixels (``mask`` labels only).
        max_samples: Class-balanced cap per split; 0 = keep every sample.

    Raises:
        LabelledSetError: Not a shard set, a split without samples, samples without the labels asked for, or
            the first split with fewer than two classes.
        ShardFormatError: A shard cannot be read (a corrupt set, exit 1).
    """
    if labels not in LABEL_SOURCES:
        raise LabelledSetError(f"labels must be one of {LABEL_SOURCES}, got {labels!r}", fix="")
    if patch_size < 2 or patch_stride < 1:
        raise LabelledSetError(f"need patch_size >= 2 and patch_stride >= 1, got {patch_size}, {patch_stride}", fix="")
    check_location(root)
    try:
        manifest = load_manifest(root)
    except ShardFormatError as err:
        raise LabelledSetError(str(err), fix=err.fix) from None
    name = manifest.name
    counts = {split: manifest.count(split) for split in splits}
    if empty := [split for split, n in counts.items() if n == 0]:
        raise LabelledSetError(
            f"{name} has no samples in split(s) {empty} (its manifest counts {manifest.data.get('counts')})",
            fix="choose splits the set has, or re-convert it with a val split",
        )
    read = {split: _read_split(root, split) for split in splits}
    kind = _kind([s for samples in read.values() for s in samples], labels, name)
    out = LabelledSet(name, kind, [])
    for split, samples in read.items():
        salt = f"{name}:{split}"
        out.splits[split] = (
            _image_split(samples, max_samples, salt)
            if kind == "image"
            else _mask_split(samples, patch_size, patch_stride, max_samples, salt)
        )
    top = max(int(s.labels.max()) for s in out.splits.values()) + 1
    names = list((manifest.label_names if kind == "image" else manifest.mask_labels) or [])
    out.class_names = names if len(names) >= top else [str(i) for i in range(top)]
    fit = out.splits[splits[0]]
    if len(np.unique(fit.labels)) < 2:
        raise LabelledSetError(
            f"{name}: split {splits[0]} holds only class {fit.labels[0]} ({len(fit)} samples); a classifier needs two"
        )
    return out
