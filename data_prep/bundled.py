"""Shard sets built from the real images that ship inside installed packages (``lvmmed.data.samples``).

Sets (each ``<out_root>/<name>/`` with a ``manifest.json``):

* ``mni152``: MNI152 2009a T1 slices (axes 0, 1, 2; empty slices skipped) with a 4-class tissue mask
  (:data:`TISSUE_LABELS`) from nilearn's GM/WM probability maps on the same grid. ``csf_like`` is *derived*:
  voxels inside the brain envelope (GM+WM ≥ 0.5, closed with 2 iterations of a 6-connected structuring element
  on a 2 mm grid, holes filled, which adds the ventricles and sulcal CSF) whose GM+WM probability is < 0.5.
  It is not a CSF probability map. Single subject ⇒ split unit = slab of ``slab_thickness`` contiguous slices (see the
  ``split_unit`` caveat in :class:`data_prep.config.ConvertConfig`).
* ``colin27`` (needs Debian ``mricron-data``): Colin27 T1 slices with the same 4 tissue labels, obtained by
  resampling the MNI152 2009a tissue labels onto the ch2 grid (``nibabel.processing.resample_from_to``, nearest)
  and keeping them inside the ch2bet brain mask. Approximate: Colin27 and MNI152 2009a are different MNI
  variants (a few mm).
* ``colin27_aal``: Colin27 T1 slices with AAL regions grouped into lobes (:data:`AAL_LOBES`) by the first digit of
  the AAL region code in ``aal.nii.txt`` (2 frontal, 3 insula, 4 limbic, 5 occipital, 6 parietal,
  7 subcortical, 8 temporal, 9 cerebellum incl. vermis).
* ``dicom_modality``, ``color2d`` and ``pretrain_extra`` (pretraining only): see :mod:`data_prep.bundled_sources`.

:data:`PRETRAIN_POOL` lists the sets that pretraining reads (train splits; Colin27 stays out). Every bundled set
uses the fixed public salt :data:`BUNDLED_PUBLIC_SALT`, so splits are identical on every machine.

Profiles: ``tiny`` (64 px, every 8th slice/frame; < 30 s for all sets) and ``demo`` (96 px, every 2nd).
A handful of subjects only: these sets are pipeline/regression fixtures, not evidence of generalisation.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from lvmmed.config import to_dict
from lvmmed.data import samples
from lvmmed.data.readers import ImageRecord, read_nifti

from .bundled_sources import plan_color2d, plan_dicom_modality, plan_pretrain_extra
from .config import ConvertConfig
from .engine import run_tasks
from .records_to_samples import normalize, pseudonym, record_samples, slices
from .tasks import Task

log = logging.getLogger(__name__)

TISSUE_LABELS = ["background", "csf_like", "gm", "wm"]
AAL_LOBES = [
    "background", "frontal", "insula", "limbic", "occipital", "parietal", "subcortical", "temporal", "cerebellum",
]  # fmt: skip
_AAL_DIGIT_TO_LOBE = {2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 6, 8: 7, 9: 8}

PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {
        "image_size": 64,
        "slice_step": 8,
        "frame_step": 8,
        "max_frames": 16,
        "tile_grid": {"retina": 8, "ihc": 4},
    },
    "demo": {
        "image_size": 96,
        "slice_step": 2,
        "frame_step": 2,
        "max_frames": 0,
        "tile_grid": {"retina": 12, "ihc": 6},
    },
}
TEMPLATE_SETS = ("mni152", "colin27", "colin27_aal")
SOURCE_SETS = ("dicom_modality", "color2d", "pretrain_extra")
PRETRAIN_POOL = ("mni152", "dicom_modality", "color2d", "pretrain_extra")
"""The bundled pretraining pool: every bundled image source except Colin27 (the region/OOD test brain); their
*train* splits are read (``pretrain_extra`` is train only)."""
BUNDLED_PUBLIC_SALT = "lvmmed-bundled-public-data-v1"
"""The fixed, public de-identification salt of the bundled sets. Their sources are public test files with no real
patients, so pseudonyms need no secret; a fixed salt makes the patient hashes, hence the splits and every number
computed from them, identical on every machine. Private collections keep the private machine salt."""
BUNDLED_SETS = TEMPLATE_SETS + SOURCE_SETS
_NEEDS = {"colin27": "mricron-data", "colin27_aal": "mricron-data"}


def tissue_labels(gm: np.ndarray, wm: np.ndarray, closing: int = 2) -> np.ndarray:
    """4-class tissue map (0 bg, 1 csf_like, 2 gm, 3 wm) from GM/WM probability maps in [0, 1].

    The brain envelope is computed on a 2x subsampled grid (8x fewer voxels; same result at the scale of
    sulci): GM+WM ≥ 0.5, ``closing`` iterations of binary closing (≈ 2·closing mm), holes filled (ventricles),
    then repeated back to full resolution. ``csf_like`` = envelope minus GM/WM.
    """
    from scipy import ndimage

    tissue = (gm + wm) >= 0.5
    coarse = ndimage.binary_fill_holes(ndimage.binary_closing(tissue[::2, ::2, ::2], iterations=closing))
    envelope = coarse.repeat(2, 0).repeat(2, 1).repeat(2, 2)[: gm.shape[0], : gm.shape[1], : gm.shape[2]]
    labels = np.zeros(gm.shape, dtype=np.uint8)
    labels[envelope & ~tissue] = 1
    labels[tissue & (gm >= wm)] = 2
    labels[tissue & (wm > gm)] = 3
    return labels


def aal_lobe_lut() -> np.ndarray:
    """Lookup table AAL value → lobe index (:data:`AAL_LOBES`) from the codes in ``aal.nii.txt``."""
    lut = np.zeros(256, dtype=np.uint8)
    for line in samples.path("aal_labels").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].isdigit() and parts[2].isdigit():
            lut[int(parts[0])] = _AAL_DIGIT_TO_LOBE.get(int(parts[2][0]), 0)
    return lut


@lru_cache(maxsize=4)
def _template(kind: str) -> ImageRecord:
    """A template T1 volume (RAS+, via ``read_nifti``) with its label mask attached."""
    if kind == "mni152":
        record = read_nifti(samples.path("mni152_t1"), modality="MR")
        gm = read_nifti(samples.path("mni152_gm")).array.astype(np.float32) / 255
        wm = read_nifti(samples.path("mni152_wm")).array.astype(np.float32) / 255
        mask = tissue_labels(gm, wm)
    elif kind == "colin27":
        import nibabel as nib
        from nibabel.processing import resample_from_to

        record = read_nifti(samples.path("colin27_t1"), modality="MR")
        brain = read_nifti(samples.path("colin27_bet")).array > 0
        mni = _template("mni152")
        mni_labels = nib.Nifti1Image(mni.mask, np.asarray(mni.meta["affine"]))
        target = (record.array.shape, np.asarray(record.meta["affine"]))
        mask = np.asarray(resample_from_to(mni_labels, target, order=0).dataobj, dtype=np.uint8)
        mask[~brain] = 0
    elif kind == "colin27_aal":
        record = read_nifti(samples.path("colin27_t1"), samples.path("aal"), modality="MR")
        mask = aal_lobe_lut()[record.mask.astype(np.int64)]
    else:
        raise KeyError(kind)
    return ImageRecord(record.array, "volume", record.meta, {}, mask=mask)


def _base_meta(p: dict[str, Any], index: int) -> dict[str, Any]:
    return {
        "dataset": p["dataset"], "modality": "MR", "organ": "brain", "center": p["center"], "slab_prefix": p["center"],
        "patient": p["patient"], "volume": p["patient"], "source_index": index,
        "label": None, "label_name": None, "mask_labels": p["mask_labels"],
    }  # fmt: skip


def process_template(task: Task, cfg: dict[str, Any]) -> list:
    """Worker: slices one template volume into samples (mask carried along, slab groups)."""
    record = _template(task.params["template"])
    return record_samples(record, cfg, _base_meta(task.params, task.index), f"i{task.index:06d}", task.splits)


def plan_template(name: str, cfg: dict[str, Any], repeat: int = 1) -> tuple[list[Task], dict[str, Any]]:
    """Tasks for one template set (``repeat`` > 1 duplicates the volume, for benchmarks only)."""
    center = "mni152" if name == "mni152" else "colin27"
    mask_labels = AAL_LOBES if name == "colin27_aal" else TISSUE_LABELS
    record = _template(name)
    normalized = ImageRecord(normalize(record.array, "MR", cfg)[0], "volume", record.meta, {})
    thickness = int(cfg["slab_thickness"])
    groups = sorted({f"{center}-a{it.axis}-slab{it.index // thickness:03d}" for it in slices(normalized, cfg)})
    patient = pseudonym(f"template:{center}", cfg)
    params = {"template": name, "dataset": name, "center": center, "patient": patient, "mask_labels": mask_labels}
    path = str(samples.path("mni152_t1" if center == "mni152" else "colin27_t1"))
    tasks = [
        Task(i, "data_prep.bundled:process_template", f"{name}.nii.gz", [path], groups, dict(params))
        for i in range(repeat)
    ]
    info = {"modality": "MR", "mask_labels": mask_labels, "label_names": None, "source": _TEMPLATE_SOURCES[name]}
    return tasks, info


_TEMPLATE_SOURCES = {
    "mni152": "MNI ICBM152 2009a symmetric T1 + GM/WM probability maps (nilearn wheel; MNI/McConnell notice); "
    "tissue mask derived (csf_like = brain envelope minus GM/WM); split unit = slab (single subject)",
    "colin27": "Colin27 ch2 T1 + ch2bet (Debian mricron-data); tissue labels = MNI152 2009a GM/WM resampled to "
    "the ch2 grid inside ch2bet (approximate, different MNI variants); split unit = slab (single subject)",
    "colin27_aal": "Colin27 ch2 T1 + AAL atlas grouped into lobes by region code (Debian mricron-data; AAL free "
    "for research); split unit = slab (single subject)",
}


def profile_config(profile: str, name: str, workers: int = 1) -> dict[str, Any]:
    """Resolved :class:`ConvertConfig` dict for one bundled set under a profile."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    prof = PROFILES[profile]
    cfg = ConvertConfig(
        name=name,
        format="dicom" if name == "dicom_modality" else "images" if name == "color2d" else "nifti",
        image_size=prof["image_size"],
        axes=[0, 1, 2] if name in (*TEMPLATE_SETS, "pretrain_extra") else [2],
        slice_step=prof["slice_step"],
        frame_step=prof["frame_step"],
        max_frames=prof["max_frames"],
        channels="grey" if name in ("dicom_modality", "pretrain_extra") else "keep",
        split_unit="slab" if name in TEMPLATE_SETS else "patient",
        split_fractions=[1.0, 0.0, 0.0] if name == "pretrain_extra" else [0.8, 0.1, 0.1],
        shard_maxcount=200,
        workers=workers,
        max_failure_fraction=0.5,
    )
    out = to_dict(cfg)
    out["profile"] = profile
    out["tile_grid"] = dict(prof["tile_grid"])
    out["public_salt"] = BUNDLED_PUBLIC_SALT
    return out


def build_bundled(
    out_root: str | Path,
    profile: str = "tiny",
    workers: int = 1,
    names: list[str] | None = None,
    overwrite: bool = False,
    progress: bool = False,
    encoding: str = "npy",
) -> dict[str, Path]:
    """Converts the bundled real data into shard sets ``out_root/<name>/``.

    Args:
        out_root: Parent directory of the sets.
        profile: ``tiny`` (tests: 64 px, sparse) or ``demo`` (96 px, denser).
        workers: Worker processes per set.
        names: Subset of :data:`BUNDLED_SETS` (default: all whose sources are installed).
        overwrite: Rebuild sets even when a complete identical set exists (otherwise resumed/skipped).
        progress: Show tqdm bars.
        encoding: Image encoding, ``npy`` or ``png`` (:class:`ConvertConfig` ``encoding``).

    Returns:
        ``{name: directory}`` of the sets that were built (sets whose optional source is missing are left out,
        with a log message; asking for them explicitly raises).

    Raises:
        MissingSampleError: An explicitly requested set needs an uninstalled source.
        ValueError: Unknown set or profile name.
    """
    explicit = names is not None
    names = list(BUNDLED_SETS if names is None else names)
    unknown = sorted(set(names) - set(BUNDLED_SETS))
    if unknown:
        raise ValueError(f"unknown bundled set(s) {unknown}; known: {list(BUNDLED_SETS)}")
    built: dict[str, Path] = {}
    for name in names:
        need = _NEEDS.get(name)
        if need and not samples.source_available(need):
            if explicit:
                samples.SOURCES[need].root()  # raises MissingSampleError with the install hint
            log.info("skipping bundled set %s: %s not installed (%s)", name, need, samples.SOURCES[need].install)
            continue
        cfg = {**profile_config(profile, name, workers), "encoding": encoding}
        if name in TEMPLATE_SETS:
            tasks, info = plan_template(name, cfg)
        elif name == "dicom_modality":
            tasks, info = plan_dicom_modality(cfg)
        elif name == "pretrain_extra":
            tasks, info = plan_pretrain_extra(cfg)
        else:
            tasks, info = plan_color2d(cfg)
        result = run_tasks(
            tasks, cfg, Path(out_root) / name, name=name, source=info["source"], modality=info["modality"],
            label_names=info["label_names"], mask_labels=info["mask_labels"], workers=workers,
            overwrite=overwrite, progress=progress,
        )  # fmt: skip
        if result.manifest["counts"]["total"] == 0:
            raise RuntimeError(f"bundled set {name} produced no samples; failures: {result.failures[:5]}")
        built[name] = result.root
    return built
