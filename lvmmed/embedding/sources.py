"""What ``lvmmed embed`` reads: shard sets (``manifest.json``) or folders of images, DICOM and NIfTI files.

Both yield :class:`Item` objects in a fixed order (manifest order; sorted file paths), which is what makes chunked
outputs resumable: chunk ``c`` always holds items ``c * chunk_size`` up to the next chunk.

* **Shard sets** are read with :func:`lvmmed.data.shards.iter_samples` (local or remote, as training reads them). A
  directory whose sub-directories hold manifests expands to all of them. Columns: the sample key, ``label``
  (``meta.label_name``, else ``meta.label``), ``dataset`` (``meta.dataset``, else the manifest's name), ``center``
  (``meta.center``), ``split`` and ``modality``.
* **Folders** go through the readers data_prep uses (:mod:`lvmmed.data.readers`): NIfTI volumes and DICOM series are
  cut into 2-D slices by :func:`lvmmed.data.processing.iter_slices` (``axes``, every ``slice_step``-th, near-empty
  slices skipped), 2-D images are one item each; intensities are scaled to [0, 1] by
  :func:`lvmmed.data.processing.normalize_intensity` (CT through the ``wide`` Hounsfield window, other grey data by
  percentiles, 8-bit colour by /255), exactly as ``data_prep convert`` does by default. ``label`` is the file's folder
  relative to the root (data_prep's ``classes`` layout), ``dataset`` the root's name. A file that cannot be read is
  skipped and listed in ``failures`` (the run goes on); metadata files (.csv, .json, .txt, .md) are ignored.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lvmmed.data.processing import iter_slices, normalize_intensity
from lvmmed.data.readers import ImageRecord, load_image, read_nifti
from lvmmed.data.readers.dicom import iter_series, walk_files
from lvmmed.data.readers.images import IMAGE_EXTENSIONS
from lvmmed.data.readers.record import check_not_constant
from lvmmed.data.remote import is_pattern, is_remote
from lvmmed.data.shards import MANIFEST_NAME, iter_samples, load_manifest

NIFTI_SUFFIXES = (".nii", ".nii.gz")
IGNORED_SUFFIXES = (".csv", ".json", ".txt", ".md", ".yaml", ".yml", ".tsv", ".xml", ".html", ".pdf")
COLUMNS = ("key", "label", "dataset", "center", "split", "modality", "source")


@dataclass
class Item:
    """One 2-D image in [0, 1] ((H, W) or (H, W, 3)) and its index columns (:data:`COLUMNS`)."""

    image: np.ndarray
    columns: dict[str, str]


@dataclass
class Source:
    """One input of ``embed``: a shard set or a folder, its item count where known, and read failures."""

    location: str
    kind: str  # shards | folder
    total: int | None = None
    failures: list[dict[str, str]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    def items(self) -> Iterator[Item]:
        return _shard_items(self) if self.kind == "shards" else _folder_items(self)


def open_sources(
    paths: list[str], splits: list[str] | None = None, axes: tuple[int, ...] = (2,), slice_step: int = 1
) -> list[Source]:
    """Shard sets and folders named on the command line, expanded and checked (no pixels read yet).

    Raises:
        FileNotFoundError: A local path does not exist.
        ShardFormatError: A shard set's manifest is unreadable.
    """
    sources = []
    for text in paths:
        path = Path(text)
        if is_remote(text) or is_pattern(text) or (path / MANIFEST_NAME).is_file() or path.name == MANIFEST_NAME:
            roots = [text]
        elif path.is_dir() and (subs := sorted(p.parent for p in path.glob(f"*/{MANIFEST_NAME}"))):
            roots = [str(s) for s in subs]
        elif path.exists():
            sources.append(Source(str(path), "folder", options={"axes": tuple(axes), "slice_step": slice_step}))
            continue
        else:
            raise FileNotFoundError(2, "no such shard set, folder or file", str(path))
        for root in roots:
            manifest = load_manifest(root)
            count = sum(int(s["count"]) for s in manifest.shards if splits is None or s["split"] in splits)
            sources.append(Source(root, "shards", count, options={"splits": splits}))
    return sources


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _shard_items(source: Source) -> Iterator[Item]:
    manifest = load_manifest(source.location)
    splits = source.options.get("splits")
    samples = iter_samples(source.location) if splits is None else (
        sample for split in splits for sample in iter_samples(source.location, split))  # fmt: skip
    for sample in samples:
        meta = sample["meta"]
        split = _text(meta.get("split"))
        label = meta.get("label_name")
        if label is None and meta.get("label") is not None:
            names = manifest.label_names
            label = names[meta["label"]] if names and isinstance(meta["label"], int) else meta["label"]
        columns = {"key": _text(sample["key"]), "label": _text(label), "dataset": _text(meta.get("dataset") or
                   manifest.name), "center": _text(meta.get("center")), "split": split,
                   "modality": _text(meta.get("modality")), "source": source.location}  # fmt: skip
        yield Item(np.asarray(sample["image"], dtype=np.float32), columns)


def _kind_of(file: Path) -> str | None:
    name = file.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if file.suffix.lower() in IMAGE_EXTENSIONS:
        return "image"
    if name.endswith(IGNORED_SUFFIXES) or name == "dicomdir":
        return None
    return "dicom"


def _folder_items(source: Source) -> Iterator[Item]:
    root = Path(source.location)
    files = walk_files(root) if root.is_dir() else [root]
    base = root if root.is_dir() else root.parent
    dataset = root.name if root.is_dir() else root.parent.name
    by_kind: dict[str, list[Path]] = {"nifti": [], "image": [], "dicom": []}
    for file in files:
        if kind := _kind_of(file):
            by_kind[kind].append(file)
    for file in by_kind["image"] + by_kind["nifti"]:
        try:
            record = _read_file(file)
        except Exception as err:  # broad on purpose: one bad file is listed and skipped, the rest embedded
            source.failures.append({"file": str(file), "reason": f"{type(err).__name__}: {err}"})
            continue
        yield from _record_items(record, file, base, dataset, source)
    if by_kind["dicom"]:
        for records, failures in iter_series(by_kind["dicom"]):
            source.failures += [{"file": str(f["file"]), "reason": str(f["reason"])} for f in failures]
            for record in records:
                yield from _record_items(record, Path(record.meta.get("source", "")), base, dataset, source)


def _read_file(file: Path):
    if file.name.lower().endswith(NIFTI_SUFFIXES):
        return read_nifti(file)
    array = load_image(file)
    check_not_constant(array, file)
    return ImageRecord(array, "image2d", {"modality": "OT", "source": str(file), "spacing": None})


def _record_items(record, file: Path, base: Path, dataset: str, source: Source) -> Iterator[Item]:
    modality = str(record.meta.get("modality") or "OT")
    try:
        scaled, _ = normalize_intensity(record.array, modality)
    except ValueError as err:  # constant or empty image
        source.failures.append({"file": str(file), "reason": str(err)})
        return
    scaled_record = ImageRecord(scaled, record.kind, record.meta, {})
    try:
        rel = file.relative_to(base)
    except ValueError:
        rel = Path(file.name)
    label = "" if str(rel.parent) == "." else str(rel.parent)
    axes, step = source.options.get("axes", (2,)), int(source.options.get("slice_step", 1))
    for item in iter_slices(scaled_record, axes=axes, skip_empty=True, step=step):
        suffix = "" if record.kind == "image2d" else (f"#f{item.index:04d}" if item.axis is None else
                                                     f"#a{item.axis}s{item.index:04d}")  # fmt: skip
        columns = {"key": f"{rel.as_posix()}{suffix}", "label": label, "dataset": dataset, "center": "",
                   "split": "", "modality": modality, "source": str(file)}  # fmt: skip
        yield Item(np.asarray(item.image2d, dtype=np.float32), columns)
