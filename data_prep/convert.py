"""``convert``: any collection (``--format``) or a catalog entry (``NAME``) → one shard set.

Steps: resolve the typed :class:`~data_prep.config.ConvertConfig` (catalog defaults < ``--config`` YAML <
``key=value``), extract an archive ``--src`` safely, check a catalog entry's layout, plan the tasks (a catalog
entry's release description through :mod:`data_prep.plan_release`; ``--format`` alone through
:mod:`data_prep.plan_dicom` / :mod:`data_prep.plan_files`), print the :class:`Plan` (``--dry-run`` stops here),
run the tasks (:func:`data_prep.engine.run_tasks`), and decide the exit status from the failure fraction.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lvmmed.config import ConfigError, load_config, to_dict
from lvmmed.data.shards import MANIFEST_NAME
from lvmmed.errors import format_error

from .config import ConvertConfig
from .engine import ERROR_KINDS, RunResult, run_tasks
from .formats import FORMATS, release_planner
from .safety import extract_archive, is_archive

PROG = "python -m data_prep"

log = logging.getLogger(__name__)

# Keys of the generic folder planners; a catalog entry's release description replaces them (never ignored silently).
_FOLDER_KEYS = {"label_pattern": "", "image_glob": "", "exclude_glob": "", "layout": "auto", "patient_from": "stem"}


def resolve_config(
    entry_overrides: dict[str, Any] | None = None, yaml_path: Path | None = None, overrides: list[str] | None = None
) -> ConvertConfig:
    """Defaults < catalog entry < YAML < ``key=value`` (unknown keys and bad values are :class:`ConfigError`)."""
    from omegaconf import DictConfig, OmegaConf

    items = [f"{k}={_yaml_value(v)}" for k, v in (entry_overrides or {}).items()]
    if yaml_path is not None:
        if not Path(yaml_path).is_file():
            raise ConfigError(f"Config file not found: {yaml_path}")
        loaded = OmegaConf.load(yaml_path)
        if not isinstance(loaded, DictConfig):
            raise ConfigError(f"{yaml_path} must hold a mapping of ConvertConfig keys")
        items += [f"{k}={_yaml_value(v)}" for k, v in OmegaConf.to_container(loaded).items()]
    return load_config(ConvertConfig, None, [*items, *(overrides or [])])


def _yaml_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(_yaml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'" if value else "''"
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def prepare_source(src: Path, out: Path) -> tuple[Path, Path | None]:
    """Returns ``(folder to read, extraction root to delete afterwards or None)``.

    An archive ``src`` is extracted safely next to ``out``; when it holds a single top-level folder (the usual
    packaging), that folder is the one read.
    """
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"--src {src} does not exist")
    if not is_archive(src):
        return src, None
    dest = out.parent / f".{out.name}.src"
    log.info("extracting %s into %s", src, dest)
    extract_archive(src, dest)
    entries = [p for p in dest.iterdir() if not p.name.startswith(".")]
    return (entries[0] if len(entries) == 1 and entries[0].is_dir() else dest), dest


@dataclass
class Plan:
    """What a conversion will do, counted before any pixel is read (printed first; ``--dry-run`` stops here)."""

    name: str
    format: str
    src: str
    counts: dict[str, Any]
    failures: list[dict[str, str]] = field(default_factory=list)
    split_method: str = "rank"

    def summary(self) -> str:
        """The plan as a few lines of text."""
        c = self.counts
        lines = [f"plan for {self.name} ({self.format}) under {self.src}:",
                 f"  inputs:  {c['inputs']} ({c['images']} images)",
                 f"  masks:   {c['masks_paired']} paired, {c['missing_masks']} missing (missing_mask)"]  # fmt: skip
        if c.get("classes"):
            classes = ", ".join(f"{k} {v}" for k, v in c["classes"].items())
            lines.append(f"  classes: {len(c['classes'])}: {classes} (unlabelled {c.get('unlabelled') or 0})")
        else:
            lines.append("  classes: none")
        lines.append(f"  patients: {c['patients']}")
        official = c.get("official_splits")
        lines.append("  official splits: " + (", ".join(f"{k} {v}" for k, v in official.items()) if official else
                                              "none") + f" (split_method={self.split_method})")  # fmt: skip
        if c.get("ignored"):
            lines.append(f"  ignored files: {c['ignored']} (e.g. {', '.join(c['ignored_examples'][:3])})")
        other = [f for f in self.failures if f["kind"] != "missing_mask"]
        if other:
            lines.append(f"  unreadable or skipped while planning: {len(other)}")
        lines += [f"  note: {n}" for n in c.get("notes", [])[:5]]
        return "\n".join(lines)


def convert(
    src: str | Path,
    out: str | Path,
    cfg: ConvertConfig,
    source: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    catalog_name: str | None = None,
    dry_run: bool = False,
    show_plan: Callable[[str], None] | None = None,
) -> RunResult | Plan:
    """Converts one collection with a resolved config.

    Args:
        src: Folder, single file, or archive.
        out: Output shard directory.
        cfg: Resolved config (``cfg.name`` defaults to the source folder name).
        source: Free-text source description for the manifest (default: catalog entry or format).
        overwrite: Replace a previous different run in ``out``.
        progress: tqdm bar.
        catalog_name: Catalog entry name (its release layout drives the planning).
        dry_run: Plan only: return the :class:`Plan` and write nothing.
        show_plan: Called with the plan's text before the conversion starts (the CLI prints it).

    Raises:
        LayoutError: A catalog entry's images are missing (message shows the expected layout).
        ConfigError: A labels CSV for a format that cannot use it, or an unusable split method.
        ValueError / FileNotFoundError: Unreadable archive or missing ``src``.
    """
    out = Path(out)
    folder, extracted = prepare_source(Path(src), out)
    try:
        return _convert_folder(folder, Path(src), out, cfg, source, overwrite, progress, catalog_name, dry_run,
                               show_plan)  # fmt: skip
    finally:
        if extracted is not None:  # an extracted archive: re-extracted on a re-run, never kept
            shutil.rmtree(extracted, ignore_errors=True)


def _labels_path(folder: Path, labels: str) -> Path:
    path = Path(labels) if Path(labels).is_absolute() else folder / labels
    if not path.is_file() and Path(labels).is_file():
        path = Path(labels)
    if not path.is_file():
        raise FileNotFoundError(f"labels CSV {labels} not found")
    return path


def _plan(folder: Path, cfg: ConvertConfig, cfg_dict: dict[str, Any], entry) -> tuple[list, list, dict]:
    """Plans with the catalog entry's release description, else with the planner registered for ``cfg.format``."""
    if cfg.labels and cfg.format == "dicom":
        raise ConfigError("a labels CSV cannot be used with DICOM input (no header field to join it on); "
                          "remove labels= / --labels")  # fmt: skip
    if entry is not None and cfg.format != "dicom":
        unused = [k for k, default in _FOLDER_KEYS.items() if getattr(cfg, k) != default]
        if unused:
            raise ConfigError(
                f"{', '.join(unused)}: {entry.name}'s release description says which files are images, masks, "
                "labels and patients; these keys apply to --format without a catalog NAME"
            )
    planner = release_planner(entry.release) if entry is not None else FORMATS.get(cfg.format)
    return planner(folder, cfg_dict, _labels_path(folder, cfg.labels) if cfg.labels else None)


def _plan_for_manifest(counts: dict[str, Any]) -> dict[str, Any]:
    """The plan's counts only: file names (examples, notes) stay out of the shard set (folders may name people)."""
    return {k: v for k, v in counts.items() if k not in ("ignored_examples", "notes")}


def _convert_folder(
    folder: Path,
    src: Path,
    out: Path,
    cfg: ConvertConfig,
    source: str | None,
    overwrite: bool,
    progress: bool,
    catalog_name: str | None,
    dry_run: bool = False,
    show_plan: Callable[[str], None] | None = None,
) -> RunResult | Plan:
    from .catalog import check_layout, get_entry
    from .manifest import write_failures, write_manifest

    entry = get_entry(catalog_name) if catalog_name else None
    if entry is not None:
        check_layout(entry, folder)
    cfg_dict = to_dict(cfg)
    # DICOM exports often name folders and files after the patient: without --name the set is called "dicom"
    # (no path text reaches a shard's meta or manifest); other formats take the folder's name.
    default_name = "dicom" if cfg.format == "dicom" else Path(src).name.split(".")[0]
    cfg_dict["name"] = cfg.name or (entry.name if entry else default_name)
    if cfg.labels:  # the manifest keeps the file name only: folder names may identify people
        cfg_dict["labels"] = Path(cfg.labels).name
    tasks, plan_failures, info = _plan(folder, cfg, cfg_dict, entry)
    plan = Plan(cfg_dict["name"], cfg.format, str(src), info["plan"], plan_failures, cfg.split_method)
    if show_plan is not None:
        show_plan(plan.summary())
    if dry_run:
        return plan
    if not tasks and not plan_failures:
        hint = f" (expected layout: {entry.layout})" if entry else ""
        raise FileNotFoundError(f"no {cfg.format} inputs found under {src}{hint}")
    description = source or (f"{entry.name}: {entry.homepage} ({entry.licence})" if entry else f"{cfg.format} folder")
    result = run_tasks(
        tasks, cfg_dict, out, name=cfg_dict["name"], source=description, modality=info["modality"],
        label_names=info.get("label_names"), mask_labels=info.get("mask_labels"), workers=cfg.workers,
        overwrite=overwrite, progress=progress, extra_manifest={"plan": _plan_for_manifest(info["plan"])},
    )  # fmt: skip
    if plan_failures and not result.already_complete:
        result.failures = plan_failures + result.failures
        plan_errors = sum(1 for f in plan_failures if f["kind"] in ERROR_KINDS)  # files that never became tasks
        result.n_tasks += plan_errors
        if result.failed_files is not None:
            result.failed_files += plan_errors
        write_failures(out, result.failures)
        result.manifest["input_files"], result.manifest["failed_files"] = result.n_tasks, result.failed_files
        result.manifest["failures"] = len(result.errors)
        result.manifest["skipped"] = len(result.failures) - len(result.errors)
        if (out / MANIFEST_NAME).is_file():
            write_manifest(out, result.manifest)
    return result


def convert_cli(args: argparse.Namespace) -> int:
    """``python -m data_prep convert ...``; returns the exit status."""
    from .catalog import get_entry

    entry = get_entry(args.name) if args.name else None
    if entry is None and args.format is None:
        raise ConfigError(
            f"give a catalog NAME (see `python -m data_prep list`) or --format {{{','.join(FORMATS.names())}}}"
        )
    entry_overrides = dict(entry.config) if entry else {}
    if args.format:
        entry_overrides["format"] = args.format
    overrides = list(args.overrides)
    if args.labels:
        overrides.append(f"labels={_yaml_value(str(Path(args.labels).resolve()))}")
    if args.dataset_name:
        overrides.append(f"name={_yaml_value(args.dataset_name)}")
    if args.workers is not None:
        overrides.append(f"workers={args.workers}")
    cfg = resolve_config(entry_overrides, args.config, overrides)
    result = convert(args.src, args.out, cfg, overwrite=args.overwrite, progress=not args.quiet,
                     catalog_name=args.name, dry_run=args.dry_run, show_plan=print)  # fmt: skip
    if isinstance(result, Plan):
        print("dry run: nothing was written")
        return 0
    return report(result, cfg.max_failure_fraction)


def report(result: RunResult, max_failure_fraction: float) -> int:
    """Prints a one-screen summary; returns 1 when failures exceed the allowed fraction or nothing was written."""
    counts = result.manifest["counts"]
    state = "already complete" if result.already_complete else f"{result.seconds:.1f} s"
    print(
        f"{result.manifest['name']}: {counts['total']} samples (train {counts['train']}, val {counts['val']}, "
        f"test {counts['test']}) in {len(result.manifest['shards'])} shards -> {result.root} [{state}]"
    )
    if result.resumed:
        print(f"resumed: kept {result.resumed} samples from completed shards")
    if result.failures:
        print(f"{len(result.errors)} failed and {len(result.failures) - len(result.errors)} skipped inputs "
              f"(details: {result.root / 'failures.json'})")  # fmt: skip
        for f in result.failures[:5]:
            print(f"  [{f['kind']}] {f['file']}: {f['reason'][:200]}")
    if result.errors:
        from collections import Counter

        kinds = Counter(f["kind"] for f in result.errors)
        print("failure kinds: " + ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items())))
    if counts["total"] == 0:
        print(format_error(PROG, "no samples were written", f"see {result.root / 'failures.json'} for why each "
                           "input failed"), file=sys.stderr)  # fmt: skip
        return 1
    if result.failure_fraction > max_failure_fraction:
        print(format_error(PROG, f"{result.failure_fraction:.1%} of inputs failed (> max_failure_fraction "
                           f"{max_failure_fraction:.1%})", f"see {result.root / 'failures.json'}; fix the inputs or "
                           "raise max_failure_fraction=…"), file=sys.stderr)  # fmt: skip
        return 1
    return 0
