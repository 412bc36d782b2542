"""``inspect`` and ``verify`` of a shard set: manifest counts, sizes, sha256 and (deep) every sample.

Tars are read with :mod:`tarfile` member by member (never extracted). A member with an absolute or ``..`` name, a
link, or an unexpected extension is reported with a clear message; ``.npy`` members are decoded with
``allow_pickle=False`` and ``meta.json`` must only hold allow-listed fields.
"""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lvmmed.data.shards import (
    META_FIELDS,
    SPLITS,
    ShardFormatError,
    decode_image,
    decode_sample,
    load_manifest,
    sha256_file,
)

from .safety import UnsafeArchiveError, check_member_name

MEMBER_EXTS = ("image.npy", "image.png", "mask.npy", "mask.png", "meta.json")


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_shards`: ``problems`` make it fail, ``warnings`` do not."""

    root: Path
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checked_shards: int = 0
    checked_samples: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        head = "OK" if self.ok else f"FAILED ({len(self.problems)} problems)"
        lines = [f"{head}: {self.root} ({self.checked_shards} shards, {self.checked_samples} samples checked)"]
        lines += [f"  problem: {p}" for p in self.problems] + [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def iter_tar_samples(path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yields ``(key, {ext: bytes})`` of a shard tar, checking member names and contiguity.

    Raises:
        UnsafeArchiveError: absolute / ``..`` member name, or a link / device member.
        ShardFormatError: truncated or corrupt tar, a member without ``key.ext``, or non-contiguous members.
    """
    try:
        with tarfile.open(path, "r") as tar:
            key, members, seen = None, {}, set()
            for info in tar:
                check_member_name(info.name, str(path))
                if not info.isfile():
                    raise UnsafeArchiveError(f"{path}: member {info.name!r} is not a regular file; refusing it")
                base, dot, ext = info.name.partition(".")
                if not dot or "/" in base:
                    raise ShardFormatError(f"{path}: member {info.name!r} is not '<key>.<ext>'")
                if base != key:
                    if key is not None:
                        yield key, members
                    if base in seen:
                        raise ShardFormatError(f"{path}: members of sample {base!r} are not contiguous")
                    seen.add(base)
                    key, members = base, {}
                fh = tar.extractfile(info)
                members[ext] = fh.read() if fh is not None else b""
            if key is not None:
                yield key, members
    except tarfile.TarError as err:
        raise ShardFormatError(f"{path}: truncated or corrupt tar ({type(err).__name__}: {err})") from None
    except EOFError as err:
        raise ShardFormatError(f"{path}: truncated tar (unexpected end of data: {err})") from None


def _check_sample(key: str, members: dict[str, bytes], split: str, where: str) -> list[str]:
    problems = []
    extra = sorted(set(members) - set(MEMBER_EXTS))
    if extra:
        problems.append(f"{where}: sample {key} has unexpected members {extra} (only {MEMBER_EXTS} are allowed)")
    if not ("image.npy" in members or "image.png" in members) or "meta.json" not in members:
        return [*problems, f"{where}: sample {key} lacks image.npy|png or meta.json"]
    try:
        meta = json.loads(members["meta.json"])
        image = decode_image(members, meta)
        mask = decode_sample({"__key__": key, **members})["mask"]
    except (ValueError, json.JSONDecodeError) as err:
        return [*problems, f"{where}: sample {key} does not decode without pickle: {err}"]
    if image.dtype.kind != "f" or image.ndim not in (2, 3):
        problems.append(f"{where}: sample {key} image is {image.dtype} {image.shape}, expected float HxW(x3)")
    unknown = sorted(set(meta) - set(META_FIELDS))
    if unknown:
        problems.append(f"{where}: sample {key} meta has non-allow-listed fields {unknown}")
    if meta.get("split") not in (None, split):
        problems.append(f"{where}: sample {key} says split {meta.get('split')!r} inside a {split} shard")
    if mask is not None and mask.shape != image.shape[:2]:
        problems.append(f"{where}: sample {key} mask {mask.shape} is not on the image grid {image.shape[:2]}")
    return problems


def verify_shards(root: str | Path, deep: bool = True) -> VerifyReport:
    """Checks a shard set against its manifest.

    Args:
        root: Shard directory (with ``manifest.json``).
        deep: Also read every sample (names, contiguity, decoding without pickle, meta allow-list, counts).

    Returns:
        A :class:`VerifyReport`; ``report.ok`` is False on any mismatch.
    """
    report = VerifyReport(Path(root))
    try:
        manifest = load_manifest(root)
    except ShardFormatError as err:
        report.problems.append(str(err))
        return report
    listed = set()
    for shard in manifest.shards:
        name = shard.get("name", "")
        try:
            check_member_name(name, "manifest.json")
        except UnsafeArchiveError as err:
            report.problems.append(str(err))
            continue
        listed.add(name)
        path = manifest.root / name
        if not path.is_file():
            report.problems.append(f"{name}: listed in the manifest but missing")
            continue
        report.checked_shards += 1
        if path.stat().st_size != shard["bytes"]:
            report.problems.append(f"{name}: {path.stat().st_size} bytes, manifest says {shard['bytes']}")
        if sha256_file(path) != shard["sha256"]:
            report.problems.append(f"{name}: sha256 differs from the manifest (corrupted or modified)")
            continue
        if deep:
            n = 0
            try:
                for key, members in iter_tar_samples(path):
                    n += 1
                    report.problems += _check_sample(key, members, shard["split"], name)
            except (ShardFormatError, UnsafeArchiveError) as err:
                report.problems.append(str(err))
            report.checked_samples += n
            if n != shard["count"]:
                report.problems.append(f"{name}: {n} samples, manifest says {shard['count']}")
    counts = manifest.data.get("counts", {})
    if not manifest.shards or sum(manifest.count(split) for split in SPLITS) == 0:
        report.problems.append("the set is empty (no shards or no samples): a conversion that wrote nothing")
    for split in SPLITS:
        if counts.get(split, 0) != manifest.count(split):
            report.problems.append(f"counts[{split}]={counts.get(split)} but shards sum to {manifest.count(split)}")
    for extra in sorted(p.name for p in manifest.root.glob("*.tar*") if p.name not in listed):
        report.warnings.append(f"{extra}: tar file not listed in the manifest (leftover of another run?)")
    return report


def inspect_shards(root: str | Path, n_samples: int = 3) -> str:
    """Human-readable summary: manifest fields, counts per split/label/modality, a few sample metas."""
    manifest = load_manifest(root)
    d = manifest.data
    lines = [
        f"{manifest.name}  ({manifest.root})",
        f"  source:     {d.get('source')}",
        f"  created:    {d.get('created')}  converter {d.get('converter_version')}  format {d.get('format_version')}",
        f"  modality:   {d.get('modality')}",
        f"  counts:     {d.get('counts')}  failures {d.get('failures')}  skipped {d.get('skipped', 0)}",
        f"  shards:     {len(manifest.shards)} ({sum(s['bytes'] for s in manifest.shards) / 1e6:.1f} MB)",
        f"  labels:     {manifest.label_names}",
        f"  mask:       {manifest.mask_labels}",
    ]
    labels: Counter[Any] = Counter()
    shapes: Counter[Any] = Counter()
    examples: list[dict[str, Any]] = []
    for shard in manifest.shards:
        for key, members in iter_tar_samples(manifest.root / shard["name"]):
            meta = json.loads(members["meta.json"])
            labels[(shard["split"], meta.get("label_name"), meta.get("modality"))] += 1
            image = decode_image(members, meta)
            shapes[tuple(image.shape) + (("mask",) if {"mask.npy", "mask.png"} & set(members) else ())] += 1
            if len(examples) < n_samples:
                examples.append({"key": key, **meta})
    lines.append("  split / label / modality:")
    lines += [f"    {s:5s} {lab!s:18s} {mod!s:8s} {n}" for (s, lab, mod), n in sorted(labels.items(), key=str)]
    lines.append(f"  image shapes: {dict(shapes)}")
    lines += [f"  sample: {json.dumps(e, sort_keys=True)}" for e in examples]
    return "\n".join(lines)
