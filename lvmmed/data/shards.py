"""The lvmmed shard format: the contract between data_prep, pretrain and downstream.

A shard set is a directory::

    <root>/manifest.json
    <root>/<split>-000000.tar, <split>-000001.tar, ...     (split in {"train", "val", "test"})

Each tar holds samples whose members are contiguous and named ``<key>.<ext>``; ``key`` has no dots
(webdataset splits at the first dot). Extensions:

* ``image.npy``: float16, HxW (grey) or HxWx3 (colour), intensities already normalised to [0, 1]; or
  ``image.png`` (data_prep ``encoding: png``): integers ``q`` with image ``= q / meta.image_scale``, equal to the
  float16 path within float16 rounding (:mod:`lvmmed.data.codecs`). Readers accept both, per sample.
* ``mask.npy`` (optional): uint8 HxW label map (0 = background), same grid as the image; ``mask.png`` with the
  PNG encoding.
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

from lvmmed.data.codecs import decode_mask_png, decode_png
from lvmmed.data.remote import Location, RemoteError, is_pattern, is_remote, parse_location, read_bytes
from lvmmed.errors import InputError

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
    "image_scale",  # image.png only: the stored integers divided by this give the [0, 1] image
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


class ShardFormatError(InputError, ValueError):
    """A shard set or sample does not follow the lvmmed shard format, or cannot be read (exit 1)."""

    default_fix = "rebuild the shards with python -m data_prep convert"


@dataclass
class Manifest:
    """Parsed ``manifest.json`` of one shard set (local, or remote with ``location`` set)."""

    root: Path
    data: dict[str, Any] = field(default_factory=dict)
    location: Location | None = None

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
        """Paths (or URLs) of the shards of ``split`` (all when None), in manifest order."""
        return [self.url(s["name"]) for s in self.shards if split is None or s["split"] == split]

    def url(self, name: str) -> str:
        """Path or URL of one file of the set."""
        return self.location.url(name) if self.location else str(self.root / name)

    @property
    def encoding(self) -> str:
        """Image encoding the converter was configured with (``npy`` or ``png``; recorded in its config)."""
        return str(self.data.get("encoding") or (self.data.get("config") or {}).get("encoding") or "npy")

    @property
    def label_names(self) -> list[str] | None:
        return self.data.get("label_names")

    @property
    def mask_labels(self) -> list[str] | None:
        return self.data.get("mask_labels")


def load_manifest(root: str | Path) -> Manifest:
    """Reads the manifest of a shard set: a local directory (or its ``manifest.json``) or a remote location.

    Remote locations (``https://``, ``s3://``, ``gs://``, brace patterns, ``pipe:``) are described in
    :mod:`lvmmed.data.remote`; a pattern keeps only the shards it lists.

    Raises:
        ShardFormatError: No manifest there, or it is not valid JSON of this format, or a pattern lists shards
            the manifest does not have.
    """
    spec = str(root)
    if is_remote(spec) or is_pattern(spec):
        location = parse_location(spec)  # LocationError (exit 2) for a malformed location
        try:
            text = read_bytes(location.manifest_url)
        except RemoteError as err:
            raise ShardFormatError(f"{err} (a set's {MANIFEST_NAME} is read next to its shards)", err.fix) from None
        data = _parse_manifest(text, location.manifest_url)
        if location.names is not None:
            listed = {s["name"]: s for s in data.get("shards", [])}
            if missing := [n for n in location.names if n not in listed]:
                raise ShardFormatError(f"{spec}: shards {missing[:5]} are not in {location.manifest_url}")
            data = {**data, "shards": [listed[n] for n in location.names]}
        return Manifest(root=Path(location.base.rsplit("/", 1)[-1] or "remote"), data=data, location=location)
    root = Path(root)
    file = root / MANIFEST_NAME if root.is_dir() else root
    if not file.is_file():
        raise ShardFormatError(
            f"No {MANIFEST_NAME} in {root}. Shard sets are made by `python -m data_prep convert ...`; "
            "an interrupted conversion leaves no manifest (re-run it to resume)."
        )
    return Manifest(root=file.parent, data=_parse_manifest(file.read_bytes(), str(file)))


def _parse_manifest(raw: bytes, source: str) -> dict[str, Any]:
    """The manifest's JSON, checked: format version, and every shard entry with a name, a split and a count."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ShardFormatError(f"{source} is not valid UTF-8 JSON: {err}") from None
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        version = data.get("format_version") if isinstance(data, dict) else None
        raise ShardFormatError(f"{source}: format_version {version} != {FORMAT_VERSION}")
    shards = data.get("shards", [])
    for i, entry in enumerate(shards if isinstance(shards, list) else [None]):
        ok = isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("split"), str)
        count = entry.get("count") if isinstance(entry, dict) else None
        if not ok or isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ShardFormatError(f"{source}: shard entry {i} needs a name, a split and a count >= 0, got {entry!r}")
    return data


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


def decode_image(members: dict[str, Any], meta: dict[str, Any]) -> np.ndarray:
    """The image of a sample from its ``image.npy`` (float16) or ``image.png`` (+ ``meta.image_scale``) member.

    Raises:
        ShardFormatError: Neither member, or one that does not decode.
    """
    try:
        if "image.npy" in members:
            data = members["image.npy"]
            return decode_npy(data) if isinstance(data, bytes) else data
        if "image.png" in members:
            return decode_png(members["image.png"], meta.get("image_scale"))
    except (ValueError, OSError) as err:
        raise ShardFormatError(f"image does not decode: {err}") from None
    raise ShardFormatError(f"no image.npy or image.png among {sorted(members)}")


def decode_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """Decodes a raw webdataset sample dict into ``{"key", "image", "mask", "meta", "url"}``.

    Usable as a ``.map`` stage after ``webdataset.WebDataset`` (no ``.decode()`` needed, so no pickle
    decoders are ever registered).

    Raises:
        ShardFormatError: The image (``image.npy`` or ``image.png``) or ``meta.json`` is missing or bad.
    """
    if not ("image.npy" in sample or "image.png" in sample) or "meta.json" not in sample:
        raise ShardFormatError(
            f"sample {sample.get('__key__')!r} in {sample.get('__url__')!r} lacks image.npy|png / meta.json "
            f"(has {sorted(k for k in sample if not k.startswith('__'))})"
        )
    meta = sample["meta.json"]
    meta = json.loads(meta) if isinstance(meta, bytes | str) else meta
    out = {
        "key": sample.get("__key__"),
        "url": sample.get("__url__"),
        "image": decode_image(sample, meta),
        "mask": None,
        "meta": meta,
    }
    if "mask.npy" in sample:
        m = sample["mask.npy"]
        out["mask"] = decode_npy(m) if isinstance(m, bytes) else m
    elif "mask.png" in sample:
        try:
            out["mask"] = decode_mask_png(sample["mask.png"])
        except (ValueError, OSError) as err:
            raise ShardFormatError(f"sample {sample.get('__key__')!r}: mask does not decode: {err}") from None
    return out


def iter_samples(root: str | Path, split: str | None = None) -> Iterator[dict[str, Any]]:
    """Iterates decoded samples of a shard set in manifest order (for evaluation and tools; single process).

    Training uses the streaming pipeline in ``lvmmed.data`` instead (resampled, split by node and worker).

    Raises:
        ShardFormatError: A shard cannot be read (truncated, not a tar, connection lost) or holds another number of
            samples than its manifest entry (a tar cut on a sample boundary reads without error otherwise).
    """
    import webdataset as wds

    manifest = load_manifest(root)
    fix = f"check the set with python -m data_prep verify {root}, then re-convert or copy it again"
    for entry in manifest.shards:
        if split is not None and entry["split"] != split:
            continue
        url = manifest.url(entry["name"])
        dataset = wds.WebDataset(url, shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False)
        count = 0
        try:
            for raw in dataset:
                count += 1
                yield decode_sample(raw)
        except ShardFormatError:
            raise
        except Exception as err:  # tarfile.ReadError, curl/pipe failures, EOFError, ...
            raise ShardFormatError(f"cannot read shard {url}: {type(err).__name__}: {err}", fix) from None
        if count != int(entry["count"]):
            raise ShardFormatError(f"shard {url} holds {count} samples, its manifest says {entry['count']}", fix)


def load_arrays(root: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """Loads all decoded samples of a (small) shard set into memory."""
    return list(iter_samples(root, split))
