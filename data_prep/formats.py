"""Input formats by name (``format=`` / ``--format``): one :class:`~lvmmed.registry.Registry` of planners.

A planner is ``plan(folder, cfg, labels) -> (tasks, failures, info)``: ``cfg`` is the resolved
:class:`~data_prep.config.ConvertConfig` as a dict, ``labels`` the labels CSV (a path) or None, and
``info["plan"]`` the counts that :class:`data_prep.convert.Plan` prints. The folder planners read their readers'
modules on first use, so that validating a config stays light. A catalog entry's release description replaces the
format's planner (:func:`release_planner`); ``metaimage`` and ``hdf5`` are planned that way without an entry.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lvmmed.registry import Registry

from .catalog_release import Release

PlanResult = tuple[list, list[dict[str, str]], dict[str, Any]]
Planner = Callable[[Path, dict[str, Any], Path | None], PlanResult]

FORMATS: Registry[Planner] = Registry("format", key="format")


def _counted(planned: PlanResult) -> PlanResult:
    from .plan_release import plan_counts_of

    tasks, failures, info = planned
    info["plan"] = plan_counts_of(tasks, failures)
    return tasks, failures, info


def _labels_table(labels: Path | None, cfg: dict[str, Any]) -> dict | None:
    from .plan_files import read_labels_csv

    return read_labels_csv(labels, cfg) if labels is not None else None


@FORMATS.register("dicom")
def plan_dicom_folder(folder: Path, cfg: dict[str, Any], labels: Path | None) -> PlanResult:
    """DICOM files, series, DICOMDIR and SEG objects (:mod:`data_prep.plan_dicom`); no labels CSV."""
    from .plan_dicom import plan_dicom

    return _counted(plan_dicom(folder, cfg, _labels_table(labels, cfg)))


@FORMATS.register("nifti")
def plan_nifti_folder(folder: Path, cfg: dict[str, Any], labels: Path | None) -> PlanResult:
    """NIfTI volumes with optional label maps (:func:`data_prep.plan_files.plan_nifti`)."""
    from .plan_files import plan_nifti

    return _counted(plan_nifti(folder, cfg, _labels_table(labels, cfg)))


@FORMATS.register("images")
def plan_images_folder(folder: Path, cfg: dict[str, Any], labels: Path | None) -> PlanResult:
    """2-D image folders: class folders, image/mask pairs or flat (:func:`data_prep.plan_files.plan_images`)."""
    from .plan_files import plan_images

    return _counted(plan_images(folder, cfg, _labels_table(labels, cfg)))


def release_planner(release: Release) -> Planner:
    """The planner that reads a folder through ``release`` (:func:`data_prep.plan_release.plan_release`)."""

    def plan(folder: Path, cfg: dict[str, Any], labels: Path | None) -> PlanResult:
        from .plan_release import plan_release

        return plan_release(folder, dict(cfg, labels=str(labels) if labels is not None else ""), release)

    return plan


FORMATS.register("metaimage", release_planner(Release(r"(?:.*/)?[^/]+\.(?:mhd|mha)")))
FORMATS.register("hdf5", release_planner(Release(r"(?:.*/)?[^/]+_x\.h5")))
