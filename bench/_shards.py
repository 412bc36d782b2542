"""The shard sets a benchmark reads: the ones given, the demo's ``runs/shards``, or the bundled ones built for it."""

from __future__ import annotations

from pathlib import Path

from bench._common import REPO
from data_prep.bundled import build_bundled


def bundled_shards(arg: str | None, tmp: Path, present: str = "", names: list[str] | None = None) -> Path:
    """Parent directory of the shard sets a benchmark reads.

    Args:
        arg: The script's ``--shards`` value; used as given when set.
        tmp: Scratch directory for a build (``<tmp>/shards``).
        present: Path under ``runs/shards`` whose existence means the sets there are usable ("" = the directory).
        names: Bundled sets to build when nothing is found (``None`` = all of the ``tiny`` profile).
    """
    if arg:
        return Path(arg)
    existing = REPO / "runs" / "shards"
    if (existing / present).exists():
        return existing
    build_bundled(tmp / "shards", profile="tiny", workers=1, names=names)
    return tmp / "shards"
