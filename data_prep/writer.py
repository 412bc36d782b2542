"""Atomic, resumable tar shard writing (the WebDataset format: one tar member per sample field).

Every shard is written as ``<split>-NNNNNN.tar.tmp``, hashed (sha256) while it is written, fsynced and renamed
to ``.tar``; only then is it recorded in ``progress.json`` (written atomically). A partial shard therefore never
looks complete, and ``manifest.json`` is written last by the caller.

The tar members of a sample are encoded by :func:`tar_members` (the workers call it, so the main process only
appends bytes and updates the hash). They are byte-identical to what ``webdataset.TarWriter`` writes (streamed
``tarfile`` PAX headers, fixed mtime/owner/mode, members in sorted field order) and shards rotate as
``webdataset.ShardWriter`` rotates them (``maxcount`` samples or ``maxsize`` payload bytes).

Resume: samples arrive in a deterministic order (sorted inputs, ordered pool results, fixed tar mtime), so the
n-th sample of a split always lands in the same shard. A re-run with the same config fingerprint keeps the
shards listed in ``progress.json`` and drops the samples they already hold instead of rewriting them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lvmmed.data.shards import SPLITS

JOURNAL_NAME = "progress.json"
SHARD_RE = re.compile(r"^(train|val|test)-(\d{6})\.tar(\.tmp)?$")
TAR_MTIME = 946684800.0  # fixed member mtime (2000-01-01) so identical inputs give identical shard bytes
TAR_MODE = 0o444  # as webdataset.TarWriter
TAR_OWNER = "lvmmed"


class ResumeError(RuntimeError):
    """The output directory holds a different conversion (other config) than the one requested."""


@dataclass
class EncodedSample:
    """One sample ready for the tar: members are ``image.npy``/``mask.npy``/``meta.json`` bytes.

    :meth:`pack` (run in the worker) replaces the members by their encoded tar bytes (``tar``) and payload
    size (``nbytes``), so the main process receives each byte once and only appends it.
    """

    key: str
    split: str
    members: dict[str, bytes] = field(default_factory=dict)
    tar: bytes | None = None
    nbytes: int = 0

    def pack(self) -> EncodedSample:
        """Encodes the tar members now (in the calling process) and drops the separate member bytes."""
        if self.tar is None:
            self.tar, self.nbytes = tar_members(self), sum(len(v) for v in self.members.values())
            self.members = {}
        return self


def tar_members(sample: EncodedSample) -> bytes:
    """The tar headers + padded data of a sample's members (what a streamed ``tarfile`` writes for them)."""
    out = bytearray()
    for field_name in sorted(sample.members):
        data = sample.members[field_name]
        info = tarfile.TarInfo(f"{sample.key}.{field_name}")
        info.size, info.mtime, info.mode = len(data), TAR_MTIME, TAR_MODE
        info.uname = info.gname = TAR_OWNER
        out += info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        out += data
        out += tarfile.NUL * (-len(data) % tarfile.BLOCKSIZE)
    return bytes(out)


class _Shard:
    """One open ``.tar.tmp`` shard: appends encoded members, hashes them as they are written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh = open(path, "wb")  # noqa: SIM115 - closed by finish()/abort()
        self.sha = hashlib.sha256()
        self.count = 0
        self.size = 0  # payload bytes, as webdataset.ShardWriter counts them
        self.offset = 0

    def write(self, sample: EncodedSample) -> None:
        sample.pack()
        self.fh.write(sample.tar)
        self.sha.update(sample.tar)
        self.offset += len(sample.tar)
        self.count += 1
        self.size += sample.nbytes

    def finish(self) -> tuple[str, int]:
        """Writes the end-of-archive blocks and record padding, fsyncs; returns ``(sha256, bytes)``."""
        tail = tarfile.NUL * (2 * tarfile.BLOCKSIZE)
        tail += tarfile.NUL * (-(self.offset + len(tail)) % tarfile.RECORDSIZE)
        self.fh.write(tail)
        self.sha.update(tail)
        self.offset += len(tail)
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        return self.sha.hexdigest(), self.offset


def atomic_write_text(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` through a fsynced temp file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_journal(root: Path) -> dict[str, Any] | None:
    """The ``progress.json`` of an interrupted or finished run, or None."""
    file = root / JOURNAL_NAME
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError:
        return None


class ShardSetWriter:
    """Writes samples into per-split shard series under ``root`` atomically and resumably.

    Args:
        root: Output directory (created).
        fingerprint: Hash of the resolved config + inputs; a journal with another fingerprint raises.
        maxcount: Samples per shard.
        maxsize: Soft byte limit per shard.
        overwrite: Discard an existing journal and shards instead of resuming.

    Raises:
        ResumeError: ``root`` holds a run with another fingerprint and ``overwrite`` is False.
    """

    def __init__(
        self, root: Path, fingerprint: str, maxcount: int = 1000, maxsize: float = 256e6, overwrite: bool = False
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.fingerprint = fingerprint
        self.maxcount = maxcount
        self.maxsize = maxsize
        journal = None if overwrite else read_journal(self.root)
        if journal is not None and journal.get("fingerprint") != fingerprint:
            raise ResumeError(
                f"{self.root} holds a conversion with a different config or inputs; pass --overwrite to replace "
                "it or choose another --out directory."
            )
        self.done: list[dict[str, Any]] = list(journal["shards"]) if journal else []
        kept = {s["name"] for s in self.done}
        for file in self.root.iterdir():  # leftovers of an interrupted run: never trusted
            if SHARD_RE.match(file.name) and file.name not in kept:
                file.unlink()
        for name in kept:
            if not (self.root / name).is_file():
                raise ResumeError(f"{self.root / name} is recorded as complete but missing; re-run with --overwrite")
        self.skip = {s: sum(d["count"] for d in self.done if d["split"] == s) for s in SPLITS}
        self.seen = dict.fromkeys(SPLITS, 0)
        self.written = dict.fromkeys(SPLITS, 0)
        self.resumed = sum(self.skip.values())
        self._shards: dict[str, _Shard] = {}
        self._hash: dict[str, tuple[str, int]] = {}
        self._save_journal()

    def write(self, sample: EncodedSample) -> bool:
        """Writes one sample; returns False when a completed shard already holds it (resume)."""
        split = sample.split
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}")
        self.seen[split] += 1
        if self.seen[split] <= self.skip[split]:
            return False
        shard = self._shards.get(split)
        if shard is not None and (shard.count >= self.maxcount or shard.size >= self.maxsize):
            self._close(split)
            shard = None
        if shard is None:
            index = sum(1 for d in self.done if d["split"] == split)
            shard = self._shards[split] = _Shard(self.root / f"{split}-{index:06d}.tar.tmp")
        shard.write(sample)
        self.written[split] += 1
        return True

    def _close(self, split: str) -> None:
        shard = self._shards[split]
        self._hash[str(shard.path)] = shard.finish()
        self._finish(split, str(shard.path))
        del self._shards[split]

    def _finish(self, split: str, fname: str) -> None:
        """Renames a finished ``.tar.tmp`` (hashed while written, fsynced) to ``.tar``, then journals it."""
        tmp = Path(fname)
        sha, size = self._hash.pop(fname)
        count = self._shards[split].count if split in self._shards else 0
        final = tmp.with_name(tmp.name[: -len(".tmp")])
        record = {"name": final.name, "split": split, "count": int(count), "bytes": size, "sha256": sha}
        os.replace(tmp, final)
        _fsync_dir(self.root)
        self.done.append(record)
        self._save_journal()

    def _save_journal(self) -> None:
        text = json.dumps({"fingerprint": self.fingerprint, "shards": self.done}, indent=1)
        atomic_write_text(self.root / JOURNAL_NAME, text)

    def abort(self) -> None:
        """Closes open shard files without completing them (after an error): they stay ``.tar.tmp``."""
        for shard in self._shards.values():
            shard.fh.close()
        self._shards.clear()

    def close(self) -> list[dict[str, Any]]:
        """Finishes the open shards; returns every completed shard record in split, then index order."""
        for split in list(self._shards):
            self._close(split)
        order = {s: i for i, s in enumerate(SPLITS)}
        return sorted(self.done, key=lambda d: (order[d["split"]], d["name"]))
