"""Patient-level train/val/test assignment from salted group hashes.

The split unit (``group``) is the patient by default, so no patient crosses splits. Groups are already salted
hashes when they reach this module, so the ordering they induce is secret but reproducible for a given salt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from lvmmed.data.shards import SPLITS


def group_score(group: str) -> float:
    """Maps a (salted-hash) group id to a uniform number in [0, 1)."""
    digest = hashlib.sha256(f"split:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_splits(groups: Iterable[str], fractions: Sequence[float], method: str = "rank") -> dict[str, str]:
    """Assigns every group to ``train``/``val``/``test``.

    Args:
        groups: Split units (salted patient hashes, or slab ids for single-subject templates).
        fractions: Relative sizes of train, val and test (normalised here).
        method: ``rank``: sort groups by :func:`group_score` and cut the sorted list at the fractions; with at
            least 3 groups each split with a non-zero fraction gets at least one group. ``threshold``: cut the
            score itself at the cumulative fractions (independent per group, stable when groups are added).
            Rank splits are stratified by :func:`stratum_of`.

    Returns:
        ``{group: split}``.
    """
    unique = sorted(set(groups))
    total = float(sum(fractions))
    fr = [f / total for f in fractions]
    if method == "threshold":
        out = {}
        for g in unique:
            s = group_score(g)
            out[g] = "train" if s < fr[0] else "val" if s < fr[0] + fr[1] else "test"
        return out
    if method != "rank":
        raise ValueError(f"unknown split method {method!r}")
    strata: dict[str, list[str]] = {}
    for g in unique:
        strata.setdefault(stratum_of(g), []).append(g)
    if len(strata) > 1:
        out: dict[str, str] = {}
        for members in strata.values():
            out.update(_rank_split(members, fr))
        return out
    return _rank_split(unique, fr)


def stratum_of(group: str) -> str:
    """Stratum of a structured group id ``<stratum>-<unit>`` (e.g. ``mni152-a0-slab004`` → ``mni152-a0``).

    Patient pseudonyms (hex, no dash) all share the empty stratum. Rank splits are made per stratum, so each
    template axis and each bundled photo reaches every split.
    """
    return group.rsplit("-", 1)[0] if "-" in group else ""


def _rank_split(groups: list[str], fr: list[float]) -> dict[str, str]:
    ordered = sorted(groups, key=group_score)
    n = len(ordered)
    n_val = round(fr[1] * n)
    n_test = round(fr[2] * n)
    if n >= 3:
        n_val = max(n_val, 1 if fr[1] > 0 else 0)
        n_test = max(n_test, 1 if fr[2] > 0 else 0)
    n_test = min(n_test, n)
    n_val = min(n_val, n - n_test)
    out = {}
    for i, g in enumerate(ordered):
        out[g] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return out


def split_counts(assignment: dict[str, str]) -> dict[str, int]:
    """Number of groups per split (for logs and the manifest)."""
    return {s: sum(1 for v in assignment.values() if v == s) for s in SPLITS}
