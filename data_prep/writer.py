"""Atomic, resumable shard writing on top of ``webdataset.ShardWriter``.

Every shard is written as ``<split>-NNNNNN.tar.tmp``, fsynced, hashed (sha256) and renamed to ``.tar`` by the
``post`` hook of ``webdataset.ShardWriter``; only then is it recorded in ``progress.json`` (written atomically).
A partial shard therefore never looks complete, and ``manifest.json`` is written last by the caller.

Resume: samples arrive in a deterministic order (sorted inputs, ordered pool results, fixed tar mtime), so the
n-th sample of a split always lands in the same shard. A re-run with the same config fingerprint keeps the
shards listed in ``progress.json`` and drops the samples they already hold instead of rewriting them.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import webdataset as wds

from lvmmed.data.shards import SPLITS, sha256_file

JOURNAL_NAME = "progress.json"
SHARD_RE = re.compile(r"^(train|val|test)-(\d{6})\.tar(\.tmp)?$")
TAR_MTIME = 946684800.0  # fixed member mtime (2000-01-01) so identical inputs give identical shard bytes


class ResumeError(RuntimeError):
    """The output directory holds a different conversion (other config) than the one requested."""


@dataclass
class EncodedSample:
    """One sample ready for the tar: members are ``image.npy``/``mask.npy``/``meta.json`` bytes."""

    key: str
    split: str
    members: dict[str, bytes] = field(default_factory=dict)


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
        self._writers: dict[str, wds.ShardWriter] = {}
        self._save_journal()

    def write(self, sample: EncodedSample) -> bool:
        """Writes one sample; returns False when a completed shard already holds it (resume)."""
        split = sample.split
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}")
        self.seen[split] += 1
        if self.seen[split] <= self.skip[split]:
            return False
        writer = self._writers.get(split)
        if writer is None:
            start = sum(1 for d in self.done if d["split"] == split)
            writer = wds.ShardWriter(
                str(self.root / f"{split}-%06d.tar.tmp"),
                maxcount=self.maxcount,
                maxsize=self.maxsize,
                post=lambda fname, s=split: self._finish(s, fname),
                start_shard=start,
                verbose=0,
                encoder=False,
                mtime=TAR_MTIME,
                user="lvmmed",
                group="lvmmed",
            )
            self._writers[split] = writer
        writer.write({"__key__": sample.key, **sample.members})
        self.written[split] += 1
        return True

    def _finish(self, split: str, fname: str) -> None:
        """``post`` hook: fsync, hash and rename a finished ``.tar.tmp``, then journal it."""
        tmp = Path(fname)
        count = self._writers[split].count if split in self._writers else 0
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        final = tmp.with_name(tmp.name[: -len(".tmp")])
        record = {"name": final.name, "split": split, "count": int(count), "bytes": tmp.stat().st_size}
        record["sha256"] = sha256_file(tmp)
        os.replace(tmp, final)
        _fsync_dir(self.root)
        self.done.append(record)
        self._save_journal()

    def _save_journal(self) -> None:
        text = json.dumps({"fingerprint": self.fingerprint, "shards": self.done}, indent=1)
        atomic_write_text(self.root / JOURNAL_NAME, text)

    def abort(self) -> None:
        """Closes open shard files without completing them (after an error): they stay ``.tar.tmp``."""
        for writer in self._writers.values():
            if writer.tarstream is not None:
                writer.tarstream.close()
                writer.tarstream = None
        self._writers.clear()

    def close(self) -> list[dict[str, Any]]:
        """Finishes the open shards; returns every completed shard record in split, then index order."""
        for writer in list(self._writers.values()):
            writer.close()
        self._writers.clear()
        order = {s: i for i, s in enumerate(SPLITS)}
        return sorted(self.done, key=lambda d: (order[d["split"]], d["name"]))
