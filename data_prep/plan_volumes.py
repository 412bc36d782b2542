"""Volume tasks at axis granularity for small collections, and the worker-side cache that lets them share reads.

With one task per volume, a worker sits idle while another finishes the last volume; a volume sliced along
several axes then becomes one task per axis, so the workers stay busy until the last slices. The price is a second
read + normalisation of a volume when its axis tasks land on two workers (about 0.1 s for a 1 mm brain, against
about 0.35 s of slicing at 224 px, measured here). Collections of fewer than :data:`AXIS_TASKS_BELOW` volumes are
split entirely; larger ones split only their last :data:`TAIL_AXIS_VOLUMES` volumes, where the idle tail is (with
9 volumes on 2 workers and one task per volume, one worker converted the 9th alone: 11% of the pool's time idle,
``bench/data_prep.py`` ``cores_used`` 1.78). The tasks of a volume are consecutive; each worker keeps the last
volume it read and normalised (:func:`prepared_volume`). Samples keep the keys and order of a per-volume task (key
prefix = the file's index), so the shards are the same either way. Which volumes are split depends on the input
only, never on the number of workers (the task list is part of the resume fingerprint).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from lvmmed.data.readers import ImageRecord

from .records_to_samples import normalize_record
from .tasks import Task

AXIS_TASKS_BELOW = 8  # volumes: fewer than this are split into axis tasks (a property of the input, not of workers)
TAIL_AXIS_VOLUMES = 2  # the last volumes of a larger collection, split into axis tasks: the tail is 1/3 volume
_CACHE: dict[tuple, tuple[ImageRecord, tuple[ImageRecord, list[float]]]] = {}


def axis_tasks(first_index: int, file_index: int, processor: str, display: str, paths: list[str], groups: list[str],
               params: dict[str, Any], axes: list[int], n_volumes: int,
               volume_index: int | None = None) -> list[Task]:  # fmt: skip
    """One task per slicing axis (``params["axes"]``) when ``n_volumes < AXIS_TASKS_BELOW`` or the volume is one of
    the last ``TAIL_AXIS_VOLUMES`` (``volume_index``: its rank among the volumes, default ``file_index``), else one
    task."""
    base = dict(params, source_index=file_index)
    rank = file_index if volume_index is None else volume_index
    if n_volumes >= AXIS_TASKS_BELOW and rank < n_volumes - TAIL_AXIS_VOLUMES:
        return [Task(first_index, processor, display, list(paths), list(groups), dict(base, axes=list(axes)))]
    return [
        Task(first_index + k, processor, display, list(paths), list(groups), dict(base, axes=[a], axis_rank=k))
        for k, a in enumerate(axes)
    ]


def prepared_volume(
    task: Task, cfg: dict[str, Any], modality: str, read: Callable[[], ImageRecord]
) -> tuple[ImageRecord, tuple[ImageRecord, list[float]]]:
    """``(record, normalize_record(record))`` of the task's volume, from this worker's one-volume cache."""
    stats = [(p, os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in task.paths if p and os.path.exists(p)]
    labels = tuple(task.params.get("masks") or [task.params.get("label_path")])
    norm = (cfg.get("ct_window"), tuple(cfg.get("percentiles", ())))
    key = (tuple(stats), labels, modality, norm)
    if key not in _CACHE:
        _CACHE.clear()  # one volume per worker: memory stays bounded by the largest volume
        record = read()
        _CACHE[key] = (record, normalize_record(record, cfg, modality))
    return _CACHE[key]


def first_axis_only(task: Task, record: ImageRecord, cfg: dict[str, Any]) -> bool:
    """A 2-D record has no axes: only the task of the first axis emits it (no duplicates)."""
    return record.kind == "volume" or task.params.get("axis_rank", 0) == 0
