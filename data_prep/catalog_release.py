"""How a catalog entry describes its release as data: images, excludes, masks, labels, patients, official split.

A :class:`Release` is matched against the files under ``--src`` by :func:`scan_release`. Every path is taken
relative to ``--src`` with ``/`` separators, and the entry's ``image`` regular expression must match the whole
path. Its named groups carry the facts the file name holds:

* ``patient``: the patient key (``patient="group"``), e.g. OCT2017 ``CNV-<patient>-<n>.jpeg``;
* ``label``: the class (``labels=Labels("group")``), e.g. the class folder, or Shenzhen's ``_<0|1>`` suffix;
* ``split``: the official split folder (``train``/``test``, ``Training``/``Testing``, ``imagesTr``/``imagesTs``),
  mapped by :data:`OFFICIAL_SPLIT_NAMES` (or the entry's ``split_names``).

Mask templates are Python format strings relative to ``--src`` that may use those groups and ``{dir}`` (the image's
folder with a trailing ``/``), ``{name}``, ``{stem}`` and ``{ext}``; a template with ``*`` is a glob whose matches
merge (BUSI's ``_mask.png`` and ``_mask_1.png``). Several templates merge into one label map (``mask_merge``):
``values`` keeps a single mask's values, ``index`` gives the k-th template's foreground the value k + 1
(Montgomery left lung 1, right lung 2) and ``union`` sets every foreground to 1. A file that is some image's mask
is never an image; macOS ``._*`` files and hidden folders are never read; every other unmatched file is listed as
ignored in the plan, so nothing is dropped without a word.
"""

from __future__ import annotations

import csv
import glob
import posixpath
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lvmmed.registry import check_choice

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".hdr", ".mhd", ".mha")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
KNOWN_SUFFIXES = (*VOLUME_SUFFIXES, *IMAGE_SUFFIXES, ".dcm", ".dicom", ".h5")
MASK_MERGES = ("values", "index", "union")
LABEL_KINDS = ("group", "csv", "onehot")
PATIENT_KEYS = ("file", "group", "csv", "dicom", "hdf5")
OFFICIAL_SPLIT_NAMES = {
    "train": "train", "training": "train", "imagestr": "train", "train_images": "train", "tr": "train",
    "valid": "val", "val": "val", "validation": "val",
    "test": "test", "testing": "test", "imagests": "test", "test_images": "test", "ts": "test", "te": "test",
}  # fmt: skip


@dataclass(frozen=True)
class Labels:
    """Where image-level labels come from.

    Attributes:
        kind: ``group`` (the ``label`` group of the image regex), ``csv`` (one column holds the class; with
            ``multi_sep`` several classes, stored multi-hot) or ``onehot`` (one 0/1 column per class).
        csv: CSV path relative to ``--src`` (a glob; the first match is used).
        file_column: CSV column naming the image (matched with or without its extension).
        label_column: CSV column with the class (``csv``).
        columns: Class columns (``onehot``; empty = every column except ``file_column``).
        multi_sep: Separator of multi-label values (ChestX-ray14 ``Effusion|Mass``); "" = single label.
        names: Raw value → class name (e.g. Shenzhen ``{"0": "normal", "1": "tuberculosis"}``).
        patient_column: CSV column holding the patient key (used with ``patient="csv"``).
        header: Column names of a CSV that has no header row (FGADR); empty = the first row is the header.
    """

    kind: str = "group"
    csv: str = ""
    file_column: str = ""
    label_column: str = ""
    columns: tuple[str, ...] = ()
    multi_sep: str = ""
    names: dict[str, str] = field(default_factory=dict)
    patient_column: str = ""
    header: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_choice(self.kind, LABEL_KINDS, "Labels.kind")


@dataclass(frozen=True)
class Release:
    """One release's layout, as data (see the module docstring).

    Attributes:
        image: Regular expression matching an image's whole relative path (named groups: patient, label, split).
        exclude: Regular expressions (searched in the relative path) of files that are never images.
        masks: Mask path templates, relative to ``--src``; all of them must exist for an image.
        mask_merge: ``values``, ``index`` or ``union`` (how several masks become one label map).
        masks_optional: Official splits whose images have no masks in the release (``"*"``: any image may lack one);
            elsewhere a missing mask is a ``missing_mask`` failure.
        labels: Image-level label source, or None.
        patient: ``file`` (every image its own patient), ``group`` (the ``patient`` group), ``csv``
            (``labels.patient_column``), ``dicom`` (PatientID from the headers) or ``hdf5`` (``wsi`` column of the
            release's meta CSV).
        split_names: Extra official split folder names → ``train``/``val``/``test``.
        split_lists: Official split → glob of a text file listing that split's file names (first token of each
            line; ChestX-ray14 ``train_val_list.txt``/``test_list.txt``).
        mask_channel: Channel of a colour mask holding the label (NuCLS: 0); None = the mask as grey values.
        mask_values: The release's label codes in label order (MM-WHS ``0, 205, 420, ...``): code k-th → value k.
        source: Where the layout comes from (release page, or LVM-Med's ``file_list.txt``).
    """

    image: str
    exclude: tuple[str, ...] = ()
    masks: tuple[str, ...] = ()
    mask_merge: str = "values"
    masks_optional: tuple[str, ...] = ()
    labels: Labels | None = None
    patient: str = "file"
    split_names: dict[str, str] = field(default_factory=dict)
    split_lists: dict[str, str] = field(default_factory=dict)
    mask_channel: int | None = None
    mask_values: tuple[int, ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        re.compile(self.image)
        check_choice(self.mask_merge, MASK_MERGES, "mask_merge")
        check_choice(self.patient, PATIENT_KEYS, "patient")
        if self.patient == "group" and "?P<patient>" not in self.image:
            raise ValueError(f"patient='group' needs a (?P<patient>...) group in {self.image!r}")
        if self.patient == "csv" and not (self.labels and self.labels.patient_column):
            raise ValueError("patient='csv' needs labels.patient_column")


class LayoutError(ValueError):
    """The files under --src do not match the catalog entry's release layout (message shows the layout)."""


@dataclass(frozen=True)
class CatalogEntry:
    """One public dataset.

    Attributes:
        name: Catalog key (lower case, used on the command line).
        modality: DICOM-style code (CT, MR, CR/DX for X-ray, MG, US, OCT, ES endoscopy, FUNDUS, DERM, PATH).
        organ: Body part.
        format: Reader family (``dicom``, ``nifti``, ``metaimage``, ``images``, ``hdf5``).
        layout: The release's on-disk layout under ``--src``, for people.
        release: The same layout as data (:class:`Release`).
        config: ConvertConfig overrides applied by ``convert NAME``.
        licence: Licence summary.
        homepage: Where to request/download it.
        lvmmed_folder: Folder name in LVM-Med's released index lists (None = added from the same family).
        notes: Caveats (restricted access, parts of the release that are not converted).
    """

    name: str
    modality: str
    organ: str
    format: str
    layout: str
    release: Release
    config: dict = field(default_factory=dict)
    licence: str = ""
    homepage: str = ""
    lvmmed_folder: str | None = None
    notes: str = ""


@dataclass
class Item:
    """One matched image: its relative path, regex groups, masks found, missing masks, official split."""

    rel: str
    groups: dict[str, str]
    masks: list[str]
    missing: list[str]
    official_split: str | None


@dataclass
class ReleaseScan:
    """What :func:`scan_release` found under ``--src``."""

    items: list[Item]
    ignored: list[str]
    mask_files: set[str]


def suffix_of(name: str) -> str:
    """Known (possibly double) suffix of a file name in lower case, else its last suffix."""
    low = name.lower()
    for s in KNOWN_SUFFIXES:
        if low.endswith(s):
            return s
    return Path(name).suffix.lower()


def all_files(src: Path) -> tuple[list[str], list[str]]:
    """``(visible files, hidden files)`` under ``src`` as sorted relative posix paths (``._*``, ``.DS_Store``...)."""
    visible, hidden = [], []
    for p in src.rglob("*"):
        if p.is_file():
            rel = p.relative_to(src).as_posix()
            (hidden if any(part.startswith(".") for part in rel.split("/")) else visible).append(rel)
    return sorted(visible), sorted(hidden)


def official_split(release: Release, value: str | None) -> str | None:
    """``train``/``val``/``test`` for a split folder name (None when the release has no official split)."""
    if value is None:
        return None
    names = {**OFFICIAL_SPLIT_NAMES, **{k.lower(): v for k, v in release.split_names.items()}}
    if value.lower() not in names:
        raise ValueError(f"unknown official split folder {value!r} (known: {sorted(names)})")
    return names[value.lower()]


def _template_values(rel: str, groups: dict[str, str]) -> dict[str, str]:
    parent, _, name = rel.rpartition("/")
    suffix = suffix_of(name)
    values = {"dir": parent + "/" if parent else "", "name": name, "stem": name[: len(name) - len(suffix)],
              "ext": name[len(name) - len(suffix):]}  # fmt: skip
    values.update({k: v or "" for k, v in groups.items()})
    return values


def _find_masks(src: Path, template: str, values: dict[str, str], files: set[str]) -> list[str]:
    if "*" in template:
        pattern = template.format(**{k: glob.escape(v) for k, v in values.items()})
        found = (Path(p).relative_to(src).as_posix() for p in glob.glob(str(src / pattern)))
        return sorted(f for f in found if f in files)
    rel = posixpath.normpath(template.format(**values))
    return [rel] if rel in files else []


def scan_release(src: Path, release: Release) -> ReleaseScan:
    """Matches images, their masks and official splits under ``src`` (no pixel is read)."""
    visible, hidden = all_files(src)
    files = set(visible)
    pattern = re.compile(release.image)
    excludes = [re.compile(e) for e in release.exclude]
    candidates = []
    for rel in visible:
        m = pattern.fullmatch(rel)
        if m and not any(e.search(rel) for e in excludes):
            candidates.append((rel, {k: v for k, v in m.groupdict().items() if v is not None}))
    items, mask_files = [], set()
    for rel, groups in candidates:
        values = _template_values(rel, groups)
        found, missing = [], []
        for template in release.masks:
            hits = _find_masks(src, template, values, files)
            found.extend(hits)
            if not hits:
                missing.append(template.format(**values))
        mask_files.update(found)
        split = official_split(release, groups.get("split"))
        items.append(Item(rel, groups, found, missing, split))
    items = [it for it in items if it.rel not in mask_files]  # a mask is never an image
    listed = _split_lists(src, release)
    for it in items:
        if listed:
            it.official_split = listed.get(it.rel.rsplit("/", 1)[-1])
    used = {it.rel for it in items} | mask_files
    used |= {c for rel in list(used) for c in _companions(rel) if c in files}
    ignored = [rel for rel in visible if rel not in used] + hidden
    return ReleaseScan(items, ignored, mask_files)


def _companions(rel: str) -> list[str]:
    """Data files that belong to a header file (MetaImage ``.raw``/``.zraw``, Analyze ``.img``)."""
    stem, suffix = rel[: len(rel) - len(suffix_of(rel))], suffix_of(rel)
    return {".mhd": [stem + ".raw", stem + ".zraw"], ".hdr": [stem + ".img"]}.get(suffix, [])


def _split_lists(src: Path, release: Release) -> dict[str, str]:
    """``{file name: official split}`` from the release's split list files (none: empty)."""
    out: dict[str, str] = {}
    for split, pattern in release.split_lists.items():
        path = find_csv(src, pattern)
        if path is None:
            raise ValueError(f"official split list {pattern!r} not found under {src}")
        for line in path.read_text().splitlines():
            if line.strip():
                out[line.split()[0]] = official_split(release, split)
    return out


def masks_optional_for(release: Release, item: Item) -> bool:
    """True when the release has no mask for this image's official split (or masks are optional everywhere)."""
    return "*" in release.masks_optional or (item.official_split or "") in release.masks_optional


def read_csv_rows(path: Path, header: tuple[str, ...] = ()) -> tuple[list[str], list[dict[str, str]]]:
    """``(header, rows)`` of a CSV (UTF-8 with or without BOM; ``header`` names the columns of a headerless CSV)."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh, fieldnames=list(header) or None)
        return list(reader.fieldnames or []), list(reader)


def find_csv(src: Path, pattern: str) -> Path | None:
    """The first file under ``src`` matching a CSV glob (``pattern`` may be an absolute path)."""
    if Path(pattern).is_absolute():
        return Path(pattern) if Path(pattern).is_file() else None
    return next(iter(sorted(src.glob(pattern))), None)


def summarize_counts(values: list[str]) -> dict[str, int]:
    """Sorted value counts (for the plan)."""
    return dict(sorted(Counter(values).items()))
