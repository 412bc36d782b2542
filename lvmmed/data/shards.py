"""The lvmmed shard format: the contract between data_prep, pretrain and downstream.

A shard set is a directory::

    <root>/manifest.json
    <root>/<split>-000000.tar, <split>-000001.tar, ...     (split in {"train", "val", "test"})

Each tar holds samples whose members are contiguous and named ``<key>.<ext>``; ``key`` has no dots
(webdataset splits at the first dot). Extensions:

* ``image.npy``: float16, HxW (grey) or HxWx3 (colour), intensities already normalised to [0, 1].
* ``mask.npy`` (optional): uint8 HxW label map (0 = background), same grid as the image.
* ``meta.json``: allow-listed technical fields only (:data:`META_FIELDS`). Never a header dump, never
  patient identifiers: ``patient`` and ``volume`` are salted hashes.

``manifest.json`` holds :data:`MANIFEST_FIELDS`: per-shard ``name``, ``split``, ``count``, ``bytes`` and ``sha256``,
totals per split, label names, the source description, converter version and the resolved converter config.
Nothing is pickled anywhere: ``.npy`` members are decoded with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val", "test")

# Allow-list of meta.json fields. Anything else is dropped by the writer (de-identification by construction).
META_FIELDS = (
    "dataset",  # catalog/dataset name, e.g. "mni152"
    "modality",  # DICOM-style code: CT, MR, CR, DX, US, NM, XA, MG, OCT, ES (endoscopy), FUNDUS, DERM, PATH, OT
    "organ",  # free text, e.g. "brain"
    "center",  # source grouping for multi-center protocols (dataset, site, scanner or template)
    "patient",  # salted hash of the patient identifier (or of the volume for anonymous templates)
    "volume",  # salted hash of the source volume/series id
    "group",  # split unit: equals ``patient`` by default; a slab id for single-subject templates (documented)
    "split",  # train / val / test, assigned by salted hash of ``group``
    "source_index",  # index of the source file in the conversion run (not a path)
    "axis",  # slicing axis for 3-D sources (0, 1, 2) or null for 2-D
    "slice_index",  # index along that axis (or frame index for cine/multi-frame)
    "spacing",  # pixel spacing of the stored image [row, col] in mm, when known
    "orig_shape",  # shape before resize
    "window",  # [low, high] intensity window that mapped to [0, 1] (HU for CT)
    "channels",  # 1 or 3
    "label",  # integer class label, or null
    "label_name",  # class name, or null
    "labels",  # multi-hot class vector over the manifest's label_names (multi-label releases), or null
    "official_split",  # the release's own split of the source image (train / val / test), or null
    "mask_labels",  # names of the mask values, index = value, or null
)

MANIFEST_FIELDS = (
    "format_version",
    "name",
    "converter_version",
    "created",
    "source",  # free-text description of the source collection (no paths with patient names)
    "modality",
    "config",  # resolved converter config
    "label_names",
    "mask_labels",
    "shards",  # list of {"name", "split", "count", "bytes", "sha256"}
    "counts",  # {"train": n, "val": n, "test": n, "total": n}
    "failures",  # number of files that failed to convert (details in failures.json)
)


class ShardFormatError(ValueError):
    """A shard set or sample does not follow the lvmmed shard format."""


@dataclass
class Manifest:
    """Parsed ``manifest.json`` of one shard set."""

    root: Path
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.data.get("name", self.root.name))

    @property
    def shards(self) -> list[dict[str, Any]]:
        return list(self.data.get("shards", []))

    def count(self, split: str | None = None) -> int:
        """Number of samples in ``split`` (all splits when None)."""
        return sum(int(s["count"]) for s in self.shards if split is None or s["split"] == split)

    def urls(self, split: str | None = None) -> list[str]:
        """Local paths of the shards of ``split`` (all when None), in manifest order."""
        return [str(self.root / s["name"]) for s in self.shards if split is None or s["split"] == split]

    @property
    def label_names(self) -> list[str] | None:
        return self.data.get("label_names")

    @property
    def mask_labels(self) -> list[str] | None:
        return self.data.get("mask_labels")


def load_manifest(root: str | Path) -> Manifest:
    """Reads ``<root>/manifest.json``.

    Raises:
        ShardFormatError: The directory has no manifest, or it is not valid JSON of this format.
    """
    root = Path(root)
    file = root / MANIFEST_NAME if root.is_dir() else root
    if not file.is_file():
        raise ShardFormatError(
            f"No {MANIFEST_NAME} in {root}. Shard sets are made by `python -m data_prep convert ...`; "
            "an interrupted conversion leaves no manifest (re-run it to resume)."
        )
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ShardFormatError(f"{file} is not valid JSON: {err}") from None
    if data.get("format_version") != FORMAT_VERSION:
        raise ShardFormatError(f"{file}: format_version {data.get('format_version')} != {FORMAT_VERSION}")
    return Manifest(root=file.parent, data=data)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def decode_npy(data: bytes) -> np.ndarray:
    """Decodes an ``.npy`` member without ever unpickling."""
    return np.load(io.BytesIO(data), allow_pickle=False)


def encode_npy(array: np.ndarray) -> bytes:
    """Encodes an array as ``.npy`` bytes (object arrays are refused)."""
    if array.dtype == object:
        raise ShardFormatError("object arrays would need pickle; refusing to write them")
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def decode_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """Decodes a raw webdataset sample dict into ``{"key", "image", "mask", "meta", "url"}``.

    Usable as a ``.map`` stage after ``webdataset.WebDataset`` (no ``.decode()`` needed, so no pickle
    decoders are ever registered).

    Raises:
        ShardFormatError: ``image.npy`` or ``meta.json`` is missing.
    """
    if "image.npy" not in sample or "meta.json" not in sample:
        raise ShardFormatError(
            f"sample {sample.get('__key__')!r} in {sample.get('__url__')!r} lacks image.npy/meta.json "
            f"(has {sorted(k for k in sample if not k.startswith('__'))})"
        )
    meta = sample["meta.json"]
    meta = json.loads(meta) if isinstance(meta, bytes | str) else meta
    out = {
        "key": sample.get("__key__"),
        "url": sample.get("__url__"),
        "image": decode_npy(sample["image.npy"]) if isinstance(sample["image.npy"], bytes) else sample["image.npy"],
        "mask": None,
        "meta": meta,
    }
    if "mask.npy" in sample:
        m = sample["mask.npy"]
        out["mask"] = decode_npy(m) if isinstance(m, bytes) else m
    return out


def iter_samples(root: str | Path, split: str | None = None) -> Iterator[dict[str, Any]]:
    """Iterates decoded samples of a shard set in manifest order (for evaluation and tools; single process).

    Training uses the streaming pipeline in ``lvmmed.data`` instead (resampled, split by node and worker).
    """
    import webdataset as wds

    manifest = load_manifest(root)
    urls = manifest.urls(split)
    if not urls:
        return
    dataset = wds.WebDataset(urls, shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False)
    for raw in dataset:
        yield decode_sample(raw)


def load_arrays(root: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """Loads all decoded samples of a (small) shard set into memory."""
    return list(iter_samples(root, split))
