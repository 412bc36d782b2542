"""Deterministic train/val/test splits, k-shot and data-fraction subsets, saved as index files.

* ``shard``: the shard set's own split (assigned by data_prep from salted group hashes, so no group — patient, or
  slab of a single-subject template — crosses splits).
* ``group``: a fresh group-wise split from the run seed with sklearn ``StratifiedGroupKFold`` (test = one fold of
  round(1/test_frac) folds, then val = one fold of the rest), i.e. patient-grouped splits (Med-VTAB patient-ID
  protocol). Never leaks a group.
* ``random``: image-level stratified split, ignoring groups (only to measure what grouping changes).
* ``official``: the release's own split (``meta.official_split``, kept by data_prep); when the release has no
  val split, val is one group-wise fold of its train split (seeded), so no patient crosses splits either.

Subsets of the training split: k-shot per class (CoOp convention: k samples of every class drawn with the seed;
classes with fewer samples keep all of them) or a stratified fraction (at least one sample per class; the
MedFocusCLIP 5/10/20/50/100% protocol). Files are JSON: ``{"train": [...], "val": [...], "test": [...], "info": {}}``.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

SPLIT_NAMES = ("train", "val", "test")


class SplitLeakError(AssertionError):
    """A group (patient) occurs in more than one split."""


def shard_splits(shard_split: np.ndarray) -> dict[str, np.ndarray]:
    """Indices per split from the per-sample shard split labels."""
    return {s: np.flatnonzero(shard_split == s) for s in SPLIT_NAMES}


def _one_fold(labels: np.ndarray, groups: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held) positions: ``held`` ≈ ``frac`` of the samples, whole groups, roughly stratified."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(np.unique(groups))
    folds = min(max(round(1.0 / frac), 2), n_groups)
    if n_groups < 2:
        raise ValueError("a group-wise split needs at least 2 groups")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # rare classes (fewer members than folds) are expected in small tasks
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        rest, held = next(iter(splitter.split(np.zeros(len(labels)), labels, groups)))
    return rest, held


def group_splits(labels: np.ndarray, groups: np.ndarray, seed: int, val_frac: float, test_frac: float,
                 grouped: bool = True) -> dict[str, np.ndarray]:  # fmt: skip
    """A fresh split from ``seed``: group-wise (``grouped``) or image-level stratified."""
    idx = np.arange(len(labels))
    units = groups if grouped else idx.astype(str)
    rest, test = _one_fold(labels, units, test_frac, seed)
    rest_val_frac = val_frac / max(1.0 - test_frac, 1e-6)
    sub_rest, sub_val = _one_fold(labels[rest], units[rest], rest_val_frac, seed + 1)
    return {"train": np.sort(idx[rest][sub_rest]), "val": np.sort(idx[rest][sub_val]), "test": np.sort(test)}


def official_splits(official: np.ndarray, labels: np.ndarray, groups: np.ndarray, seed: int,
                    val_frac: float) -> dict[str, np.ndarray]:  # fmt: skip
    """Splits from the per-sample official split names; val carved from train by group when absent."""
    official = np.asarray(official).astype(str)
    if not (official != "").any():
        raise ValueError(
            "split_mode=official needs meta.official_split (convert the release with split_method=official)"
        )
    unknown = sorted(set(official) - {*SPLIT_NAMES, ""})
    if unknown:
        raise ValueError(f"official splits must be train/val/test, got {unknown}")
    splits = shard_splits(official)
    if len(splits["test"]) == 0:
        raise ValueError("the official split has no test samples")
    if len(splits["val"]) == 0 and len(np.unique(groups[splits["train"]])) >= 2:
        train = splits["train"]
        rest, held = _one_fold(labels[train], groups[train], val_frac / max(1.0 - val_frac, 1e-6), seed)
        splits["train"], splits["val"] = np.sort(train[rest]), np.sort(train[held])
    return splits


def subsample_train(train: np.ndarray, labels: np.ndarray, seed: int, shot: int = 0,
                    fraction: float = 1.0) -> np.ndarray:  # fmt: skip
    """k-shot per class (``shot`` > 0) or a stratified ``fraction`` of the training indices."""
    if shot <= 0 and fraction >= 1.0:
        return np.sort(train)
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels[train]):
        members = train[labels[train] == c]
        n = min(shot, len(members)) if shot > 0 else max(1, math.ceil(fraction * len(members)))
        keep.append(rng.choice(members, n, replace=False))
    return np.sort(np.concatenate(keep))


def check_no_leak(splits: dict[str, np.ndarray], groups: np.ndarray) -> None:
    """Raises :class:`SplitLeakError` when any group occurs in two splits."""
    seen: dict[str, str] = {}
    for name, index in splits.items():
        for g in np.unique(groups[index]):
            if g in seen and seen[g] != name:
                raise SplitLeakError(f"group {g!r} is in both {seen[g]!r} and {name!r}")
            seen[g] = name


def make_splits(labels: np.ndarray, groups: np.ndarray, shard_split: np.ndarray, mode: str, seed: int,
                val_frac: float = 0.15, test_frac: float = 0.25, shot: int = 0,
                fraction: float = 1.0, official: np.ndarray | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """Train/val/test indices of one run (the train split already reduced to ``shot`` / ``fraction``).

    ``labels`` are the stratification labels (one integer per sample); ``official`` the per-sample official split
    names (``split_mode=official``).

    Raises:
        SplitLeakError: A grouped mode produced a split that shares a group (never expected).
        ValueError: Unknown mode, or an empty train split.
    """
    if mode == "shard":
        splits = shard_splits(shard_split)
    elif mode == "official":
        if official is None:
            raise ValueError("split_mode=official needs a task with meta.official_split (a shards:<dir> task)")
        splits = official_splits(official, labels, groups, seed, val_frac)
    elif mode in ("group", "random"):
        splits = group_splits(labels, groups, seed, val_frac, test_frac, grouped=mode == "group")
    else:
        raise ValueError(f"unknown split mode {mode!r}")
    if mode != "random":
        check_no_leak(splits, groups)
    splits["train"] = subsample_train(splits["train"], labels, seed, shot, fraction)
    if len(splits["train"]) == 0:
        raise ValueError("the training split is empty")
    return splits


def save_splits(path: str | Path, splits: dict[str, np.ndarray], info: dict[str, Any] | None = None) -> Path:
    """Writes the index file (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {k: [int(i) for i in v] for k, v in splits.items()}
    payload["info"] = info or {}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload))
    tmp.replace(path)
    return path


def load_splits(path: str | Path) -> dict[str, np.ndarray]:
    """Reads an index file written by :func:`save_splits`."""
    data = json.loads(Path(path).read_text())
    return {k: np.asarray(v, dtype=np.int64) for k, v in data.items() if k in SPLIT_NAMES}
