"""Typed configuration of one conversion run (``lvmmed.config``: YAML in ``configs/data_prep/`` + ``key=value``).

The resolved config is saved inside ``manifest.json`` (key ``config``) so every shard set records exactly how it
was made. Choices that LVM-Med (Nguyen et al., NeurIPS 2023, arXiv 2306.11925) leaves open are fields here:
the CT window, the percentile range for MR/US/X-ray, slicing axes and stride, the output size, the split fractions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lvmmed.data.codecs import ENCODINGS
from lvmmed.registry import check_choice

from .formats import FORMATS

CHANNEL_MODES = ("keep", "grey", "rgb")
SPLIT_METHODS = ("rank", "threshold", "official")
SPLIT_UNITS = ("patient", "slab")
LAYOUTS = ("auto", "classes", "pairs", "flat")
PATIENT_FROM = ("stem", "parent", "labels")
START_METHODS = ("auto", "fork", "spawn", "forkserver")


@dataclass
class ConvertConfig:
    """How a collection becomes a shard set.

    Attributes:
        name: Dataset name written to ``meta.json`` and the manifest (default: the catalog name or source folder).
        format: Reader family: ``dicom`` (files, series, DICOMDIR, SEG), ``nifti`` (volumes + optional label maps),
            ``images`` (2-D folders, optional class folders / labels CSV), ``metaimage`` (``.mhd``/``.raw`` through
            SimpleITK) or ``hdf5`` (``*_x.h5`` patch stacks + ``*_y.h5`` labels through h5py).
        modality: Modality code forced on every sample ("" = read it from the header, else "OT").
        organ: Free-text organ for ``meta.json``.
        center: Source grouping for multi-centre protocols ("" = the dataset name).
        image_size: Output side in pixels (square, aspect not kept: LVM-Med resizes to 224/1024); 0 keeps the size.
        axes: Slicing axes of 3-D volumes after RAS reorientation (2 = axial, as LVM-Med's 2-D pretraining).
        slice_step: Keep every n-th slice along each axis.
        skip_empty: Drop slices whose foreground fraction is below ``empty_fraction``.
        empty_fraction: Minimum fraction of pixels above 5% of the slice range for a slice to count as non-empty.
        frame_step: Keep every n-th frame of cine / multi-frame DICOM.
        max_frames: At most this many frames per multi-frame object (0 = all).
        ct_window: CT window preset name (see ``lvmmed.data`` intensity presets) or "" for the reader default.
        percentiles: Low/high percentiles that map to [0, 1] for MR, US, X-ray, NM and colour photos.
        channels: ``keep`` (grey stays HxW, colour stays HxWx3), ``grey`` (colour → BT.601 luma) or ``rgb``.
        split_fractions: train/val/test fractions of split groups (patients by default).
        split_unit: What a split group is: ``patient`` (default), or ``slab`` (contiguous slices of a single-subject
            template, ``slab_thickness`` slices per slab along each axis; held-out slabs are spatially disjoint
            along one axis but intersect slices of the other axes, so that split measures unseen positions of the
            same brain, not unseen subjects).
        slab_thickness: Slices per slab when ``split_unit`` is ``slab``.
        split_method: ``rank`` sorts the salted group hashes and cuts at the fractions (every split non-empty once
            there are 3 groups; needs the group list up front, which the planner has); ``threshold`` maps each hash
            to [0, 1) and cuts there (stable when the collection grows); ``official`` keeps the release's own split
            (catalog entries whose release has one): official test stays test, official val stays val, and when the
            release has no val split, val is cut from the official train patients by rank at the val fraction.
        salt_file: File holding the de-identification salt ("" = ``LVMMED_SALT`` or the default salt file).
        dedupe: Skip DICOM instances whose SOPInstanceUID was already converted (same pixels, other encoding).
        shard_maxcount: Samples per shard.
        shard_maxsize: Bytes per shard (soft limit, as ``webdataset.ShardWriter``).
        workers: Worker processes (0 or 1 = in-process).
        start_method: ``auto`` (= ``fork`` where available: cheapest start; the workers never run torch ops),
            ``fork``, ``spawn`` or ``forkserver`` (workers fork from a clean server that preloads the converters;
            use it when embedding data_prep in a process that runs torch).
        max_failure_fraction: The run exits non-zero when more than this fraction of inputs failed.
        labels: CSV of image-level labels (columns ``labels_file_column``, ``labels_label_column`` and optionally
            ``patient``); "" = class folder names (images) or none. Relative paths are taken under ``--src``.
        labels_file_column: CSV column with the file name (matched with or without extension).
        labels_label_column: CSV column with the class (names are indexed in sorted order).
        label_pattern: Label map of a NIfTI image, relative to the image's folder, with ``{stem}`` = image name
            without ``.nii``/``.nii.gz`` (e.g. ``../labelsTr/{stem}.nii.gz``); "" = no label maps.
        image_glob: Glob of the input images under ``--src`` ("" = every file of the format).
        exclude_glob: Files matching this glob are not images (e.g. ``*_seg.nii.gz``); label maps found through
            ``label_pattern`` are excluded automatically.
        layout: 2-D folders: ``auto``, ``classes`` (class = sub-folder path), ``pairs`` (images/ + masks/) or
            ``flat`` (all files, labels from ``labels``).
        patient_from: Split unit for NIfTI and 2-D files without identifiers: ``stem`` (one patient per file),
            ``parent`` (the containing folder) or ``labels`` (the CSV ``patient`` column).
        force: Read DICOM files without a preamble (``pydicom.dcmread(force=True)``).
        mixed_geometry: A DICOM series mixing orientations/shapes is converted as 2-D slices (``slices``, with a
            warning) or reported as a failure (``error``).
        mask_labels: Names of the mask values (index = value) when the source does not define them.
        encoding: Image member: ``npy`` (float16) or ``png`` (integers on the source grid or a 12-bit grid, about
            3-4x smaller; equal to float16 within its rounding; see ``lvmmed.data.codecs``).
    """

    name: str = ""
    format: str = "nifti"
    modality: str = ""
    organ: str = ""
    center: str = ""
    image_size: int = 224
    axes: list[int] = field(default_factory=lambda: [2])
    slice_step: int = 1
    skip_empty: bool = True
    empty_fraction: float = 0.02
    frame_step: int = 1
    max_frames: int = 0
    ct_window: str = ""
    percentiles: list[float] = field(default_factory=lambda: [0.5, 99.5])
    channels: str = "keep"
    encoding: str = "npy"
    split_fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    split_unit: str = "patient"
    slab_thickness: int = 16
    split_method: str = "rank"
    salt_file: str = ""
    dedupe: bool = True
    shard_maxcount: int = 1000
    shard_maxsize: float = 256e6
    workers: int = 2
    start_method: str = "auto"
    max_failure_fraction: float = 0.1
    labels: str = ""
    labels_file_column: str = "file"
    labels_label_column: str = "label"
    label_pattern: str = ""
    image_glob: str = ""
    exclude_glob: str = ""
    layout: str = "auto"
    patient_from: str = "stem"
    force: bool = False
    mixed_geometry: str = "slices"
    mask_labels: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        FORMATS.check(self.format)
        check_choice(self.channels, CHANNEL_MODES, "channels")
        check_choice(self.split_method, SPLIT_METHODS, "split_method")
        check_choice(self.encoding, ENCODINGS, "encoding")
        check_choice(self.layout, LAYOUTS, "layout")
        check_choice(self.patient_from, PATIENT_FROM, "patient_from")
        check_choice(self.mixed_geometry, ("slices", "error"), "mixed_geometry")
        check_choice(self.start_method, START_METHODS, "start_method")
        check_choice(self.split_unit, SPLIT_UNITS, "split_unit")
        if len(self.split_fractions) != 3 or min(self.split_fractions) < 0 or sum(self.split_fractions) <= 0:
            raise ValueError(f"split_fractions must be 3 non-negative numbers, got {list(self.split_fractions)}")
        if any(a not in (0, 1, 2) for a in self.axes) or not self.axes:
            raise ValueError(f"axes must be a non-empty subset of [0, 1, 2], got {list(self.axes)}")
        if len(self.percentiles) != 2 or not 0 <= self.percentiles[0] < self.percentiles[1] <= 100:
            raise ValueError(f"percentiles must be [low, high] within 0..100, got {list(self.percentiles)}")
        if self.slice_step < 1 or self.frame_step < 1 or self.shard_maxcount < 1 or self.image_size < 0:
            raise ValueError("slice_step, frame_step and shard_maxcount must be >= 1 and image_size >= 0")
        if not 0 <= self.max_failure_fraction <= 1:
            raise ValueError(f"max_failure_fraction must be in [0, 1], got {self.max_failure_fraction}")
