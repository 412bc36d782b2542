"""What a conversion runs: a :class:`Task` (one input unit) and the worker side of running it.

:func:`run_one` resolves a task's ``processor`` (``"module:function"``), calls it and turns every outcome into
``(index, samples, failures)``; it never raises, so one bad file cannot stop a run. :func:`worker_init` sets up a
pool worker. Both the in-process path of :mod:`data_prep.engine` and the pool of :mod:`data_prep.pool_writer`
use them.
"""

from __future__ import annotations

import importlib
import logging
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .writer import EncodedSample


class SkipInput(Exception):
    """Raised by a processor for an input that is valid but not convertible (no pixels, duplicate, SEG only)."""


@dataclass
class Task:
    """One unit of work for a processor.

    Attributes:
        index: Position in the sorted input list (``source_index`` in ``meta.json``).
        processor: ``"module:function"`` called as ``fn(task, cfg) -> list[EncodedSample]``.
        display: Path relative to the source root, for failure reports only (never written to shards).
        paths: Absolute input paths.
        groups: Split units this task may emit (salted hashes or slab ids).
        params: Processor-specific JSON-safe parameters (labels, modality hints, pseudonyms...).
        splits: ``{group: split}``, filled in by :func:`run_tasks`.
    """

    index: int
    processor: str
    display: str
    paths: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    splits: dict[str, str] = field(default_factory=dict)


def _resolve(processor: str) -> Callable[[Task, dict[str, Any]], list[EncodedSample]]:
    module, _, name = processor.partition(":")
    return getattr(importlib.import_module(module), name)


def run_one(args: tuple[Task, dict[str, Any]]) -> tuple[int, list[EncodedSample], list[dict[str, str]]]:
    """Worker entry: never raises; returns ``(index, samples, failures)``.

    A processor returns a sample list, or ``(samples, failures)`` when some of its files failed (e.g. one corrupt
    slice of a series) while the rest converted.
    """
    task, cfg = args
    try:
        result = _resolve(task.processor)(task, cfg)
        samples, failures = (result[0], list(result[1])) if isinstance(result, tuple) else (result, [])
        failures = [{**f, "reason": relative_reason(str(f.get("reason", "")), task)} for f in failures]
        return task.index, [s.pack() for s in samples], failures  # tar members are encoded here, in the worker
    except SkipInput as err:
        return task.index, [], [{"file": task.display, "kind": "skipped", "reason": relative_reason(str(err), task)}]
    except Exception as err:  # one bad file must not stop the run
        reason = f"{type(err).__name__}: {err}"
        if not str(err):
            reason += " | " + traceback.format_exc(limit=2).replace("\n", " ")
        return task.index, [], [{"file": task.display, "kind": "error", "reason": relative_reason(reason, task)}]


def relative_reason(reason: str, task: Task) -> str:
    """Failure reasons name files relative to the source root (as ``display`` does), never by absolute path."""
    if not task.paths:
        return reason
    shown = task.display.split(" (")[0].rstrip("/")
    first = Path(task.paths[0])
    for candidate in (first, *first.parents):
        text = str(candidate)
        if shown and text.endswith(shown) and len(text) > len(shown):
            return reason.replace(text[: -len(shown)], "")
    return reason.replace(str(first.parent) + "/", "")


def worker_init() -> None:
    """Single-threaded workers (the pool is the parallelism); decoder tracebacks go to failures.json, not stderr."""
    os.environ["OMP_NUM_THREADS"] = "1"
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
