"""Slice geometry: sort 2-D planes along the slice normal and build a RAS+ volume with nibabel.

DICOM positions are in LPS patient space. A plane's column index ``i`` moves along the row direction cosine
``IOP[:3]`` in steps of ``PixelSpacing[1]``, its row index ``j`` along ``IOP[3:]`` in steps of ``PixelSpacing[0]``
(PS3.3 C.7.6.2.1.1). Slices are ordered by projecting ``ImagePositionPatient`` on the normal
``IOP[:3] x IOP[3:]`` (never by InstanceNumber, a known trap: imageio#347, rse-panimg#126, SimpleITK#2292).
The voxel array is stored as (i, j, k), the LPS affine flipped to RAS, and ``nib.as_closest_canonical`` gives
RAS+ voxel order, the same convention as :func:`lvmmed.data.readers.read_nifti`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import nibabel as nib
import numpy as np

from lvmmed.data.readers.record import ReaderError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
ORIENTATION_TOLERANCE = 1e-4
NONUNIFORM_TOLERANCE = 0.01  # relative spread of slice steps above which we warn (MONAI also only warns)
GAP_RATIO = 1.5  # largest/smallest slice step above which the series is not one contiguous stack (error)


def slice_normal(orientation: np.ndarray) -> np.ndarray:
    """Unit normal of a plane from its 6 direction cosines."""
    normal = np.cross(orientation[:3], orientation[3:])
    norm = np.linalg.norm(normal)
    if norm < 1e-6:
        raise ValueError("degenerate ImageOrientationPatient (parallel direction cosines)")
    return normal / norm


def check_same_orientation(orientations: Sequence[np.ndarray], where: str) -> np.ndarray:
    """Returns the common orientation or raises :class:`ReaderError` for a mixed-orientation series."""
    first = orientations[0]
    distinct = [o for o in orientations if not np.allclose(o, first, atol=ORIENTATION_TOLERANCE)]
    if distinct:
        n = 1 + len({tuple(np.round(o, 3)) for o in distinct})
        raise ReaderError(
            where,
            f"series mixes {n} slice orientations (ImageOrientationPatient), e.g. a localizer or radial "
            f"acquisition; it cannot be stacked into one volume (read it with mixed_geometry='slices')",
        )
    return first


def stack_volume(
    planes: Sequence[np.ndarray],
    positions: Sequence[np.ndarray],
    orientation: np.ndarray,
    pixel_spacing: tuple[float, float],
    where: str,
) -> tuple[np.ndarray, dict]:
    """Sorts (H, W) planes along the slice normal and returns a RAS+ (X, Y, Z) array + geometry meta.

    Args:
        planes: Same-shape 2-D arrays (rows, columns).
        positions: ImagePositionPatient of each plane (LPS, mm).
        orientation: The common ImageOrientationPatient (6 cosines).
        pixel_spacing: (row spacing, column spacing) in mm.
        where: File or series description used in error messages.

    Returns:
        ``(array, meta)`` with ``meta`` keys ``affine`` (4x4 nested list, RAS), ``spacing`` ([x, y, z] mm),
        ``slice_positions`` (sorted projections on the normal, mm) and ``slice_step`` (mean, mm).

    Raises:
        ReaderError: shapes differ, two planes share one position, or the steps vary by more than
            :data:`GAP_RATIO` (gaps, several stacks in one series).
    """
    shapes = {p.shape for p in planes}
    if len(shapes) != 1:
        raise ReaderError(where, f"series mixes image shapes {sorted(shapes)}; cannot stack into one volume")
    normal = slice_normal(orientation)
    along = np.array([float(np.dot(p, normal)) for p in positions])
    order = np.argsort(along, kind="stable")
    along = along[order]
    steps = np.diff(along)
    if (steps < 1e-3).any():
        raise ReaderError(
            where,
            "several slices share one position along the slice normal (echoes, phases or repeated stacks in "
            "one series); split the series before stacking",
        )
    step = float(steps.mean())
    if steps.max() > GAP_RATIO * steps.min():
        raise ReaderError(
            where,
            f"slice steps range {steps.min():.3f}..{steps.max():.3f} mm: gaps or several stacks in one series, "
            "not one contiguous volume",
        )
    if steps.max() - steps.min() > NONUNIFORM_TOLERANCE * step:
        warnings.warn(
            f"{where}: non-uniform slice spacing ({steps.min():.3f}..{steps.max():.3f} mm); using the mean "
            f"{step:.3f} mm for the affine",
            stacklevel=3,
        )
    first = np.asarray(positions[order[0]], dtype=np.float64)
    last = np.asarray(positions[order[-1]], dtype=np.float64)
    row_spacing, col_spacing = pixel_spacing
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = orientation[:3] * col_spacing
    affine_lps[:3, 1] = orientation[3:] * row_spacing
    affine_lps[:3, 2] = (last - first) / (len(planes) - 1)
    affine_lps[:3, 3] = first
    data = np.stack([planes[i].T for i in order], axis=-1)  # (columns, rows, slices) = (i, j, k)
    canonical = nib.as_closest_canonical(nib.Nifti1Image(data, LPS_TO_RAS @ affine_lps))
    array = np.ascontiguousarray(np.asanyarray(canonical.dataobj))
    meta = {
        "affine": canonical.affine.tolist(),
        "spacing": [float(z) for z in canonical.header.get_zooms()[:3]],
        "slice_positions": along.tolist(),
        "slice_step": step,
        "orientation": "".join(nib.aff2axcodes(canonical.affine)),
    }
    return array, meta
