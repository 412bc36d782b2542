"""Catalog of the public datasets LVM-Med pretrained on (Nguyen et al., NeurIPS 2023, arXiv 2306.11925).

The 49 folders of LVM-Med's ``lvm-med-training-data/`` plus well-known datasets of the same families (the paper
counts 55; the missing ones are not listed publicly, so the additions are marked ``lvmmed_folder=None``). Each
entry (:mod:`data_prep.catalog_entries`) gives the modality, organ, reader, licence, homepage and its release's
layout as data (:class:`~data_prep.catalog_release.Release`: images, excludes, masks, labels, patient key,
official split). Nothing is downloaded: ``convert NAME --src DIR`` reads the user's unpacked download; when no
file matches the release's image pattern, :class:`LayoutError` shows the expected layout.
"""

from __future__ import annotations

from pathlib import Path

from .catalog_entries import ENTRIES
from .catalog_release import CatalogEntry, LayoutError, all_files, scan_release

__all__ = ["CATALOG", "ENTRIES", "CatalogEntry", "LayoutError", "check_layout", "get_entry", "print_catalog"]

CATALOG: dict[str, CatalogEntry] = {e.name: e for e in ENTRIES}


def get_entry(name: str) -> CatalogEntry:
    """Looks an entry up by name (case-insensitive, ``-`` = ``_``); unknown names list close matches."""
    key = name.lower().replace("-", "_")
    if key not in CATALOG:
        import difflib

        close = difflib.get_close_matches(key, CATALOG, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise LayoutError(f"'{name}' is not in the catalog.{hint} `python -m data_prep list` shows all entries.")
    return CATALOG[key]


def check_layout(entry: CatalogEntry, src: Path) -> None:
    """Raises :class:`LayoutError` unless some file under ``src`` matches the release's image pattern."""
    src = Path(src)
    if not src.is_dir():
        raise LayoutError(f"{entry.name} expects a folder with layout: {entry.layout}; --src {src} is not a folder")
    if entry.format == "dicom":
        import re

        pattern = re.compile(entry.release.image)
        found = any(pattern.fullmatch(rel) for rel in all_files(src)[0])
    else:
        found = bool(scan_release(src, entry.release).items)
    if not found:
        top = sorted(p.name + ("/" if p.is_dir() else "") for p in src.iterdir())[:12]
        raise LayoutError(
            f"{src} does not look like {entry.name} ({entry.modality}, {entry.organ}).\n"
            f"  expected layout: {entry.layout}\n  missing: no file matches {entry.release.image}\n"
            f"  found at the top level: {', '.join(top) or '(empty folder)'}"
            + (f"\n  note: {entry.notes}" if entry.notes else "")
        )


def print_catalog(verbose: bool = False, modality: str | None = None) -> None:
    """Prints the catalog as a table (``verbose``: layout, release pattern, converter, licence, homepage)."""
    rows = [e for e in ENTRIES if modality is None or e.modality.upper() == modality.upper()]
    print(f"{'name':20s} {'modality':8s} {'organ':22s} {'format':9s} LVM-Med folder")
    for e in rows:
        print(f"{e.name:20s} {e.modality:8s} {e.organ[:22]:22s} {e.format:9s} {e.lvmmed_folder or '(added)'}")
        if verbose:
            r = e.release
            print(f"    layout:   {e.layout}\n    images:   {r.image}")
            if r.masks:
                print(f"    masks:    {', '.join(r.masks)} ({r.mask_merge})")
            if r.labels:
                print(f"    labels:   {r.labels.kind} {r.labels.csv} {r.labels.label_column}".rstrip())
            print(f"    patient:  {r.patient}\n    convert:  {e.config}")
            print(f"    licence:  {e.licence}\n    homepage: {e.homepage}\n    layout source: {r.source or e.homepage}")
            if e.notes:
                print(f"    notes:    {e.notes}")
    n_lvm = sum(1 for e in rows if e.lvmmed_folder)
    print(f"{len(rows)} entries ({n_lvm} LVM-Med folders, {len(rows) - n_lvm} added from the same families)")
