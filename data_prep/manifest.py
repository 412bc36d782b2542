"""``manifest.json`` and ``failures.json`` of a shard set (format: ``lvmmed.data.shards``).

The manifest is written last and atomically, so a directory with a manifest is a complete shard set; an
interrupted run leaves only ``progress.json`` and complete shards behind.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from lvmmed.data.shards import FORMAT_VERSION, MANIFEST_NAME, SPLITS

from . import CONVERTER_VERSION
from .writer import atomic_write_text

FAILURES_NAME = "failures.json"


def build_manifest(
    name: str,
    shards: list[dict[str, Any]],
    config: dict[str, Any],
    source: str,
    modality: str | list[str],
    label_names: list[str] | None = None,
    mask_labels: list[str] | None = None,
    failures: int = 0,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assembles the manifest dict (``MANIFEST_FIELDS`` plus optional ``extra`` notes)."""
    counts = {s: sum(int(d["count"]) for d in shards if d["split"] == s) for s in SPLITS}
    counts["total"] = sum(counts.values())
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "converter_version": CONVERTER_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": source,
        "modality": modality,
        "config": config,
        "label_names": label_names,
        "mask_labels": mask_labels,
        "shards": [{k: d[k] for k in ("name", "split", "count", "bytes", "sha256")} for d in shards],
        "counts": counts,
        "failures": int(failures),
        "python": platform.python_version(),
    }
    if extra:
        manifest.update(extra)
    return manifest


def write_manifest(root: Path, manifest: dict[str, Any]) -> Path:
    """Writes ``manifest.json`` atomically (the last file of a conversion).

    An empty set never looks complete: when the manifest counts no sample, no manifest is written (and a stale
    one is removed), so readers and ``verify`` see an unfinished conversion.
    """
    path = Path(root) / MANIFEST_NAME
    if not manifest.get("counts", {}).get("total", 0):
        path.unlink(missing_ok=True)
        return path
    atomic_write_text(path, json.dumps(manifest, indent=1, sort_keys=False))
    return path


def write_failures(root: Path, failures: list[dict[str, str]]) -> Path:
    """Writes the per-file failure report ``[{"file", "reason"}]`` (always, empty when none)."""
    path = Path(root) / FAILURES_NAME
    atomic_write_text(path, json.dumps(failures, indent=1))
    return path
