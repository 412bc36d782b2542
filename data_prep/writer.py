"""Atomic, resumable tar shard writing (the WebDataset format: one tar member per sample field).

Every shard is written as ``<split>-NNNNNN.tar.tmp``, hashed (sha256: while it is written in one process, by
reading it back with a process pool), fsynced and renamed to ``.tar``; only then is it recorded in
``progress.json`` (written atomically). A partial shard therefore never looks complete, and ``manifest.json`` is
written last by the caller. The fsync of a full shard overlaps other work: in one process a finisher thread
fsyncs, renames and journals the full shards in order while the next samples are converted; with a pool the
worker that hashes a shard fsyncs it at the same time (:func:`~data_prep.shard_parts.finish_shard`).

The tar members of a sample are encoded by :func:`~data_prep.tar_format.sample_tar` (in the workers). They are
byte-identical to what ``webdataset.TarWriter`` writes (streamed ``tarfile`` PAX headers, fixed mtime/owner/mode,
members in sorted field order) and shards rotate as ``webdataset.ShardWriter`` rotates them (``maxcount`` samples
or ``maxsize`` payload bytes). In one process a shard is written as its samples arrive (:meth:`ShardSetWriter.write`);
with a process pool the main process only places each sample (:meth:`ShardSetWriter.place`: shard and byte offset),
the worker that made it writes it there, and a worker hashes each full shard (:mod:`data_prep.shard_parts`): the
same bytes either way.

Resume: samples arrive in a deterministic order (sorted inputs, ordered task results, fixed tar mtime), so the
n-th sample of a split always lands in the same shard. A re-run with the same config fingerprint keeps the
shards listed in ``progress.json`` and drops the samples they already hold instead of rewriting them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lvmmed.data.shards import SPLITS

from .tar_format import TAR_MODE, TAR_MTIME, TAR_OWNER, end_of_archive, sample_tar

__all__ = ["TAR_MODE", "TAR_MTIME", "TAR_OWNER", "EncodedSample", "ResumeError", "ShardSetWriter", "tar_members"]

JOURNAL_NAME = "progress.json"
SHARD_RE = re.compile(r"^(train|val|test)-(\d{6})\.tar(\.tmp)?$")


class ResumeError(RuntimeError):
    """The output directory holds a different conversion (other config) than the one requested."""


@dataclass
class EncodedSample:
    """One sample ready for the tar: members are ``image.npy``/``mask.npy``/``meta.json`` bytes.

    :meth:`pack` (run in the worker) replaces the members by their encoded tar bytes (``tar``) and payload
    size (``nbytes``), so the tar bytes are built once, where the sample was made.
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
    return sample_tar(sample.key, sample.members)


class _Shard:
    """One open ``.tar.tmp`` shard written in this process: appends encoded members, hashes them as written."""

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

    def seal(self) -> tuple[str, int]:
        """Writes the end-of-archive blocks and record padding and flushes; returns ``(sha256, bytes)``."""
        tail = end_of_archive(self.offset)
        self.fh.write(tail)
        self.sha.update(tail)
        self.offset += len(tail)
        self.fh.flush()
        return self.sha.hexdigest(), self.offset

    def sync(self) -> None:
        """fsyncs and closes the sealed file (in the writer's finisher thread)."""
        try:
            os.fsync(self.fh.fileno())
        finally:
            self.fh.close()

    def close(self) -> None:
        self.fh.close()


class _PlannedShard:
    """One open shard written by the workers: the main process tracks its size and who still has to write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self.size = 0  # payload bytes
        self.offset = 0  # tar bytes placed so far
        self.waiting: set[int] = set()  # tasks (positions) whose samples here are not written yet

    def close(self) -> None:
        pass


@dataclass
class _Closing:
    """A full shard: hashed and fsynced by a worker once its samples are written, then renamed and journalled."""

    split: str
    shard: _PlannedShard
    handle: Any = None  # AsyncResult of finish_shard, once submitted


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

    Attributes:
        hasher: ``hasher(tmp_path, end) -> AsyncResult`` of :func:`~data_prep.shard_parts.finish_shard`, set by
            the engine when workers write the samples (:meth:`place`).

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
        self.hasher: Callable[[str, int], Any] | None = None
        self._opened = {s: sum(1 for d in self.done if d["split"] == s) for s in SPLITS}
        self._shards: dict[str, _Shard | _PlannedShard] = {}
        self._hash: dict[str, tuple[str, int, int]] = {}
        self._closing: deque[_Closing] = deque()
        self._waited_on: dict[int, list[_PlannedShard]] = {}  # task position -> shards it still has to write
        self._finisher: ThreadPoolExecutor | None = None  # one process: fsync + rename + journal, in closing order
        self._finishing: list[Future] = []
        self._finisher_error: BaseException | None = None  # set by the finisher: later shards stay .tar.tmp
        self._save_journal()

    def _open_shard(self, split: str, planned: bool) -> _Shard | _PlannedShard | None:
        """The shard the next sample of ``split`` goes to (rotating a full one), or None when resume skips it."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}")
        self.seen[split] += 1
        if self.seen[split] <= self.skip[split]:
            return None
        shard = self._shards.get(split)
        if shard is not None and (shard.count >= self.maxcount or shard.size >= self.maxsize):
            self._close(split)
            shard = None
        if shard is None:
            path = self.root / f"{split}-{self._opened[split]:06d}.tar.tmp"
            self._opened[split] += 1
            shard = self._shards[split] = _PlannedShard(path) if planned else _Shard(path)
        self.written[split] += 1
        return shard

    def write(self, sample: EncodedSample) -> bool:
        """Writes one sample; returns False when a completed shard already holds it (resume)."""
        shard = self._open_shard(sample.split, planned=False)
        if shard is None:
            return False
        shard.write(sample)
        return True

    def place(self, split: str, position: int, length: int, nbytes: int) -> tuple[str, int] | None:
        """Places a sample a worker holds (``length`` tar bytes, ``nbytes`` payload) of task ``position``.

        Returns:
            ``(shard .tar.tmp path, byte offset)`` where the worker must write it, or None (resume: kept shard).
        """
        shard = self._open_shard(split, planned=True)
        if shard is None:
            return None
        offset = shard.offset
        shard.offset += length
        shard.count += 1
        shard.size += nbytes
        if position not in shard.waiting:
            shard.waiting.add(position)
            self._waited_on.setdefault(position, []).append(shard)
        return str(shard.path), offset

    def mark_written(self, position: int) -> None:
        """The worker has written every sample of task ``position``: full shards complete by it get hashed."""
        for shard in self._waited_on.pop(position, []):
            shard.waiting.discard(position)
        for closing in self._closing:
            if closing.handle is None and not closing.shard.waiting:
                self._submit(closing)

    def _submit(self, closing: _Closing) -> None:
        if self.hasher is None:
            raise RuntimeError("ShardSetWriter.place needs a hasher (set by the engine)")
        closing.handle = self.hasher(str(closing.shard.path), closing.shard.offset)

    @property
    def hashing(self) -> int:
        """Full shards not finished yet (waiting for their samples or their hash)."""
        return len(self._closing)

    def close_open(self) -> None:
        """Closes every open shard (after the last sample is placed), in the order :meth:`close` closes them."""
        for split in list(self._shards):
            self._close(split)

    def _close(self, split: str) -> None:
        shard = self._shards.pop(split)
        if isinstance(shard, _Shard):
            if self._finisher_error is not None:  # an earlier shard failed to finish: stop the run here
                raise self._finisher_error
            self._hash[str(shard.path)] = (*shard.seal(), shard.count)
            if self._finisher is None:
                self._finisher = ThreadPoolExecutor(1, thread_name_prefix="shard-finisher")
            self._finishing.append(self._finisher.submit(self._sync_and_finish, shard, split))
            return
        closing = _Closing(split, shard)
        self._closing.append(closing)
        if not shard.waiting:
            self._submit(closing)

    def collect(self, block: bool = False) -> None:
        """Finishes the shards the workers have hashed, in closing order (all of them when ``block``: every sample
        must be written by then)."""
        while self._closing and self._closing[0].handle is not None and (block or self._closing[0].handle.ready()):
            closing = self._closing[0]
            sha, size = closing.handle.get()  # re-raises a worker's error (e.g. a full disk); the file is fsynced
            path = str(closing.shard.path)
            self._hash[path] = (sha, size, closing.shard.count)
            self._finish(closing.split, path)
            self._closing.popleft()
        if block and self._closing:
            raise RuntimeError(f"{len(self._closing)} shards still wait for their samples to be written")

    def _sync_and_finish(self, shard: _Shard, split: str) -> None:
        """Finisher thread: fsync, rename, journal; after a failure the later shards stay ``.tar.tmp`` (the journal
        must list a prefix of the shards for resume)."""
        if self._finisher_error is not None:
            shard.close()
            return
        try:
            shard.sync()
            self._finish(split, str(shard.path))
        except BaseException as err:
            self._finisher_error = err
            raise

    def _wait_finisher(self) -> None:
        """Waits for the shards handed to the finisher thread; re-raises the first error (e.g. a failed fsync)."""
        pending, self._finishing = self._finishing, []
        errors = [err for err in (f.exception() for f in pending) if err is not None]
        if self._finisher is not None:
            self._finisher.shutdown()
            self._finisher = None
        if errors:
            raise errors[0]

    def _finish(self, split: str, fname: str) -> None:
        """Renames a finished ``.tar.tmp`` (hashed while written, fsynced) to ``.tar``, then journals it."""
        tmp = Path(fname)
        sha, size, count = self._hash.pop(fname)
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
            shard.close()
        self._shards.clear()
        self._closing.clear()
        with contextlib.suppress(Exception):  # full shards handed over are whole; the error being raised comes first
            self._wait_finisher()

    def close(self) -> list[dict[str, Any]]:
        """Finishes the open shards; returns every completed shard record in split, then index order."""
        for split in list(self._shards):
            self._close(split)
        self.collect(block=True)
        self._wait_finisher()
        order = {s: i for i, s in enumerate(SPLITS)}
        return sorted(self.done, key=lambda d: (order[d["split"]], d["name"]))
