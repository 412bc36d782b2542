"""The shard sets that pretraining streams from: the data config, and the expansion of ``data.shards`` (local
directories, parent directories, remote locations, brace patterns) into shard sets with their mixing weights.

The stream itself (resampling, epoch mode, exact resume, skip counting) is :mod:`lvmmed.data.pipeline`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from lvmmed.data.remote import is_pattern, is_remote
from lvmmed.data.shards import MANIFEST_NAME, ShardFormatError, load_manifest
from lvmmed.registry import check_choice

log = logging.getLogger(__name__)


class DataQualityError(RuntimeError):
    """Too many samples were unreadable; the message names the last failures."""


@dataclass
class DataConfig:
    """Where training images come from and how they are streamed.

    Attributes:
        shards: Shard-set directories (each with ``manifest.json``), parent directories holding several, or remote
            locations: ``https://host/set/``, ``s3://bucket/set``, ``gs://bucket/set``, brace patterns
            (``.../train-{000000..000009}.tar``) and ``pipe:`` commands (see :mod:`lvmmed.data.remote`).
        resampled: True: endless seeded resampling of shards (epochs are a sample count). False: epoch mode,
            every sample exactly once per epoch across ranks and workers (``mixing``/``weights`` do not apply).
        cache_dir: Optional local directory where remote shards are kept after their first read (webdataset's
            file cache); empty = stream without caching.
        weights: Mixing weight per shard set (after expansion). Empty: see ``mixing``.
        mixing: Default weights when ``weights`` is empty: ``size`` (proportional to sample counts, as if the
            sets were concatenated) or ``equal`` (each set equally often).
        splits: Splits read for pretraining. Default ``[train]`` keeps val/test held out.
        batch_size: Images per process per micro-batch.
        num_workers: DataLoader workers per process (0 = in the main process).
        shuffle_buffer, shuffle_initial: Sample shuffle buffer per set and worker.
        epoch_samples: Samples per epoch over all ranks; 0 = the manifests' count of the selected splits.
        max_skip_fraction, min_skips_to_fail: Fail when skipped/seen exceeds the fraction after at least this
            many skips.
    """

    shards: list[str] = field(default_factory=list)
    resampled: bool = True
    cache_dir: str = ""
    weights: list[float] = field(default_factory=list)
    mixing: str = "size"
    splits: list[str] = field(default_factory=lambda: ["train"])
    batch_size: int = 64
    num_workers: int = 2
    shuffle_buffer: int = 500
    shuffle_initial: int = 100
    epoch_samples: int = 0
    max_skip_fraction: float = 0.05
    min_skips_to_fail: int = 20

    def __post_init__(self) -> None:
        check_choice(self.mixing, ("size", "equal"), "data.mixing")
        if self.batch_size < 2:
            raise ValueError("data.batch_size must be >= 2 (contrastive and matching losses need pairs)")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0 (0 = load in the main process), got {self.num_workers}")
        if not self.resampled and (self.weights or self.mixing != "size" or self.epoch_samples):
            raise ValueError(
                "data.resampled=false reads every sample once per epoch: data.weights, data.mixing=equal and "
                "data.epoch_samples only apply to resampled streams"
            )


@dataclass
class ShardSet:
    """One shard set selected for training: its shard paths, per-shard counts and mixing weight."""

    name: str
    urls: list[str]
    counts: list[int]
    weight: float

    @property
    def size(self) -> int:
        return sum(self.counts)


def resolve_shard_sets(cfg: DataConfig) -> list[ShardSet]:
    """Expands ``cfg.shards`` into shard sets with the selected splits and normalised weights.

    Raises:
        ShardFormatError: A path has no manifest (and no sub-directory with one), or no shards of ``splits``.
    """
    roots: list[Path | str] = []
    for entry in cfg.shards:
        path = Path(entry)
        if is_remote(entry) or is_pattern(entry):
            roots.append(entry)  # remote or a pattern: the manifest is read from the same place
        elif (path / MANIFEST_NAME).is_file() or path.name == MANIFEST_NAME:
            roots.append(path)
        elif path.is_dir() and (subs := sorted(p.parent for p in path.glob(f"*/{MANIFEST_NAME}"))):
            roots.extend(subs)
        else:
            raise ShardFormatError(
                f"{path} holds no {MANIFEST_NAME} (nor sub-directories with one). Make shards with `python -m "
                "data_prep convert` (the bundled data: `python -m data_prep bundled --out runs/shards --profile demo`)",
                fix="",  # the remedy is in the message; not also the default "rebuild the shards"
            )
    if not roots:
        raise ShardFormatError("data.shards is empty: give at least one shard-set directory", fix="")
    sets = []
    for root in roots:
        manifest = load_manifest(root)
        picked = [s for s in manifest.shards if s["split"] in cfg.splits and int(s["count"]) > 0]
        if picked:
            sets.append(
                ShardSet(
                    manifest.name, [manifest.url(s["name"]) for s in picked], [int(s["count"]) for s in picked], 1.0
                )
            )
        else:
            log.warning("shard set %s has no samples in splits %s; left out", root, cfg.splits)
    if not sets:
        raise ShardFormatError(f"no shards of splits {cfg.splits} in {[str(r) for r in roots]}")
    if cfg.weights:
        if len(cfg.weights) != len(sets):
            raise ValueError(
                f"data.weights has {len(cfg.weights)} values for {len(sets)} shard sets ({[s.name for s in sets]})"
            )
        raw = list(cfg.weights)
    else:
        raw = [float(s.size) if cfg.mixing == "size" else 1.0 for s in sets]
    total = sum(raw)
    if total <= 0 or min(raw) < 0:
        raise ValueError(f"mixing weights must be >= 0 and not all zero, got {raw}")
    for s, w in zip(sets, raw):
        s.weight = w / total
    return sets
