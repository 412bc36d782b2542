"""Expansion of a :class:`BenchmarkConfig` into cells with stable ids.

A *cell* is one downstream run: (task, method column, weight source, seed[, k-shot][, fraction]). Its id is
human-readable and stable across runs (``tissue__vpt-deep__ours_gm__s1``), so a finished cell is found again on
resume; its *fingerprint* hashes everything that defines the run (method key, all overrides, the weight source),
so editing the config re-runs exactly the cells it changed.

Weight sources whose path does not exist are not expanded into cells; they are returned as
:class:`SkippedSource` entries and listed in the report ("skipped: file not found"), so a benchmark config can name
the published LVM-Med checkpoint and still run on machines that do not have it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from downstream.benchmark.config import BenchmarkConfig, WeightSpec
from downstream.registry import is_segmentation, resolve_key
from lvmmed.weight_sources import WeightsNotFoundError, resolve_source

__all__ = ["Cell", "SkippedSource", "expand", "is_segmentation", "source_available"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.@=+-]+")


@dataclass(frozen=True)
class Cell:
    """One run of the matrix.

    Attributes:
        task: Task name.
        method: Column label (unique per config; a scaling variant is ``<label>@<value>``).
        method_key: Registry key passed to downstream.
        weights: Weight-source alias.
        weights_source: ``random`` or a path.
        seed: Seed (also fixes the split / k-shot subset, so cells with equal seeds are paired).
        shot: k-shot per class, or 0 for the full training split.
        fraction: Training fraction, or 1.0.
        overrides: Every ``key=value`` specific to this cell, in application order (config, task, method).
        sweep: Scaling-sweep series name, or "" for a regular column.
        sweep_value: The swept parameter value, or "".
        base_config: Base YAML of the cell's run config ("" = schema defaults).
        task_key: Downstream task key when it differs from the task name ("" = ``task``).
    """

    task: str
    method: str
    method_key: str
    weights: str
    weights_source: str
    seed: int
    shot: int = 0
    fraction: float = 1.0
    overrides: tuple[str, ...] = field(default_factory=tuple)
    sweep: str = ""
    sweep_value: str = ""
    base_config: str = ""
    task_key: str = ""

    @property
    def setting(self) -> str:
        """The data-regime part of the id: ``full``, ``5shot`` or ``frac0.1``."""
        if self.shot:
            return f"{self.shot}shot"
        if self.fraction < 1.0:
            return f"frac{self.fraction:g}"
        return "full"

    @property
    def cell_id(self) -> str:
        """Stable, filesystem-safe id."""
        parts = [self.task, self.method, self.weights]
        if self.setting != "full":
            parts.append(self.setting)
        parts.append(f"s{self.seed}")
        return "__".join(_UNSAFE.sub("-", p) for p in parts)

    @property
    def fingerprint(self) -> str:
        """Hash of everything that defines the run; a stored result with another fingerprint is stale."""
        payload = {k: v for k, v in asdict(self).items() if k not in ("method", "sweep")}
        payload["overrides"] = list(self.overrides)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def as_row(self) -> dict:
        """The identifying columns of ``results.csv``."""
        return {
            "cell_id": self.cell_id,
            "task": self.task,
            "method": self.method,
            "method_key": self.method_key,
            "weights": self.weights,
            "setting": self.setting,
            "seed": self.seed,
            "shot": self.shot,
            "fraction": self.fraction,
            "sweep": self.sweep,
            "sweep_value": self.sweep_value,
        }


@dataclass(frozen=True)
class SkippedSource:
    """A weight source left out of the matrix, with the reason shown in the report."""

    name: str
    source: str
    reason: str


def seed_source(source: str, seed: int) -> str:
    """The weight source of one seed's cells: ``{seed}`` in a source becomes the cell's seed.

    ``runs/demo/pretrain_gm_s{seed}/export`` pairs downstream seed s with pretraining run s, so paired differences
    over seeds include the variation between pretraining runs (not only between downstream splits).
    """
    return source.replace("{seed}", str(seed))


def source_available(spec: WeightSpec, base_dir: Path | None = None, seeds: tuple[int, ...] = ()) -> str | None:
    """Returns None when the weight source can be used (for every seed of ``seeds`` if it holds ``{seed}``), else the
    reason it cannot."""
    if spec.source in ("random", "none", ""):
        return None
    if "{seed}" in spec.source:
        for seed in seeds or (0,):
            one = WeightSpec(spec.name, seed_source(spec.source, seed), spec.note, list(spec.overrides))
            if (reason := source_available(one, base_dir)) is not None:
                return f"seed {seed}: {reason}"
        return None
    source = spec.source
    local = Path(source)
    if not local.is_absolute() and base_dir is not None and not local.exists() and (base_dir / local).exists():
        source = str(base_dir / local)
    try:
        resolve_source(source)  # published names, torchvision:/timm: files, export dirs, hf:// (local cache only)
    except WeightsNotFoundError as err:
        return f"not available: {err}"
    return None


def expand(cfg: BenchmarkConfig, base_dir: Path | None = None) -> tuple[list[Cell], list[SkippedSource]]:
    """Expands the config into its cells (stable order) and the skipped weight sources.

    Order: task, setting, method, weights, seed; the scaling sweeps come last. Settings are the full split, then
    each k-shot, then each fraction.

    Raises:
        ValueError: An unknown method key (checked before any cell runs or any directory is written).
    """
    for key in [m.key for m in cfg.methods] + [s.method for s in cfg.scaling]:
        try:
            resolve_key(key)
        except KeyError as err:
            raise ValueError(f"benchmark {cfg.name!r}: {err.args[0]}") from None
    skipped: list[SkippedSource] = []
    usable: list[WeightSpec] = []
    for spec in cfg.weights:
        reason = source_available(spec, base_dir, tuple(cfg.seeds))
        if reason is None:
            usable.append(spec)
        else:
            skipped.append(SkippedSource(spec.name, spec.source, reason))
    settings: list[tuple[int, float]] = [(0, 1.0)]
    settings += [(k, 1.0) for k in cfg.shots]
    settings += [(0, f) for f in cfg.fractions if f < 1.0]
    by_name = {w.name: w for w in usable}

    cells: list[Cell] = []
    for task in cfg.tasks:
        for shot, fraction in settings:
            for method in cfg.methods:
                if method.tasks and task.name not in method.tasks:
                    continue
                if shot and is_segmentation(method.key, task.task or task.name):
                    continue  # k-shot is a classification regime
                for spec in usable:
                    if method.weights and spec.name not in method.weights:
                        continue
                    for seed in cfg.seeds:
                        cells.append(
                            Cell(
                                task=task.name,
                                method=method.label,
                                method_key=method.key,
                                weights=spec.name,
                                weights_source=seed_source(spec.source, seed),
                                seed=seed,
                                shot=shot,
                                fraction=fraction,
                                overrides=(*cfg.overrides, *task.overrides, *method.overrides, *spec.overrides),
                                base_config=task.base_config or cfg.base_config,
                                task_key=task.task,
                            )
                        )
        for sweep in cfg.scaling:
            alias = sweep.weights or cfg.reference
            if alias not in by_name or (sweep.tasks and task.name not in sweep.tasks):
                continue
            spec = by_name[alias]
            for value in sweep.values:
                for seed in cfg.seeds:
                    cells.append(
                        Cell(
                            task=task.name,
                            method=f"{sweep.label}@{value}",
                            method_key=sweep.method,
                            weights=alias,
                            weights_source=seed_source(spec.source, seed),
                            seed=seed,
                            overrides=(
                                *cfg.overrides,
                                *task.overrides,
                                *sweep.overrides,
                                *spec.overrides,
                                f"{sweep.param}={value}",
                            ),
                            sweep=sweep.label,
                            sweep_value=str(value),
                            base_config=task.base_config or cfg.base_config,
                            task_key=task.task,
                        )
                    )
    ids = [c.cell_id for c in cells]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"cell ids collide: {duplicates[:5]}; give the colliding methods distinct labels")
    return cells, skipped
