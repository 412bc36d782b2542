"""``brain_sector``: a patch task at the pretraining resolution, labelled by coarse anatomy, split by thin slabs.

Built to tell weights apart (issue "evidence that pretraining helps"): the ``tissue`` task labels a patch by the
tissue at its centre, which intensity alone mostly decides, so random features already do well; its shard split
holds out 3 slabs per axis (24 slices at the demo profile), so val and test are small and far apart. Here:

* **Patches at the pretraining resolution.** ``patch_size`` source pixels, fed at ``img_size`` without resizing
  when the two are equal (the demo: 64-px patches of the 96-px slices = the 64-px views of
  ``configs/pretrain/tiny_cpu.yaml``, whose RandomResizedCrop area scale (0.14, 1) covers a 64/96 crop).
* **Labels that need anatomical context.** The class of a patch is the coarse brain *sector* at its centre in MNI
  space: posterior (y < -40 mm) / middle (-40 ≤ y < 5) / anterior (y ≥ 5) × inferior (z < 15 mm) / superior (the
  MNI152 2009a template is AC-PC aligned: y = 0 at the anterior commissure, z = 0 on the AC-PC plane). A patch
  counts only when the tissue mask of the shard (:mod:`data_prep.bundled`) is not background at its centre. The
  sector is a function of position, so telling it from a patch takes the shape around it (ventricles, cerebellum,
  cortex folding, the brain outline), not the intensity of one spot. The sector map is computed on the template's
  voxel grid from its affine (nilearn's MNI152 file, :mod:`lvmmed.data.samples`) and sliced and resized exactly
  like the shard masks (:func:`lvmmed.data.processing.display_slice`, nearest-neighbour resize), so it lines up
  with the shard images (the shapes are checked). Only bundled data: no Debian mricron-data needed.
* **Interleaved thin slabs.** Along each axis, source slice ``i`` lies in slab ``i // (slab_width + slab_gap)``
  when ``i mod (slab_width + slab_gap) < slab_width``; the other ``slab_gap`` slices between two slabs are
  dropped, so no two neighbouring slices sit in different splits. Slabs are dealt round-robin to
  :data:`SLAB_PATTERN` (train, val, train, test: 50/25/25%), so val and test sample the whole brain alike and val
  predicts test. Defaults (8 slices of 1 mm, gap 4 mm) keep every split spread over the whole head while the test
  set stays large (~1000 patches at the demo profile). This split replaces the shard set's own split; it is
  deterministic and independent of the run seed (as is the per-(split, class) cap ``max_per_class``).

Caveats (one subject): across axes, an axial test slab crosses the sagittal and coronal training slices, so the
same tissue is seen from another direction; and self-supervised pretraining reads the mni152 *train* shard split,
which includes slices of this task's test slabs (unlabelled; equally for every pretrained weight, never for
random init). The task measures how well frozen features encode position-in-the-brain context on one template,
not generalisation to new subjects.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from lvmmed.data import samples
from lvmmed.data.processing import display_slice, resize
from lvmmed.data.readers import read_nifti

SECTOR_NAMES = [
    "posterior_inferior", "posterior_superior", "middle_inferior", "middle_superior",
    "anterior_inferior", "anterior_superior",
]  # fmt: skip
Y_CUTS_MM = (-40.0, 5.0)
"""MNI y boundaries posterior | middle | anterior."""
Z_CUT_MM = 15.0
"""MNI z boundary inferior | superior."""
SLAB_PATTERN = ("train", "val", "train", "test")
"""Splits dealt to consecutive slabs of every axis (round-robin)."""


@lru_cache(maxsize=2)
def sector_volume(template: str = "mni152_t1") -> tuple[np.ndarray, tuple[int, ...]]:
    """(sector index per voxel (uint8, :data:`SECTOR_NAMES` order), volume shape) on the template's RAS+ grid."""
    record = read_nifti(samples.path(template), modality="MR")
    affine = np.asarray(record.meta["affine"], dtype=np.float64)
    shape = record.array.shape[:3]
    i, j, k = (np.arange(n, dtype=np.float32) for n in shape)
    grid = np.ix_(i, j, k)
    y = affine[1, 0] * grid[0] + affine[1, 1] * grid[1] + affine[1, 2] * grid[2] + affine[1, 3]
    z = affine[2, 0] * grid[0] + affine[2, 1] * grid[1] + affine[2, 2] * grid[2] + affine[2, 3]
    y_bin = np.digitize(np.broadcast_to(y, shape), Y_CUTS_MM)  # 0 posterior, 1 middle, 2 anterior
    z_bin = (np.broadcast_to(z, shape) >= Z_CUT_MM).astype(np.uint8)
    return (2 * y_bin + z_bin).astype(np.uint8), tuple(shape)


def sector_plane(axis: int, index: int, size: tuple[int, int]) -> np.ndarray:
    """The sector map of one template slice, oriented and resized like the shard masks."""
    volume, _ = sector_volume()
    return resize(display_slice(volume, axis, index), size, is_mask=True)


def slab_split(axis: int, index: int, slab_width: int, slab_gap: int) -> tuple[str, int] | None:
    """``(split, slab)`` of source slice ``index`` along ``axis``, or None for a gap slice."""
    period = slab_width + slab_gap
    if index % period >= slab_width:
        return None
    slab = index // period
    return SLAB_PATTERN[slab % len(SLAB_PATTERN)], slab
